"""Indexes for reading a large journal: listing by state, recovery's scan, stats.

- ``ix_migrations_state_created_at``: ``list --state S`` newest first, ``recover``'s scan
  of the unfinished migrations, and the counts by state in ``stats`` without reading the
  table;
- ``ix_migration_events_step_kind_duration``: the step durations of ``stats`` and the
  metrics' histogram read this narrow index instead of every event row.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_migrations_state_created_at", "migrations", ["state", "created_at"])
    op.create_index(
        "ix_migration_events_step_kind_duration",
        "migration_events",
        ["step", "kind", "duration"],
    )


def downgrade() -> None:
    op.drop_index("ix_migration_events_step_kind_duration", table_name="migration_events")
    op.drop_index("ix_migrations_state_created_at", table_name="migrations")
