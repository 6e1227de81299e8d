"""The duration index holds step outcomes only: ``WHERE duration IS NOT NULL``.

Revision 0002's ``(step, kind, duration)`` index also held every intent, note and state
change (their duration is NULL), which no query reads through it: ``stats`` and the
metrics ask for outcomes with a duration (``journal/analytics.py``). Half of a migration's
events carry a duration; the other half no longer write an index entry, one page less per
commit on SQLite (docs/performance.md). The index is built again by the upgrade, over every
event: on a large journal writes wait for it (on a million events, about a second on
SQLite and on PostgreSQL here).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_NAME = "ix_migration_events_step_kind_duration"
_COLUMNS = ["step", "kind", "duration"]


def upgrade() -> None:
    timed = sa.text("duration IS NOT NULL")
    op.drop_index(_NAME, table_name="migration_events")
    op.create_index(_NAME, "migration_events", _COLUMNS, sqlite_where=timed, postgresql_where=timed)


def downgrade() -> None:
    op.drop_index(_NAME, table_name="migration_events")
    op.create_index(_NAME, "migration_events", _COLUMNS)
