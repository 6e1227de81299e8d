"""The orphans ``recover`` brings to an end, read as a stream (docs/recovery.md).

The unfinished migrations are read in keyset pages; then a chunk at a time, their events
are read in one query, each one's plan is made, and the ones that may be claimed are
claimed in one statement and one commit (``Journal.claim_all``: a compare-and-set on the
fence each was read with, so one that another coordinator claimed meanwhile is left out
and never acted on). Per orphan there is then no read and no claim left, only its plan
carried out. A journal that fails on a chunk stops the claims: the rest is not attempted.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from migrator.engine.flows import flow_for
from migrator.engine.flows.base import RECOVERABLE, Plan
from migrator.engine.ownership import claimable
from migrator.errors import JournalUnavailable, MigratorError
from migrator.journal.store import Journal
from migrator.records import Event, Migration
from migrator.states import State

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Recovered:
    """What ``recover`` did (or, with ``dry_run``, would do) with one migration."""

    id: str
    state: State
    plan: Plan
    claimed: bool = False
    claimed_because: str | None = None
    result: State | None = None
    reason: str | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Orphan:
    """An unfinished migration as read, with its events, its plan and its claim."""

    migration: Migration
    history: list[Event]
    plan: Plan
    because: str | None
    """Why it may be claimed, or None if it may not (its owner is alive)."""
    claimed: Migration | None = None
    """The migration as claimed by this coordinator (its new fence), if it was."""
    failed: JournalUnavailable | None = None
    """The journal failed when this orphan's chunk was read or claimed."""

    @property
    def report(self) -> Recovered:
        """The report of the orphan before anything is done with it."""
        m = self.migration
        return Recovered(m.id, m.state, self.plan, claimed_because=self.because)


def planned(
    migration: Migration, history: list[Event], *, steal: bool, by_lease_only: bool = False
) -> Orphan:
    plan = flow_for(migration.protocol).plan(migration, history)
    because = claimable(migration, steal=steal, by_lease_only=by_lease_only)
    return Orphan(migration, history, plan, because)


def found(
    journal: Journal,
    owner: str,
    stopped: list[JournalUnavailable],
    *,
    chunk: int,
    steal: bool,
    claim: bool,
    claimable_only: bool = False,
    by_lease_only: bool = False,
) -> Iterator[Orphan]:
    """Every unfinished migration, newest first, claimed by ``owner`` a chunk at a time
    (if ``claim``) as the stream reaches it; the first in a chunk of its own.
    ``claimable_only`` (a worker's takeover) leaves out, unread, those whose owner is
    alive: no events are read for them. ``by_lease_only``: an owner counts as gone only once
    its lease lapsed (``ownership.py``). Once
    ``stopped`` holds the journal's failure (here or from a thread driving an orphan)
    nothing more is read or claimed: the first orphan of a chunk that failed carries the
    failure, the others are given as read."""
    stream = journal.stream(states=RECOVERABLE)
    if claimable_only:
        stream = (
            m for m in stream if claimable(m, steal=steal, by_lease_only=by_lease_only) is not None
        )
    sizes = itertools.chain([1], itertools.repeat(chunk))  # the first alone: acted on at once
    while batch := list(itertools.islice(stream, next(sizes))):
        if stopped:
            yield from (Orphan(m, [], unplanned(m), None) for m in batch)
            continue
        try:
            yield from _chunk(
                journal, owner, batch, steal=steal, claim=claim, by_lease_only=by_lease_only
            )
        except JournalUnavailable as exc:
            stopped.append(exc)
            first, *rest = batch
            yield Orphan(first, [], unplanned(first), None, failed=exc)
            yield from (Orphan(m, [], unplanned(m), None) for m in rest)


def _chunk(
    journal: Journal,
    owner: str,
    batch: list[Migration],
    *,
    steal: bool,
    claim: bool,
    by_lease_only: bool,
) -> list[Orphan]:
    """The orphans of ``batch`` with their events and plans, claimed if ``claim``."""
    histories = journal.histories([m.id for m in batch])
    orphans = [planned(m, histories[m.id], steal=steal, by_lease_only=by_lease_only) for m in batch]
    if not claim:
        return orphans
    claimed = journal.claim_all([o.migration for o in orphans if o.because], owner)
    return [dataclasses.replace(o, claimed=claimed.get(o.migration.id)) for o in orphans]


def unplanned(migration: Migration) -> Plan:
    """The plan shown for a migration whose events were not read."""
    return flow_for(migration.protocol).plan(migration, [])


def report_untouched(migration: Migration, note: str) -> Recovered:
    return Recovered(migration.id, migration.state, unplanned(migration), note=note)


def report_stopped(journal: Journal, migration: Migration, exc: MigratorError) -> Recovered:
    """The report of a migration whose recovery stopped on ``exc``."""
    try:
        state = journal.get(migration.id).state
    except MigratorError:
        state = migration.state
    note = f"recovery stopped: {exc}"
    plan = unplanned(migration)
    return Recovered(migration.id, migration.state, plan, True, None, state, None, note)


def lease_left(migration: Migration) -> float:
    """Seconds until ``migration``'s lease lapses, as this coordinator last wrote it."""
    expires = migration.lease_expires_at
    return 0.0 if expires is None else (expires - datetime.now(UTC)).total_seconds()


def in_order(
    pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Iterator[T], *, window: int
) -> Iterator[R]:
    """``fn`` of each item on ``pool``, results in the items' order, at most ``window``
    items read ahead (``Executor.map`` would read every item first)."""
    pending: collections.deque[Future[R]] = collections.deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def recovery_detail(orphan: Orphan, moved: dict[str, str]) -> dict[str, object]:
    """What a recovery event says of the plan carried out for ``orphan`` (and the host
    maps that apply to it, ``moved``)."""
    migration, plan = orphan.migration, orphan.plan
    detail: dict[str, object] = {
        "from_state": str(migration.state),
        "action": str(plan.action),
        "plan": plan.text,
        "previous_owner": migration.owner,
        "because": orphan.because,
    }
    if moved:
        detail["host_map"] = moved
    return detail
