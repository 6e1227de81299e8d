"""Read-side queries of the journal: migrations and their events, as records.

Each function takes a ``Connection`` and opens no transaction of its own; ``Journal``
owns the connections (``docs/journal.md``).
"""

from __future__ import annotations

from collections.abc import Iterable
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


def find(conn: sa.Connection, prefix: str) -> Migration:
    """The one migration whose id starts with ``prefix``."""
    cleaned = prefix.strip().lower()
    if not cleaned or not _ID_CHARS.issuperset(cleaned):
        raise MigrationNotFound(migration_id=prefix)
    query = sa.select(migrations).where(migrations.c.id.startswith(cleaned)).limit(2)
    found = conn.execute(query).all()
    if not found:
        raise MigrationNotFound(migration_id=prefix)
    if len(found) > 1:
        raise AmbiguousMigrationId(prefix=prefix, count=_count_prefix(conn, cleaned))
    return rows.migration(found[0])


def _count_prefix(conn: sa.Connection, prefix: str) -> int:
    query = (
        sa.select(sa.func.count()).select_from(migrations).where(migrations.c.id.startswith(prefix))
    )
    return int(conn.execute(query).scalar_one())


def fence_and_state(conn: sa.Connection, migration_id: str) -> tuple[int, str] | None:
    """The migration's current fence and state, or None if it does not exist."""
    query = sa.select(migrations.c.fence, migrations.c.state).where(migrations.c.id == migration_id)
    row = conn.execute(query).one_or_none()
    return None if row is None else (int(row.fence), str(row.state))


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
