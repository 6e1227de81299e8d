"""Migration flags, with libvirt's numeric values (``virDomainMigrateFlags``)."""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable


class MigrateFlags(enum.IntFlag):
    NONE = 0
    LIVE = 1
    PEER2PEER = 2
    TUNNELLED = 4
    PERSIST_DEST = 8
    UNDEFINE_SOURCE = 16
    PAUSED = 32
    NON_SHARED_DISK = 64
    NON_SHARED_INC = 128
    CHANGE_PROTECTION = 256
    UNSAFE = 512
    OFFLINE = 1024
    COMPRESSED = 2048
    ABORT_ON_ERROR = 4096
    AUTO_CONVERGE = 8192
    RDMA_PIN_ALL = 16384
    POSTCOPY = 32768
    TLS = 65536
    PARALLEL = 131072
    NON_SHARED_SYNCHRONOUS_WRITES = 262144
    POSTCOPY_RESUME = 524288
    ZEROCOPY = 1048576


def flag_names(flags: int) -> list[str]:
    """The names of the set flags, lower-case and hyphenated, in numeric order."""
    return list(_flag_names(int(flags)))


@functools.lru_cache(maxsize=256)
def _flag_names(flags: int) -> tuple[str, ...]:
    """Cached: a journal holds few distinct combinations, and exports name them per row."""
    return tuple(cli_name(f) for f in MigrateFlags if f and f & flags == f)


def cli_name(flag: MigrateFlags) -> str:
    return str(flag.name).lower().replace("_", "-")


def parse_flags(names: Iterable[str]) -> MigrateFlags:
    """Combine flag names (any case, ``-`` or ``_``); raise ValueError naming the valid ones."""
    result = MigrateFlags.NONE
    for name in names:
        key = name.strip().upper().replace("-", "_")
        if key not in MigrateFlags.__members__ or key == "NONE":
            valid = ", ".join(cli_name(f) for f in MigrateFlags if f)
            raise ValueError(f"unknown flag {name!r}; valid flags: {valid}")
        result |= MigrateFlags[key]
    return result
