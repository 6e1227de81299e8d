"""How a test host moves a domain's image: written, streamed (paced, with progress), copied
into place, checked; and the destination's end of a tunnel."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from migrator.errors import DriverError, StepAbandoned
from migrator.records import Progress, StepContext

MIB = 1024 * 1024
CHUNK = 256 * 1024
PROGRESS_EVERY = 0.1
NAP = 0.02

Landing = Callable[[], AbstractContextManager[None]]
"""The destination's admission of a write of an incoming copy (``TestHost.landing``)."""

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def incoming_image(mid: str) -> str:
    """The image path (relative to DIR) a migration's copy arrives at."""
    if not _SAFE_ID.fullmatch(mid):
        raise DriverError(f"migration id {mid!r} cannot name a file on a test host")
    return f"images/incoming-{mid}.img"


def incoming_dir(uri: str, mid: str) -> Path:
    """The destination DIR of a Prepare URI, checked to be for migration ``mid``."""
    parts = urlsplit(uri)
    wanted = parse_qs(parts.query).get("incoming", [""])[0]
    if parts.scheme != "test" or parts.netloc or not parts.path.startswith("/"):
        raise DriverError(f"not a test host migration URI: {uri}")
    if wanted != mid:
        raise DriverError(f"URI {uri} is for migration {wanted!r}, not {mid!r}")
    return Path(parts.path)


def write_image(path: Path, name: str, memory_mib: int) -> str:
    """Write ``memory_mib`` MiB of bytes that depend only on ``name``; return their sha256.

    One MiB of SHAKE output, each copy stamped with its index, is fast at any size and
    still makes every MiB (and every domain) different.
    """
    base = hashlib.shake_256(name.encode()).digest(MIB)
    digest = hashlib.sha256()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        for i in range(memory_mib):
            block = i.to_bytes(8, "big") + base[8:]
            digest.update(block)
            out.write(block)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


def sha256_of(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except FileNotFoundError:
        return None


def partials(image: Path) -> list[Path]:
    """The temporary files of copies on their way to ``image`` (a copy or a tunnel)."""
    try:
        return sorted(image.parent.glob(f".{glob.escape(image.name)}.*"))
    except OSError:
        return []


def _check_stop(ctx: StepContext, done: int, total: int) -> None:
    if ctx.stopped():
        raise StepAbandoned(step=str(ctx.step))
    if ctx.aborted():
        raise DriverError(f"perform aborted after {done} of {total} bytes")
    if ctx.deadline is not None and time.monotonic() > ctx.deadline:
        raise DriverError(f"perform passed its deadline after {done} of {total} bytes")


def _pace(ctx: StepContext, start: float, done: int, total: int, bandwidth: int) -> None:
    """Sleep until ``done`` bytes fit ``bandwidth`` MiB/s, still heeding abort and deadline."""
    if bandwidth <= 0:
        return
    due = start + done / (bandwidth * MIB)
    while (left := due - time.monotonic()) > 0:
        _check_stop(ctx, done, total)
        time.sleep(min(NAP, left))


def stream_file(ctx: StepContext, src: Path, write: Callable[[bytes], Any], bandwidth: int) -> int:
    """Send ``src`` through ``write`` in chunks, paced, reporting progress; return bytes."""
    total = src.stat().st_size
    done, start, reported = 0, time.monotonic(), time.monotonic()
    with open(src, "rb") as fin:
        while chunk := fin.read(CHUNK):
            _check_stop(ctx, done, total)
            write(chunk)
            done += len(chunk)
            _pace(ctx, start, done, total, bandwidth)
            if time.monotonic() - reported >= PROGRESS_EVERY:
                reported = time.monotonic()
                ctx.progress(Progress(total, done, total - done, passes=1))
        _check_stop(ctx, done, total)
    ctx.progress(Progress(total, done, 0, passes=1))
    return done


def incoming_path(uri: str, mid: str) -> Path:
    """Where a Prepare URI says migration ``mid``'s image goes; it must be expected there."""
    final = incoming_dir(uri, mid) / incoming_image(mid)
    if not final.exists():
        raise DriverError(f"{uri} is not expecting migration {mid}: no incoming image")
    return final


def copy_to(
    ctx: StepContext,
    source: Path,
    final: Path,
    bandwidth: int,
    landing: Landing,
    sidecar: dict[str, Any] | None = None,
) -> int:
    """Send ``source`` to a temporary file beside ``final``, then put it in place (with the
    sender's ``sidecar`` JSON first, for v1); nothing is left behind on failure.

    The temporary file is created, and put in place, only inside ``landing()``: the
    destination's lock, held while it admits the call (its fence, the incoming domain still
    waiting for this migration). A copy that went on after another coordinator took the
    migration over thus never lands, and a cancel that removed its file is final.
    """
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with landing():
            out = open(tmp, "wb")  # noqa: SIM115 -- closed just below
        with out:
            sent = stream_file(ctx, source, out.write, bandwidth)
            out.flush()
            os.fsync(out.fileno())
        with landing():
            if sidecar is not None:
                final.with_suffix(".json").write_text(json.dumps(sidecar))
            os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return sent


def perform_stats(start: float, sent: int, io_errors: int) -> dict[str, Any]:
    stats: dict[str, Any] = {"bytes": sent, "seconds": round(time.monotonic() - start, 3)}
    if io_errors:
        stats["io_errors"] = io_errors
    return stats


class FileSink:
    """The destination's end of a tunnel: a temporary file that ``close`` puts in place,
    each inside ``landing()``, as ``copy_to`` does."""

    def __init__(self, final: Path, landing: Landing) -> None:
        self.final = final
        self.landing = landing
        self.tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tunnel")
        self.file: Any = None

    def _open(self) -> Any:
        with self.landing():
            return open(self.tmp, "wb")  # closed by close or abort

    def write(self, data: bytes) -> None:
        if self.file is None:
            self.file = self._open()
        self.file.write(data)

    def close(self) -> None:
        if self.file is None:
            self.file = self._open()  # an empty domain image
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        with self.landing():
            os.replace(self.tmp, self.final)

    def abort(self) -> None:
        if self.file is not None:
            self.file.close()
        self.tmp.unlink(missing_ok=True)
