"""The project's busy guest (``tests/qemu/busyguest/busy.S``, linked by ``busy.ld``), built
with binutils for a test: a multiboot kernel that rewrites one word of every page from
2 MiB to ``end`` (48 MiB by default) for ever, so pre-copy over a capped link never
converges."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SOURCE = Path(__file__).parent / "qemu" / "busyguest"
COUNTER = 0x200000
"""The guest's first page: its pass counter."""
REGION = (0x200000, 0x3000000)
"""The pages the default build rewrites: ``[start, end)``."""
PAGE = 4096


def build(out: Path, *, required: bool, end: int = REGION[1]) -> Path:
    """``out/busy-<end>.elf``, rewriting ``[COUNTER, end)``; skips (or fails, if
    ``required``) without ``as`` and ``ld``."""
    if shutil.which("as") is None or shutil.which("ld") is None:
        if required:
            pytest.fail("binutils (as, ld) required to build the busy guest")
        pytest.skip("binutils (as, ld) not installed")
    if end % PAGE or end <= COUNTER:
        raise ValueError(f"end {end:#x}: a page boundary above {COUNTER:#x}")
    obj, elf = out / f"busy-{end:x}.o", out / f"busy-{end:x}.elf"
    subprocess.run(
        ["as", "--32", "--defsym", f"END={end:#x}", "-o", obj, SOURCE / "busy.S"], check=True
    )
    link = ["ld", "-m", "elf_i386", "-T", SOURCE / "busy.ld", "-o", elf, obj]
    subprocess.run(link, check=True)
    return elf


def one_sweep_edge(region: bytes) -> bool:
    """True if a still snapshot of the region holds at most one edge of the sweep: every
    page has the counter of the pass in progress or of the pass before, in address order."""
    words = [int.from_bytes(region[k : k + 4], "little") for k in range(0, len(region), PAGE)]
    return words[0] > 0 and words[0] - words[-1] in (0, 1) and words == sorted(words, reverse=True)
