"""A QMP host's constants, a domain's configuration, and the checks of names and URIs."""

from __future__ import annotations

import json
import os
import re
import shutil
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from migrator.drivers import payload
from migrator.drivers.api import (
    DomainState,
)
from migrator.drivers.uri import QMP_SCHEME, is_legacy_qmp
from migrator.errors import DriverError, InvalidURI

QEMU_ENV = "MIGRATOR_QEMU"
"""Path of the QEMU binary; default: ``qemu-system-x86_64`` found on PATH."""
QEMU_BINARY = "qemu-system-x86_64"
MACHINE = "pc-q35-7.2"
MIB = 1024 * 1024
DEFAULT_MEMORY_MIB = 128
DEFAULT_DOWNTIME_MS = 300
UNLIMITED_BANDWIDTH = 1 << 40
"""Bytes/s sent as ``max-bandwidth`` for "no cap" (QEMU's own default is 128 MiB/s)."""
START_TIMEOUT = 20.0
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 5.0
SETTLE_TIMEOUT = 30.0
POLL = 0.05

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SAFE_MACHINE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_STATUS: dict[str, DomainState] = {
    "running": DomainState.RUNNING,
    "inmigrate": DomainState.INCOMING,
    "shutdown": DomainState.SHUTOFF,
}
"""QEMU run states that are not "the guest is stopped" (which all map to PAUSED)."""


def map_status(status: str) -> DomainState:
    """A QEMU run state as a DomainState: stopped guests of every kind are ``paused``."""
    return _STATUS.get(status, DomainState.PAUSED)


def qemu_binary() -> str:
    """The QEMU to run; DriverError with what to install if there is none."""
    configured = os.environ.get(QEMU_ENV)
    found = shutil.which(configured or QEMU_BINARY)
    if found is None:
        what = f"{QEMU_ENV}={configured}" if configured else f"{QEMU_BINARY} on PATH"
        raise DriverError(
            f"QEMU not found ({what}); install it: apt-get install --no-install-recommends"
            " qemu-system-x86"
        )
    return found


def parse_dir(uri: str) -> Path:
    """DIR of ``qmp:///ABS/DIR`` (or of a legacy ``qemu:///ABS/DIR``, as journals keep it)."""
    parts = urlsplit(uri)
    if is_legacy_qmp(parts):
        return Path(parts.path)
    if parts.scheme != QMP_SCHEME or parts.netloc or not parts.path.startswith("/"):
        raise InvalidURI(
            uri=uri, reason=f"qmp host path must be absolute: qmp:///ABS/DIR, not {uri}"
        )
    if parts.query or parts.fragment:
        raise InvalidURI(uri=uri, reason="a qmp host URI takes no query or fragment")
    return Path(parts.path)


def check_name(name: str) -> str:
    """``name`` if it can name a domain's files and QEMU's ``-name``; ValueError if not."""
    if not _SAFE_NAME.fullmatch(name):
        raise ValueError(
            f"bad domain name {name!r}: use 1-64 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return name


# -- configuration --------------------------------------------------------------------------


KERNEL_MAX = 1024 * 1024
"""The largest guest kernel of one's own a QMP domain boots instead of the payload."""


def check_kernel(path: str) -> str:
    """``path`` if it names a regular file of at most ``KERNEL_MAX`` bytes, absolute."""
    found = Path(path)
    if not found.is_absolute() or not found.is_file() or found.stat().st_size > KERNEL_MAX:
        raise ValueError(f"kernel must be an absolute path to a file of at most 1 MiB: {path!r}")
    return str(found)


def new_config(
    name: str, memory_mib: int, touch_mib: int | None, busy: bool, kernel: str | None = None
) -> dict[str, Any]:
    """A domain's configuration; ValueError says what is wrong with the numbers. A
    ``kernel`` (a multiboot image of one's own, such as a busy guest built for a test) is
    booted instead of the payload; its memory is then the kernel's to write."""
    if memory_mib < 16 or memory_mib > 64 * 1024:
        raise ValueError(f"memory must be between 16 and 65536 MiB, not {memory_mib}")
    limit = memory_mib - payload.REGION_START // MIB - payload.HEADROOM_MIB
    touch = min(memory_mib * 3 // 4, limit) if touch_mib is None else touch_mib
    payload.check_fits(memory_mib, touch)
    return {
        "memory_mib": memory_mib,
        "smp": 1,
        "machine": MACHINE,
        "touch_mib": touch,
        "busy": busy,
        "seed": zlib.crc32(name.encode()) | 1,
        "downtime_limit_ms": DEFAULT_DOWNTIME_MS,
        **({"kernel": check_kernel(kernel)} if kernel is not None else {}),
    }


def config_from_description(text: str) -> dict[str, Any]:
    """The configuration a Begin described, checked field by field (it came from a peer)."""
    try:
        desc = json.loads(text)
        config = desc["config"]
        checked: dict[str, Any] = {
            "memory_mib": int(config["memory_mib"]),
            "smp": int(config["smp"]),
            "machine": str(config["machine"]),
            "touch_mib": int(config["touch_mib"]),
            "busy": bool(config["busy"]),
            "seed": int(config["seed"]) & 0xFFFFFFFF,
            "downtime_limit_ms": int(config["downtime_limit_ms"]),
        }
        if config.get("kernel") is not None:
            checked["kernel"] = check_kernel(str(config["kernel"]))
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise DriverError(f"prepare got a description that is not a qemu domain: {exc}") from None
    if not _SAFE_MACHINE.fullmatch(checked["machine"]) or not 1 <= checked["smp"] <= 64:
        raise DriverError("prepare got a description with a bad machine type or CPU count")
    try:
        payload.check_fits(checked["memory_mib"], checked["touch_mib"])
    except ValueError as exc:
        raise DriverError(f"prepare got a bad description: {exc}") from None
    return checked


def pattern_of(config: dict[str, Any]) -> payload.Pattern:
    return payload.Pattern(
        touch_mib=int(config["touch_mib"]), seed=int(config["seed"]), busy=bool(config["busy"])
    )
