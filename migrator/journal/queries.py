"""Read-side queries of the journal: migrations and their events, as records.

Each function takes a ``Connection`` and opens no transaction of its own; ``Journal``
owns the connections (``docs/journal.md``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

import sqlalchemy as sa

from migrator.errors import AmbiguousMigrationId, MigrationNotFound
from migrator.journal import rows
from migrator.journal.schema import events, migrations
from migrator.records import Event, Migration
from migrator.states import TERMINAL, State

_ID_CHARS = frozenset("0123456789abcdef-")


def get(conn: sa.Connection, migration_id: str) -> Migration:
    query = sa.select(migrations).where(migrations.c.id == migration_id)
    row = conn.execute(query).one_or_none()
    if row is None:
        raise MigrationNotFound(migration_id=migration_id)
    return rows.migration(row)


STREAM_CHUNK = 500
"""Migrations read at a time when streaming (a page), and whose events one query reads."""
ID_LENGTH = 36
"""A whole migration id: a UUID as text."""


def find(conn: sa.Connection, prefix: str) -> Migration:
    """The one migration whose id starts with ``prefix``."""
    cleaned = prefix.strip().lower()
    if not cleaned or not _ID_CHARS.issuperset(cleaned):
        raise MigrationNotFound(migration_id=prefix)
    found = conn.execute(sa.select(migrations).where(_prefixed(conn, cleaned)).limit(2)).all()
    if not found:
        raise MigrationNotFound(migration_id=prefix)
    if len(found) > 1:
        raise AmbiguousMigrationId(prefix=prefix, count=_count_prefix(conn, cleaned))
    return rows.migration(found[0])


def _prefixed(conn: sa.Connection, prefix: str) -> sa.ColumnElement[bool]:
    """Ids starting with ``prefix``, found on the primary key: a whole id is an equality;
    on SQLite (whose LIKE cannot use the index) a range narrows the LIKE."""
    column = migrations.c.id
    if len(prefix) == ID_LENGTH:
        return column == prefix
    if conn.dialect.name != "sqlite":
        return column.startswith(prefix)
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return sa.and_(column >= prefix, column < upper, column.startswith(prefix))


def _count_prefix(conn: sa.Connection, prefix: str) -> int:
    query = sa.select(sa.func.count()).select_from(migrations).where(_prefixed(conn, prefix))
    return int(conn.execute(query).scalar_one())


def fence_and_state(conn: sa.Connection, migration_id: str) -> tuple[int, str] | None:
    """The migration's current fence and state, or None if it does not exist."""
    query = sa.select(migrations.c.fence, migrations.c.state).where(migrations.c.id == migration_id)
    row = conn.execute(query).one_or_none()
    return None if row is None else (int(row.fence), str(row.state))


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


def abort_requested(conn: sa.Connection, migration_id: str) -> bool:
    query = sa.select(migrations.c.abort_requested).where(migrations.c.id == migration_id)
    return bool(conn.execute(query).scalar())


def migrations_where(
    conn: sa.Connection,
    *,
    states: Iterable[State] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    domain: str | None = None,
    host: str | None = None,
    limit: int | None = None,
    owner: str | None = None,
) -> list[Migration]:
    """Migrations, newest first; ``host`` matches the source or the destination URI."""
    query = sa.select(migrations).order_by(migrations.c.created_at.desc(), migrations.c.id)
    query = query.where(*filters(states, since, until, domain, host, owner))
    if limit is not None:
        query = query.limit(limit)
    return [rows.migration(row) for row in conn.execute(query)]


def page_where(
    conn: sa.Connection,
    where: Sequence[sa.ColumnElement[bool]],
    *,
    after: Migration | None,
    limit: int = STREAM_CHUNK,
) -> list[Migration]:
    """Up to ``limit`` migrations matching ``where`` (as ``filters``), newest first, that
    come after ``after`` in that order (a keyset page: each page is its own short read, so
    a long stream holds no snapshot open while others write)."""
    c = migrations.c
    query = sa.select(migrations).where(*where).order_by(c.created_at.desc(), c.id).limit(limit)
    if after is not None:
        # A plain range first, which the indexes on created_at serve, then the tie-break.
        query = query.where(
            c.created_at <= after.created_at,
            sa.or_(c.created_at < after.created_at, c.id > after.id),
        )
    return [rows.migration(row) for row in conn.execute(query)]


def count_where(conn: sa.Connection, where: Sequence[sa.ColumnElement[bool]]) -> int:
    query = sa.select(sa.func.count()).select_from(migrations).where(*where)
    return int(conn.execute(query).scalar_one())


def histories(conn: sa.Connection, ids: Sequence[str]) -> dict[str, list[Event]]:
    """Every event of each migration of ``ids``, oldest first, in one query."""
    out: dict[str, list[Event]] = {i: [] for i in ids}
    query = (
        sa.select(events)
        .where(events.c.migration_id.in_(ids))
        .order_by(events.c.migration_id, events.c.seq)
    )
    for row in conn.execute(query):
        out[row.migration_id].append(rows.event(row))
    return out


def history(conn: sa.Connection, migration_id: str) -> list[Event]:
    """Every event of a migration, oldest first."""
    query = sa.select(events).where(events.c.migration_id == migration_id).order_by(events.c.seq)
    return [rows.event(row) for row in conn.execute(query)]


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


def filters(
    states: Iterable[State],
    since: datetime | None,
    until: datetime | None,
    domain: str | None,
    host: str | None,
    owner: str | None = None,
) -> list[sa.ColumnElement[bool]]:
    """The WHERE clauses of ``migrations_where`` (and of the analytics)."""
    c = migrations.c
    wanted = [s.value for s in states]
    where: list[sa.ColumnElement[bool]] = []
    if wanted:
        where.append(c.state.in_(wanted))
    if since is not None:
        where.append(c.created_at >= since)
    if until is not None:
        where.append(c.created_at <= until)
    if domain is not None:
        where.append(sa.or_(c.domain == domain, c.dname == domain))
    if host is not None:
        where.append(
            sa.or_(c.src.contains(host, autoescape=True), c.dst.contains(host, autoescape=True))
        )
    if owner is not None:
        where.append(c.owner.contains(owner, autoescape=True))
    return where
