"""The journal read as a log: events by journal-wide position, and the hook delivery cursors.

Written like ``reads.py`` (``:name`` SQL on a DBAPI connection, no SQLAlchemy), so
``SqliteReader`` serves them too. How positions are assigned, and why a reader that
resumes from its last one never passes over an event that commits late, is in
``positions.py`` and docs/journal.md ("Positions").
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from migrator.journal.reads import Db, in_list
from migrator.journal.rows import EVENT_COLUMNS, MIGRATION_COLUMNS, event_of, migration_of
from migrator.records import Entry, Migration
from migrator.states import State

PAGE = 500
"""Entries ``events_after`` gives at most, unless told."""

HORIZON = {
    "sqlite": "",
    "postgresql": " AND position < pg_snapshot_xmin(pg_current_snapshot())::text::bigint * 65536",
}
"""The condition that keeps a reader below every position still to commit: on SQLite none
(one writer, positions in commit order); on PostgreSQL the slots of the transactions older
than the oldest one running (``positions.SLOTS`` a transaction)."""

_ENTRIES = f"SELECT position, reason, {EVENT_COLUMNS} FROM migration_events"


def _entries(db: Db, sql: str, params: dict[str, Any]) -> list[Entry]:
    f = db.flavor
    return [Entry(int(r[0]), event_of(r[2:], f), r[1]) for r in db.rows(sql, params)]


def events_after(
    db: Db, position: int | None, limit: int, migration_id: str | None = None
) -> list[Entry]:
    """Up to ``limit`` entries past ``position`` (None: from the first), in position order;
    of one migration if ``migration_id`` (its events by seq, which is the same order)."""
    where: list[str] = []
    params: dict[str, Any] = {"limit": limit}
    if position is not None:
        where.append("position > :after")
        params["after"] = position
    else:
        where.append("position IS NOT NULL")
    if migration_id is not None:
        where.append("migration_id = :mid")
        params["mid"] = migration_id
    order = "seq" if migration_id is not None else "position"
    sql = f"{_ENTRIES} WHERE {' AND '.join(where)}{HORIZON[db.flavor.name]}"
    return _entries(db, f"{sql} ORDER BY {order} LIMIT :limit", params)


def last_position(db: Db) -> int | None:
    """The highest position a reader may read now (None: no event yet): every event below
    it has committed, so reading after it misses none that commits later."""
    where = f"position IS NOT NULL{HORIZON[db.flavor.name]}"
    found = db.rows(f"SELECT max(position) FROM migration_events WHERE {where}")
    return None if not found or found[0][0] is None else int(found[0][0])


def entries_from(db: Db, migration_id: str, seq: int) -> list[Entry]:
    """The entries of a migration's events from ``seq`` on, by seq: what is committed, read
    by the migration's own order (delivery needs no horizon: one migration's events commit
    one transaction after another)."""
    sql = f"{_ENTRIES} WHERE migration_id = :mid AND seq >= :seq ORDER BY seq"
    return _entries(db, sql, {"mid": migration_id, "seq": seq})


def delivered(db: Db, migration_id: str) -> int | None:
    """The seq up to which the migration's hook events were delivered; None: no cursor."""
    found = db.rows(
        "SELECT seq FROM migration_deliveries WHERE migration_id = :mid", {"mid": migration_id}
    )
    return int(found[0][0]) if found else None


def owed(db: Db, states: Iterable[State]) -> list[Migration]:
    """The migrations in ``states`` with events past their delivery cursor, oldest first."""
    params: dict[str, Any] = {}
    chosen = in_list("m.state", "s", [s.value for s in states], params)
    columns = ", ".join(f"m.{c.strip()}" for c in MIGRATION_COLUMNS.split(","))
    sql = (
        f"SELECT {columns} FROM migrations m JOIN migration_deliveries d"
        f" ON d.migration_id = m.id WHERE d.seq < m.last_seq AND {chosen}"
        " ORDER BY m.created_at, m.id"
    )
    return [migration_of(row, db.flavor) for row in db.rows(sql, params)]
