"""Hosts that moved: ``recover --host-map OLD=NEW`` (docs/recovery.md).

A migration's hosts are journaled as the URIs it was started with (passwords as ``***``);
when a host was re-addressed after the crash, or the tunnel it was reached through is
gone, recovery reaches it at NEW instead. Before anything is claimed each map is checked:
OLD must be a host of a migration to recover, and the host at NEW must be the one the
journal met, when the driver can tell: a driver that names its host (``Identified``, as
libvirt's does with the host UUID of its capabilities) is asked, and its answer compared
with the identity a step's journaled cookie gives (Begin's for a source, Prepare's for a
destination). Another host there refuses the whole map, nothing claimed or called.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from migrator.drivers.api import Driver
from migrator.drivers.uri import redact_uri
from migrator.engine.flows.base import RECOVERABLE
from migrator.errors import MigratorError, UsageError
from migrator.journal.store import Journal
from migrator.records import Event, EventKind, Migration
from migrator.states import Step

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_IDENTIFYING = {"src": (Step.BEGIN, Step.DUMP_XML), "dst": (Step.PREPARE, Step.PREPARE_TUNNEL)}
"""The steps whose output cookie the host of that role made (and named itself in)."""


@runtime_checkable
class Identified(Protocol):
    """A driver that can say which host it reaches, now and in a cookie it made."""

    def host_uuid(self) -> str | None: ...

    def cookie_host_uuid(self, cookie: bytes) -> str | None: ...


def parse(items: Iterable[str], journaled: Iterable[str]) -> dict[str, str]:
    """``OLD=NEW`` items as {journaled OLD: NEW}. A URI holds ``=`` of its own, so the
    split is at an ``=`` followed by a scheme, preferring one whose left side is a
    journaled host; UsageError for an item that is no map or names no journaled host."""
    known = set(journaled)
    mapped: dict[str, str] = {}
    for item in items:
        cuts = [m.start() for m in re.finditer("=", item) if _SCHEME.match(item, m.start() + 1)]
        if not cuts:
            raise UsageError(f"--host-map {redact_uri(item)!r}: give OLD=NEW, two host URIs")
        old, new = next(
            ((item[:i], item[i + 1 :]) for i in cuts if redact_uri(item[:i]) in known),
            (item[: cuts[0]], item[cuts[0] + 1 :]),
        )
        shown = redact_uri(old)
        if shown not in known:
            raise UsageError(
                f"--host-map: no migration to recover was journaled with host {shown}"
                " (give the URI as `migrator show` prints it)"
            )
        if shown in mapped and mapped[shown] != new:
            raise UsageError(f"--host-map: host {shown} is mapped twice")
        mapped[shown] = new
    return mapped


def recorded_identity(driver: Identified, role: str, history: Sequence[Event]) -> str | None:
    """The identity of the ``role`` host as its journaled cookie gives it, if any."""
    for event in history:
        if event.kind == EventKind.OK and event.step in _IDENTIFYING[role] and event.cookie_out:
            return driver.cookie_host_uuid(event.cookie_out)
    return None


def check(
    host_map: Mapping[str, str],
    orphans: Iterable[tuple[Migration, Sequence[Event]]],
    connect: Callable[[str], Driver],
) -> None:
    """UsageError if the host at a NEW URI is not the one the journal met at OLD."""
    for old, new in host_map.items():
        driver = connect(new)
        try:
            _check_one(old, new, driver, orphans)
        finally:
            driver.close()


def _check_one(
    old: str, new: str, driver: Driver, orphans: Iterable[tuple[Migration, Sequence[Event]]]
) -> None:
    if not isinstance(driver, Identified):
        return  # this driver cannot name its host: the map is taken on the operator's word
    for migration, history in orphans:
        for role, journaled in (("src", migration.src), ("dst", migration.dst)):
            if journaled != old:
                continue
            expected = recorded_identity(driver, role, history)
            if expected is None:
                continue
            try:
                actual = driver.host_uuid()
            except MigratorError as exc:
                why = f"--host-map: cannot ask {redact_uri(new)} which host it is: {exc}"
                raise UsageError(why) from None
            if actual != expected:
                raise UsageError(
                    f"--host-map: {redact_uri(new)} is host {actual}, not host {expected},"
                    f" which migration {migration.id[:8]} met at {old}; refusing the map"
                )
            return


def pending(journal: Journal) -> list[tuple[Migration, list[Event]]]:
    """The migrations to recover, with their events (read once, for the maps' checks)."""
    migrations = list(journal.stream(states=RECOVERABLE))
    histories = journal.histories([m.id for m in migrations])
    return [(m, histories[m.id]) for m in migrations]


def hosts_of(migrations: Iterable[tuple[Migration, Sequence[Event]]]) -> set[str]:
    return {uri for m, _ in migrations for uri in (m.src, m.dst)}


def prepared(
    host_map: Mapping[str, str],
    found: Sequence[tuple[Migration, Sequence[Event]]],
    connect: Callable[[str], Driver] | None,
) -> dict[str, str]:
    """``host_map`` keyed by the journaled form of OLD, each OLD a host of ``found`` and,
    unless ``connect`` is None (a dry run calls nothing), each NEW host checked."""
    known = hosts_of(found)
    mapped = {redact_uri(old): new for old, new in host_map.items()}
    for old in mapped:
        if old not in known:
            raise UsageError(f"--host-map: no migration to recover was journaled with host {old}")
    if connect is not None:
        check(mapped, found, connect)
    return mapped


def noted(host_map: Mapping[str, str], migration: Migration) -> dict[str, str]:
    """The maps that apply to ``migration``, by role, for its recovery event."""
    return {
        role: f"{uri} -> {redact_uri(host_map[uri])}"
        for role, uri in (("src", migration.src), ("dst", migration.dst))
        if uri in host_map
    }


def connecting(
    connect: Callable[[str], Driver], host_map: Mapping[str, str]
) -> Callable[[str], Driver]:
    """``connect`` that reaches each mapped host at its new URI."""
    if not host_map:
        return connect
    return lambda uri: connect(host_map.get(uri, uri))
