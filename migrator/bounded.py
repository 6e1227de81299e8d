"""Files migrator reads (host state, limits), read with a bound: a size cap, regular files
only, JSON nested to a bounded depth, every refusal one line (``docs/errors.md``).

A FIFO, a socket or a device (``host.json`` symlinked to ``/dev/zero``, a ``--limits``
file that is a pipe) is refused before a byte is read: it is opened without blocking and
judged by ``fstat``, so no read waits for a writer that never comes nor grows without end.
A read of a regular file is bounded by its size cap; one that hangs on a stalled network
file system is bounded by the timeout of the step or pre-flight check that reads it.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any


class FileRefused(ValueError):
    """A file that is not what migrator reads: not a regular file, too large, not UTF-8,
    not JSON, or JSON nested too deeply. The message names why, without the path."""


def read_bytes(path: Path, *, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` long.

    ``FileNotFoundError`` (and other ``OSError``) as ``open`` raises them; a file that is
    not regular or larger than ``max_bytes`` is a ``FileRefused``.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        mode = os.fstat(fd).st_mode
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise FileRefused(f"not a regular file ({_kind(mode)})")
    with os.fdopen(fd, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileRefused(f"larger than {max_bytes:,} bytes")
    return data


def read_text(path: Path, *, max_bytes: int) -> str:
    """The text of the regular file ``path``, at most ``max_bytes`` long: as
    ``read_bytes``, and a file that is not UTF-8 is a ``FileRefused``."""
    data = read_bytes(path, max_bytes=max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileRefused(f"not UTF-8 text (byte {exc.start})") from None


def loads(text: str) -> Any:
    """``text`` as JSON; else a ``FileRefused`` (JSON nested deeper than the interpreter's
    recursion limit, a thousand levels, included)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise FileRefused("JSON nested too deeply") from None
    except ValueError as exc:
        raise FileRefused(f"not valid JSON: {exc}") from None


def read_json(path: Path, *, max_bytes: int) -> Any:
    """``read_text`` then ``loads``."""
    return loads(read_text(path, max_bytes=max_bytes))


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return name
    return "not a plain file"
