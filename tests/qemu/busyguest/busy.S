/* The busy guest: a multiboot (v1) kernel that never converges.
 *
 * It writes a pass counter into the first word of every 4 KiB page from 2 MiB to END
 * (48 MiB unless the build says otherwise), then starts the next pass with the counter
 * plus one, for ever: every page is dirtied again on every pass (hundreds of passes a
 * second under TCG), faster than a capped link carries it, so pre-copy never converges.
 * The counter of page 0x200000 is always the current pass; a page behind the sweep holds
 * the pass before it.
 *
 * Built by tests/busyguest.py with binutils alone:
 *     as --32 [--defsym END=0x1200000] -o busy.o busy.S
 *     ld -m elf_i386 -T busy.ld -o busy.elf busy.o
 */
    .set MAGIC, 0x1BADB002
    .set FLAGS, 0x00010000          /* bit 16: the address fields below are valid */
    .set START, 0x200000
    .ifndef END
    .set END, 0x3000000
    .endif
    .set PAGE, 4096

    .section .text
    .globl _start
    .code32
header:                             /* read by QEMU's multiboot loader */
    .long MAGIC
    .long FLAGS
    .long -(MAGIC + FLAGS)
    .long header                    /* header_addr */
    .long header                    /* load_addr */
    .long 0                         /* load_end_addr: the whole file */
    .long 0                         /* bss_end_addr: none */
    .long _start                    /* entry_addr */

_start:
    cli                             /* no interrupt handler: none may come */
    xorl %edx, %edx                 /* the pass counter */
pass:
    movl $START, %edi
page:
    movl %edx, (%edi)
    addl $PAGE, %edi
    cmpl $END, %edi
    jb page
    incl %edx
    jmp pass
