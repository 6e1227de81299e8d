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

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migrator.errors import UsageError


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

    @classmethod
    def load(cls, path: Path) -> HostLimits:
        """Limits from a ``.json`` file, else TOML; UsageError names what is wrong."""
        try:
            text = path.read_text()
            data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
            return cls.from_dict(data)
        except (OSError, ValueError, TypeError, UsageError) as exc:
            raise UsageError(f"limits file {path}: {exc}") from None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HostLimits:
        unknown = set(data) - {"max_outgoing", "max_incoming", "hosts"}
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)}")
        hosts = {
            str(uri): HostLimit(own.get("max_outgoing"), own.get("max_incoming"))
            for uri, own in dict(data.get("hosts", {})).items()
        }
        return cls(data.get("max_outgoing"), data.get("max_incoming"), hosts)


def _check(value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or value < 1):
        raise UsageError(f"a host limit must be a whole number >= 1, not {value!r}")


UNLIMITED = HostLimits()
