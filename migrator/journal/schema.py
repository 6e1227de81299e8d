"""The journal's tables: the only place the schema is written in Python.

Alembic (``migrations_db/``) owns the schema in the database; a test checks that these
tables and the revisions agree. ``SCHEMA_HEAD`` is the revision this code expects.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from migrator.journal.flavor import sqlite_datetime, sqlite_text
from migrator.journal.revisions import KNOWN_REVISIONS as KNOWN_REVISIONS
from migrator.journal.revisions import SCHEMA_HEAD as SCHEMA_HEAD

TIMED = "duration IS NOT NULL"
"""The condition of the partial index of step outcomes (revision 0004), on both databases."""


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    # On SQLite, the text SQLAlchemy's DATETIME writes and reads ("YYYY-MM-DD HH:MM:SS.ffffff",
    # naive UTC) is made and parsed by ``datetime`` itself, in C: the generic processors
    # (a %-format on bind, a regular expression on read) cost more than the rest of a
    # journal write's or an exported event's Python work. ``tests/journal/test_schema.py``
    # proves the text is the same.

    def bind_processor(self, dialect: sa.Dialect) -> Any:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)
        return sqlite_text

    def result_processor(self, dialect: sa.Dialect, coltype: Any) -> Any:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)
        return sqlite_datetime


metadata = sa.MetaData()

migrations = sa.Table(
    "migrations",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("domain", sa.String(255), nullable=False),
    sa.Column("dname", sa.String(255), nullable=True),
    sa.Column("src", sa.Text, nullable=False),
    sa.Column("dst", sa.Text, nullable=False),
    sa.Column("protocol", sa.Integer, nullable=False),
    sa.Column("flags", sa.Integer, nullable=False),
    sa.Column("bandwidth", sa.Integer, nullable=False),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("owner", sa.String(255), nullable=True),
    sa.Column("lease_expires_at", UTCDateTime, nullable=True),
    sa.Column("fence", sa.Integer, nullable=False),
    sa.Column("last_seq", sa.Integer, nullable=False),
    sa.Column("abort_requested", sa.Boolean, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    sa.Column("progress", sa.JSON, nullable=True),
    sa.Column("trace_id", sa.String(32), nullable=True),  # revision 0007
    sa.Index("ix_migrations_created_at", "created_at"),
    sa.Index("ix_migrations_state_created_at", "state", "created_at"),
    sqlite_with_rowid=False,
)

events = sa.Table(
    "migration_events",
    metadata,
    sa.Column(
        "migration_id",
        sa.String(36),
        sa.ForeignKey("migrations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("step", sa.String(16), nullable=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("cancelled", sa.Boolean, nullable=True),
    sa.Column("cookie_in", sa.LargeBinary, nullable=True),
    sa.Column("cookie_out", sa.LargeBinary, nullable=True),
    sa.Column("uri", sa.Text, nullable=True),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("error_type", sa.String(255), nullable=True),
    sa.Column("error_message", sa.Text, nullable=True),
    sa.Column("detail", sa.JSON, nullable=True),
    sa.Column("coordinator", sa.String(255), nullable=True),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("duration", sa.Float, nullable=True),
    sa.Column("position", sa.BigInteger, nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Index("ix_migration_events_position", "position", unique=True),  # revision 0005
    sa.Index(  # step outcomes only (revision 0004): what stats read through it
        "ix_migration_events_step_kind_duration",
        "step",
        "kind",
        "duration",
        sqlite_where=sa.text(TIMED),  # and postgresql_where: see with_postgresql_options
    ),
    sqlite_with_rowid=False,
)

workers = sa.Table(
    "workers",
    metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("hostname", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("concurrency", sa.Integer, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("heartbeat_at", UTCDateTime, nullable=False),
    sa.Column("stopping", sa.Boolean, nullable=False),
    sa.Column("limits", sa.JSON, nullable=True),  # revision 0008
    sa.Column("lease_seconds", sa.Float, nullable=True),  # revision 0008
)
"""Live workers, each heartbeating its row (docs/workers.md); revision 0003. Since 0008
each row keeps the worker's limits and lease (null: a worker of an older version)."""

deliveries = sa.Table(
    "migration_deliveries",
    metadata,
    sa.Column(
        "migration_id",
        sa.String(36),
        sa.ForeignKey("migrations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("seq", sa.Integer, nullable=False),
)
"""How far each migration's hook events were delivered (``engine/delivery.py``); revision
0005. Its events after ``seq`` are owed to hooks; no row: none delivered yet, or every one
of a finished migration."""

webhook_cursors = sa.Table(
    "webhook_cursors",
    metadata,
    sa.Column("endpoint", sa.String(64), primary_key=True),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)
"""How far each webhook endpoint was given the journal's events, by journal-wide position
(``migrator/webhooks/``, docs/webhooks.md); revision 0007. ``endpoint`` is the endpoint's
name in the configuration, never its URL (which may hold a password)."""


def with_postgresql_options() -> sa.MetaData:
    """``metadata`` with its PostgreSQL-only option: the outcome index's ``WHERE``.

    Declaring a ``postgresql_*`` option makes SQLAlchemy load its PostgreSQL dialect
    (40 ms of CPU), which a process on a SQLite journal never needs, so the option is
    added here, on first use, for what compares or creates the schema (Alembic's
    ``migrations_db/env.py``); the revisions create the index on each database.
    """
    index = next(i for i in events.indexes if i.name == "ix_migration_events_step_kind_duration")
    index.dialect_kwargs["postgresql_where"] = sa.text(TIMED)
    return metadata


requests = sa.Table(
    "migration_requests",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "migration_id",
        sa.String(36),
        sa.ForeignKey("migrations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("value", sa.Integer, nullable=True),
    sa.Column("requested_at", UTCDateTime, nullable=False),
    sa.Column("applied_at", UTCDateTime, nullable=True),
    sa.Column("outcome", sa.Text, nullable=True),
    sa.Index("ix_migration_requests_migration_id", "migration_id", "id"),
)
"""Runtime requests (``set-downtime``, ``set-speed``, ``postcopy``), written by any process
and applied by whoever drives the migration (docs/convergence.md); revision 0009."""

policies = sa.Table(
    "migration_policies",
    metadata,
    sa.Column(
        "migration_id",
        sa.String(36),
        sa.ForeignKey("migrations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("policy", sa.JSON, nullable=False),
)
"""Each migration's convergence policy, for the process that drives it after a takeover
or from the queue; revision 0009."""
api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("hash", sa.String(64), nullable=False, unique=True),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("name", sa.String(255), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
)
"""The HTTP API's bearer tokens, by SHA-256 (``journal/tokens.py``); revision 0006."""

api_idempotency = sa.Table(
    "api_idempotency",
    metadata,
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("migration_id", sa.String(36), nullable=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)
"""``Idempotency-Key``s of queued migrations (``journal/tokens.py``); revision 0006."""
