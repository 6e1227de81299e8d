"""A tiny multiboot guest that gives a QEMU domain real, checkable memory.

QEMU's ``-kernel`` loads a multiboot v1 image (the "a.out kludge": flags bit 16, so no ELF
is needed) and enters it in 32-bit protected mode with paging off. The image is a few dozen
bytes of hand-assembled code that writes one dword into every 4 KiB page of the region
``[REGION_START, REGION_START + touch_mib MiB)``: the page's address XOR ``seed``. It then
sets a done marker inside its own image and halts (an idle guest) or, when ``busy``, sweeps
the region again and again with the value XOR a sweep counter, so every touched page is
dirtied continuously (a guest that may not converge).

Every page the guest touches is non-zero, so QEMU migrates it in full: a ``touch_mib`` MiB
region puts ``touch_mib`` MiB on the wire. Nothing here runs code from anywhere else: the
bytes are generated from the pattern (size, seed, busy).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MIB = 1024 * 1024
PAGE = 4096
LOAD_ADDR = 0x100000
"""Where QEMU loads the image (1 MiB), and so where its code and done marker live."""
REGION_START = 0x200000
"""The first page the guest writes (2 MiB): clear of the image, the BIOS and low memory."""
HEADROOM_MIB = 8
"""RAM left untouched at the top, where SeaBIOS keeps its tables."""
DONE_MAGIC = 0x600DF111
IMAGE_SIZE = 1024
"""The image is padded with zeros: QEMU reads the first 8 KiB looking for a Linux header."""

_MB_MAGIC = 0x1BADB002
_MB_FLAGS = 0x00010000  # bit 16: the load addresses in the header are valid
_HEADER_SIZE = 32
_ENTRY = LOAD_ADDR + _HEADER_SIZE


@dataclass(frozen=True, slots=True)
class Pattern:
    """What the guest writes: ``touch_mib`` MiB from ``REGION_START``, one dword a page."""

    touch_mib: int
    seed: int
    busy: bool = False

    @property
    def start(self) -> int:
        return REGION_START

    @property
    def end(self) -> int:
        return REGION_START + self.touch_mib * MIB

    @property
    def size(self) -> int:
        return self.end - self.start

    def value(self, address: int, sweep: int = 0) -> int:
        """The dword at the start of page ``address`` after sweep ``sweep`` (0 for idle)."""
        return (address ^ self.seed ^ sweep) & 0xFFFFFFFF


def check_fits(memory_mib: int, touch_mib: int) -> None:
    """Raise ValueError unless a ``touch_mib`` region fits a guest of ``memory_mib`` MiB."""
    limit = memory_mib - REGION_START // MIB - HEADROOM_MIB
    if touch_mib < 0 or touch_mib > limit:
        raise ValueError(
            f"touched memory must be between 0 and {max(limit, 0)} MiB"
            f" for a {memory_mib} MiB guest, not {touch_mib}"
        )


class _Code:
    """Just enough of an x86 assembler: bytes, and rel8 jumps back to labels."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.labels: dict[str, int] = {}

    def emit(self, *parts: bytes | int) -> None:
        for part in parts:
            self.out += part if isinstance(part, bytes) else bytes([part])

    def label(self, name: str) -> None:
        self.labels[name] = len(self.out)

    def jump(self, opcode: int, target: str) -> None:
        rel = self.labels[target] - (len(self.out) + 2)
        if not -128 <= rel <= 127:
            raise ValueError(f"jump to {target} out of rel8 range")
        self.emit(opcode, struct.pack("<b", rel))


def _u32(value: int) -> bytes:
    return struct.pack("<I", value & 0xFFFFFFFF)


def _code(pattern: Pattern, marker: int) -> bytes:
    c = _Code()
    c.emit(0xFA)  # cli: no interrupt ever wakes the halted guest
    c.emit(0xBA, _u32(pattern.seed))  # mov edx, seed
    c.label("sweep")
    c.emit(0xBF, _u32(pattern.start))  # mov edi, start
    if pattern.touch_mib:
        c.label("page")
        c.emit(0x89, 0xF8)  # mov eax, edi
        c.emit(0x31, 0xD0)  # xor eax, edx
        c.emit(0x89, 0x07)  # mov [edi], eax
        c.emit(0x81, 0xC7, _u32(PAGE))  # add edi, 4096
        c.emit(0x81, 0xFF, _u32(pattern.end))  # cmp edi, end
        c.jump(0x72, "page")  # jb page
    c.emit(0xC7, 0x05, _u32(marker), _u32(DONE_MAGIC))  # mov dword [marker], DONE_MAGIC
    if pattern.busy:
        c.emit(0x42)  # inc edx: the next sweep writes other values
        c.jump(0xEB, "sweep")  # jmp sweep
    c.label("halt")
    c.emit(0xF4)  # hlt
    c.jump(0xEB, "halt")
    return bytes(c.out)


def marker_address() -> int:
    """The guest-physical address of the done marker (a dword after the code)."""
    return LOAD_ADDR + IMAGE_SIZE - 4


def image(pattern: Pattern) -> bytes:
    """The multiboot image for ``pattern``: header, code, zero padding, the marker dword."""
    header = struct.pack(
        "<8I",
        _MB_MAGIC,
        _MB_FLAGS,
        (-(_MB_MAGIC + _MB_FLAGS)) & 0xFFFFFFFF,
        LOAD_ADDR,  # header_addr: the header is the first thing loaded
        LOAD_ADDR,  # load_addr
        0,  # load_end_addr: the whole file
        0,  # bss_end_addr: none
        _ENTRY,
    )
    body = header + _code(pattern, marker_address())
    if len(body) > IMAGE_SIZE - 4:
        raise ValueError("payload code does not fit its image")
    return body.ljust(IMAGE_SIZE, b"\x00")


def check_region(data: bytes, pattern: Pattern) -> int:
    """Count the pages of ``data`` (the region, as read from an idle guest) that are wrong.

    A page is right when its first dword is ``pattern.value(address)`` and the rest is zero.
    """
    wrong = 0
    zeros = bytes(PAGE - 4)
    for offset in range(0, len(data), PAGE):
        address = pattern.start + offset
        (first,) = struct.unpack_from("<I", data, offset)
        rest = data[offset + 4 : offset + PAGE]
        if first != pattern.value(address) or rest != zeros:
            wrong += 1
    return wrong
