"""Per-host limits on concurrent migrations: how many may leave, and enter, one host at once.

Workers enforce them through the journal (``journal/queue.py``): the claim counts the
migrations in flight per host in the same transaction that takes one (docs/workers.md).
``None`` means no limit. Overrides for single hosts come from the API or a small TOML or
JSON file::

    max_outgoing = 2
    max_incoming = 2

    [hosts."qemu+ssh://big-host/system"]
    max_outgoing = 4
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migrator import bounded
from migrator.errors import UsageError

LIMITS_MAX_BYTES = 1024 * 1024
"""The largest limits file read: a few thousand hosts' overrides fit in far less."""


@dataclass(frozen=True, slots=True)
class HostLimit:
    """One host's limits; None: no limit."""

    max_outgoing: int | None = None
    max_incoming: int | None = None


@dataclass(frozen=True)
class HostLimits:
    """The default limits of every host, and the overrides of some (by journaled URI)."""

    max_outgoing: int | None = None
    max_incoming: int | None = None
    hosts: Mapping[str, HostLimit] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for value in (self.max_outgoing, self.max_incoming):
            _check(value)
        for limit in self.hosts.values():
            _check(limit.max_outgoing)
            _check(limit.max_incoming)

    def outgoing(self, host: str) -> int | None:
        own = self.hosts.get(host)
        if own is not None and own.max_outgoing is not None:
            return own.max_outgoing
        return self.max_outgoing

    def incoming(self, host: str) -> int | None:
        own = self.hosts.get(host)
        if own is not None and own.max_incoming is not None:
            return own.max_incoming
        return self.max_incoming

    def admits(self, src: str, dst: str, out: Mapping[str, int], into: Mapping[str, int]) -> bool:
        """Whether one more migration from ``src`` to ``dst`` fits, with ``out``/``into``
        migrations already leaving/entering each host."""
        most_out, most_in = self.outgoing(src), self.incoming(dst)
        fits_out = most_out is None or out.get(src, 0) < most_out
        return fits_out and (most_in is None or into.get(dst, 0) < most_in)

    def with_defaults(self, *, max_outgoing: int | None, max_incoming: int | None) -> HostLimits:
        """These limits with the defaults replaced where given (command-line options)."""
        return HostLimits(
            max_outgoing=self.max_outgoing if max_outgoing is None else max_outgoing,
            max_incoming=self.max_incoming if max_incoming is None else max_incoming,
            hosts=self.hosts,
        )

    def as_dict(self) -> dict[str, Any]:
        """The limits as ``from_dict`` reads them (what the ``workers`` table keeps)."""
        return {
            "max_outgoing": self.max_outgoing,
            "max_incoming": self.max_incoming,
            "hosts": {
                uri: {"max_outgoing": own.max_outgoing, "max_incoming": own.max_incoming}
                for uri, own in sorted(self.hosts.items())
            },
        }

    def difference(self, other: HostLimits) -> str | None:
        """The first limit that differs from ``other``'s, as ``KEY N, not M``; None if
        every host is limited alike by both."""
        pairs = [
            ("max_outgoing", self.max_outgoing, other.max_outgoing),
            ("max_incoming", self.max_incoming, other.max_incoming),
        ]
        for uri in sorted(set(self.hosts) | set(other.hosts)):
            pairs.append((f"hosts.{uri}.max_outgoing", self.outgoing(uri), other.outgoing(uri)))
            pairs.append((f"hosts.{uri}.max_incoming", self.incoming(uri), other.incoming(uri)))
        for key, mine, theirs in pairs:
            if mine != theirs:
                return f"{_short(key)} {_shown(mine)}, not {_shown(theirs)}"
        return None

    @classmethod
    def load(cls, path: Path) -> HostLimits:
        """Limits from a ``.json`` file, else TOML; UsageError names what is wrong.

        Read with a bound (``migrator.bounded``): a FIFO or a device is refused before a
        byte is read, a file over ``LIMITS_MAX_BYTES`` too."""
        try:
            text = bounded.read_text(path, max_bytes=LIMITS_MAX_BYTES)
            if path.suffix == ".json":
                data = bounded.loads(text)
            else:
                import tomllib  # only here: a migration that reads no limits file skips it

                data = tomllib.loads(text)
            return cls.from_dict(data)
        except OSError as exc:
            raise UsageError(f"limits file {path}: {exc.strerror or exc}") from None
        except RecursionError:
            raise UsageError(f"limits file {path}: nested too deeply") from None
        except (ValueError, UsageError) as exc:
            raise UsageError(f"limits file {path}: {exc}") from None

    @classmethod
    def from_dict(cls, data: object) -> HostLimits:
        """Limits from a parsed file; a ValueError names the first key or value that is
        not one (unknown keys, ``true`` for a number, a host that is not a table)."""
        top = _table(data, "the file")
        hosts = {
            uri: HostLimit(*_limit_values(_table(own, f"hosts.{_short(uri)}"), f"hosts.{uri}."))
            for uri, own in _table(top.get("hosts", {}), "hosts").items()
        }
        return cls(*_limit_values(top, "", also={"hosts"}), hosts)


LIMIT_KEYS = ("max_outgoing", "max_incoming")


def _shown(value: int | None) -> str:
    return "unlimited" if value is None else str(value)


def _table(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a table of keys, not {_short(value)}")
    return value


def _limit_values(
    table: Mapping[str, Any], prefix: str, *, also: frozenset[str] | set[str] = frozenset()
) -> tuple[int | None, int | None]:
    unknown = sorted(set(table) - set(LIMIT_KEYS) - set(also))
    if unknown:
        known = ", ".join([*LIMIT_KEYS, *sorted(also)])
        names = ", ".join(prefix + _short(k) for k in unknown)
        raise ValueError(f"unknown key {names} (known: {known})")
    for key in LIMIT_KEYS:
        value = table.get(key)
        if value is not None and not _whole(value):
            raise ValueError(f"{prefix}{key} must be a whole number >= 1, not {_short(value)}")
    return table.get("max_outgoing"), table.get("max_incoming")


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _short(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check(value: int | None) -> None:
    if value is not None and not _whole(value):
        raise UsageError(f"a host limit must be a whole number >= 1, not {value!r}")


UNLIMITED = HostLimits()
