/* A guest that never converges: a multiboot (v1) kernel that writes a pass counter into
   one word of every 4 KiB page from 2 MiB to 48 MiB, for ever, so every page is dirty
   again each pass. Built by the tests with binutils alone:
     as --32 -o dirty.o dirty.S && ld -m elf_i386 -T link.ld -o dirty.elf dirty.o
   QEMU boots it with -kernel on -machine pc-q35 (TCG). */
    .set MAGIC, 0x1BADB002
    .set FLAGS, 0x00010000          /* bit 16: the address fields below are valid */
    .section .text
    .globl _start
    .code32
header:
    .long MAGIC
    .long FLAGS
    .long -(MAGIC + FLAGS)
    .long header                   /* header_addr */
    .long header                   /* load_addr */
    .long 0                        /* load_end_addr: the whole file */
    .long 0                        /* bss_end_addr */
    .long _start                   /* entry_addr */
_start:
    cli
    xorl %edx, %edx                /* the pass counter */
1:  movl $0x200000, %edi
2:  movl %edx, (%edi)
    addl $4096, %edi               /* one word a page: every page dirty each pass */
    cmpl $0x3000000, %edi
    jb 2b
    incl %edx
    jmp 1b
