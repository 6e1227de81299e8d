"""The project's busy guest (``tests/qemu/busy/dirty.S``), built with binutils for a test:
a multiboot kernel that rewrites one word of every page from 2 to 48 MiB for ever."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SOURCE = Path(__file__).parent / "qemu" / "busy"
COUNTER = 0x200000
"""The guest's first page: its pass counter."""
REGION = (0x200000, 0x3000000)
PAGE = 4096


def build(out: Path, *, required: bool) -> Path:
    """``out/dirty.elf``; skips (or fails, if ``required``) without ``as`` and ``ld``."""
    if shutil.which("as") is None or shutil.which("ld") is None:
        if required:
            pytest.fail("binutils (as, ld) required to build the busy guest")
        pytest.skip("binutils (as, ld) not installed")
    subprocess.run(["as", "--32", "-o", out / "dirty.o", SOURCE / "dirty.S"], check=True)
    link = ["ld", "-m", "elf_i386", "-T", SOURCE / "link.ld", "-o", out / "dirty.elf"]
    subprocess.run([*link, out / "dirty.o"], check=True)
    return out / "dirty.elf"


def one_sweep_edge(region: bytes) -> bool:
    """True if a still snapshot of the region holds at most one edge of the sweep: every
    page has the counter of the pass in progress or of the pass before, in address order."""
    words = [int.from_bytes(region[k : k + 4], "little") for k in range(0, len(region), PAGE)]
    return words[0] > 0 and words[0] - words[-1] in (0, 1) and words == sorted(words, reverse=True)
