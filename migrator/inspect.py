"""Read-only post-mortem views of the journal, as plain JSON-able data.

The CLI renders these; ``--json`` prints them as they are. Cookies are base64, driver
text is kept as data (JSON escapes it); nothing here prints. ``prune`` is the one
function that deletes, and only terminal migrations.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from migrator.jsonform import event_dict as event_dict
from migrator.jsonform import iso
from migrator.jsonform import migration_dict as migration_dict
from migrator.records import OUTCOMES, Event, EventKind, Migration, Request
from migrator.states import TERMINAL, State

if TYPE_CHECKING:
    from migrator.journal.reading import Reads
    from migrator.journal.store import Journal

EXPORT_FORMAT = 1
"""The version of the ``export`` document (``docs/export.schema.json``)."""
TOP_REASONS = 5


def migration_stats(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Per step: calls, errors and the time spent in the driver; the transfer statistics.

    ``events`` in their JSON form (``event_dict``, ``Journal.exports``)."""
    steps: dict[str, dict[str, Any]] = {}
    for e in events:
        if e["step"] is None or e["kind"] not in OUTCOMES:
            continue
        row = steps.setdefault(e["step"], {"calls": 0, "errors": 0, "seconds": 0.0})
        row["calls"] += 1
        row["errors"] += e["kind"] == EventKind.ERROR
        row["seconds"] += e["duration"] or 0.0
    transfer = next(  # Perform's statistics, whatever the protocol (perform, perform2...)
        (e["detail"] for e in events if e["step"] is not None and e["step"].startswith("perform")
         and e["kind"] == EventKind.OK and e["detail"]),
        None,
    )  # fmt: skip
    return {
        "events": len(events),
        "recoveries": sum(1 for e in events if e["kind"] == EventKind.RECOVERY and _claimed(e)),
        "steps": steps,
        "transfer": transfer,
    }


def _claimed(e: dict[str, Any]) -> bool:
    return bool(e["detail"] and "from_state" in e["detail"])


def show(journal: Reads, migration_id: str) -> dict[str, Any]:
    """Everything the journal holds about one migration (id or unique id prefix)."""
    migration = journal.find(migration_id)
    history = journal.history(migration.id)
    events = [event_dict(e) for e in history]
    return {
        **migration_dict(migration),
        "owners": owners(history),
        "policy": journal.policy(migration.id),
        "requests": [request_dict(r) for r in journal.requests(migration.id)],
        "events": events,
        "stats": migration_stats(events),
    }


def request_dict(request: Request) -> dict[str, Any]:
    """A runtime request in its JSON form (``show --json``, ``set-downtime --json``)."""
    return {
        "id": request.id,
        "migration_id": request.migration_id,
        "kind": str(request.kind),
        "value": request.value,
        "requested_at": iso(request.requested_at),
        "applied_at": iso(request.applied_at),
        "outcome": request.outcome,
    }


def owners(history: Sequence[Event]) -> list[dict[str, Any]]:
    """Every coordinator that drove the migration, in order, and the event (seq, time) at
    which it took it: from the events' ``coordinator`` column (docs/workers.md)."""
    found: list[dict[str, Any]] = []
    for event in history:
        if event.coordinator and (not found or found[-1]["owner"] != event.coordinator):
            found.append({"owner": event.coordinator, "seq": event.seq, "at": iso(event.at)})
    return found


# -- export ------------------------------------------------------------------------------------


def export_dict(migration: Migration, events: list[dict[str, Any]]) -> dict[str, Any]:
    """Every column of the migration and of each of its events, these in their JSON form
    (``docs/export.schema.json``)."""
    summary = migration_dict(migration)
    summary.update(
        lease_expires_at=iso(migration.lease_expires_at),
        last_seq=migration.last_seq,
        abort_requested=migration.abort_requested,
    )
    return {
        "format": EXPORT_FORMAT,
        "exported_at": datetime.now(UTC).isoformat(),
        "migration": summary,
        "events": events,
        "stats": migration_stats(events),
    }


def export(journal: Reads, migration_id: str) -> dict[str, Any]:
    migration = journal.find(migration_id)
    return export_dict(migration, [event_dict(e) for e in journal.history(migration.id)])


def export_all(
    journal: Reads, *, states: Iterable[State] = (), since: datetime | None = None
) -> Iterator[dict[str, Any]]:
    """One export document per migration, newest first (for JSON Lines), streamed."""
    for migration, events in journal.exports(states=states, since=since):
        yield export_dict(migration, events)


# -- stats ---------------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of sorted ``values`` (not empty)."""
    rank = max(1, math.ceil(fraction * len(values)))
    return values[rank - 1]


def _step_summary(journal: Reads, since: datetime | None) -> dict[str, dict[str, Any]]:
    return {
        step: {"count": s.count, "errors": s.errors, "p50": s.p50, "p95": s.p95, "max": s.max}
        for step, s in journal.step_summaries(since=since).items()
    }


def stats(journal: Reads, *, since: datetime | None = None) -> dict[str, Any]:
    """Counts by outcome (state), step durations (p50/p95/max), the top failure reasons."""
    outcomes = {str(state): n for state, n in journal.count_by_state(since=since)}
    unhappy = [s for s in State if s is not State.CONFIRMED]
    reasons = [
        {"reason": reason, "count": n}
        for reason, n in journal.count_by_reason(states=unhappy, since=since)
        if reason is not None
    ]
    return {
        "since": iso(since),
        "total": sum(outcomes.values()),
        "outcomes": outcomes,
        "in_flight": sum(n for s, n in outcomes.items() if State(s) not in _SETTLED),
        "steps": _step_summary(journal, since),
        "top_reasons": reasons[:TOP_REASONS],
    }


_SETTLED = TERMINAL | {State.IN_DOUBT}


# -- prune and path ------------------------------------------------------------------------


def prune(
    journal: Journal, *, before: datetime, states: Iterable[State] = (), dry_run: bool = False
) -> list[dict[str, Any]]:
    """Delete terminal migrations finished before ``before``; never any other."""
    gone = journal.prune(finished_before=before, states=states, dry_run=dry_run)
    return [migration_dict(m) for m in gone]


def path(journal: Reads, migration_id: str) -> tuple[Migration, list[State]]:
    """The states a migration went through, from ``NEW``, without repeats in a row."""
    migration = journal.find(migration_id)
    states = [State.NEW]
    for e in journal.history(migration.id):
        if e.state != states[-1]:
            states.append(e.state)
    return migration, states
