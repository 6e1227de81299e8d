"""Queued migrations and workers: the workers table.

A queued migration is a ``migrations`` row in state QUEUED (no new column): workers claim
the oldest first, reading the ``(state, created_at)`` index of revision 0002. Each live
worker keeps a row in ``workers``, heartbeated while it runs (docs/workers.md).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("concurrency", sa.Integer, nullable=False),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("heartbeat_at", _TS, nullable=False),
        sa.Column("stopping", sa.Boolean, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("workers")
