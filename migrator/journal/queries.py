"""The queries the write path reads with: what a write's commit did, and what ``prune``
deletes, as SQLAlchemy Core statements. The reads of the read side are ``reads.py``.

Each function takes a ``Connection`` and opens no transaction of its own; ``Journal``
owns the connections (``docs/journal.md``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

import sqlalchemy as sa

from migrator.journal import rows
from migrator.journal.schema import events, migrations
from migrator.records import Migration
from migrator.states import TERMINAL, State


def fence_state_abort(conn: sa.Connection, migration_id: str) -> tuple[int, str, bool] | None:
    """The migration's current fence, state and abort request, or None if it does not
    exist."""
    c = migrations.c
    query = sa.select(c.fence, c.state, c.abort_requested).where(c.id == migration_id)
    row = conn.execute(query).one_or_none()
    return None if row is None else (int(row.fence), str(row.state), bool(row.abort_requested))


def exists(conn: sa.Connection, migration_id: str) -> bool:
    query = sa.select(migrations.c.id).where(migrations.c.id == migration_id)
    return conn.execute(query).first() is not None


def fence_and_owner(conn: sa.Connection, migration_id: str) -> tuple[int, str | None] | None:
    """The migration's fence and owner, or None if it does not exist."""
    query = sa.select(migrations.c.fence, migrations.c.owner).where(migrations.c.id == migration_id)
    row = conn.execute(query).one_or_none()
    return None if row is None else (int(row.fence), row.owner)


def fences_and_owners(conn: sa.Connection, ids: Sequence[str]) -> dict[str, tuple[int, str | None]]:
    """The fence and owner of each migration of ``ids`` that exists, by id."""
    query = sa.select(migrations.c.id, migrations.c.fence, migrations.c.owner).where(
        migrations.c.id.in_(ids)
    )
    return {row.id: (int(row.fence), row.owner) for row in conn.execute(query)}


def advanced(
    conn: sa.Connection, migration_id: str, seq: int, state: State, kind: str, by: str | None
) -> tuple[int, bool] | None:
    """``(seq, abort_requested)`` if event ``seq`` in ``state`` of ``kind`` by ``by`` is
    journaled (a state change whose commit went unanswered did happen), else None."""
    query = (
        sa.select(migrations.c.abort_requested)
        .join(events, events.c.migration_id == migrations.c.id)
        .where(
            migrations.c.id == migration_id,
            events.c.seq == seq,
            events.c.state == state.value,
            events.c.kind == kind,
            events.c.coordinator.is_(None) if by is None else events.c.coordinator == by,
        )
    )
    row = conn.execute(query).one_or_none()
    return None if row is None else (seq, bool(row.abort_requested))


def finished_where(
    states: Iterable[State], finished_before: datetime
) -> list[sa.ColumnElement[bool]]:
    """Terminal migrations in ``states`` (all terminal ones if empty) finished before a time.

    Only ``TERMINAL`` states are ever matched, whatever ``states`` asks for.
    """
    wanted = [s for s in states if s in TERMINAL] if states else sorted(TERMINAL)
    return [
        migrations.c.state.in_([s.value for s in wanted]),
        migrations.c.finished_at.is_not(None),
        migrations.c.finished_at < finished_before,
    ]


def finished(conn: sa.Connection, where: list[sa.ColumnElement[bool]]) -> list[Migration]:
    """The migrations matching ``where`` (as ``finished_where``), oldest first."""
    query = sa.select(migrations).where(*where).order_by(migrations.c.created_at)
    return [rows.migration(row) for row in conn.execute(query)]
