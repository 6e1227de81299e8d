"""Writing a command's output to stdout, or to a file whole (or not at all)."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from migrator.errors import UsageError


def write_text(lines: Iterator[str], output: str | None) -> None:
    """To stdout, or to ``output`` whole: written to a sibling file, then renamed over it."""
    if output is None:
        out = sys.stdout  # not click.echo: it scans each line for ANSI codes (JSON has none)
        for line in lines:
            out.write(line)
        out.flush()
        return
    _write_atomically(Path(output), lambda f: f.writelines(s.encode() for s in lines))


def write_bytes(data: bytes, output: str | None) -> None:
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    _write_atomically(Path(output), lambda f: f.write(data))


def _write_atomically(path: Path, write: Callable[[Any], object]) -> None:
    if not path.name or path.is_dir():
        raise UsageError(f"-o {str(path)!r}: expected a file name, not a directory")
    if not path.parent.is_dir():
        raise UsageError(f"-o {path}: no such directory {path.parent}")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as exc:
        raise UsageError(
            f"-o {path}: cannot be created in {path.parent} ({exc.strerror})"
        ) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise UsageError(f"-o {path}: cannot be written ({exc.strerror})") from None
        raise
