"""Runtime requests and convergence policies.

- ``migration_requests``: a request to change a migration in Perform (``set-downtime``,
  ``set-speed``, ``postcopy``), written by any process; whoever drives the migration
  applies it and stamps ``applied_at`` and ``outcome``.
- ``migration_policies``: each migration's convergence policy (JSON), for the process
  that drives it from the queue or after a takeover.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "migration_requests",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "migration_id",
            sa.String(36),
            sa.ForeignKey("migrations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("value", sa.Integer, nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.Text, nullable=True),
    )
    op.create_index(
        "ix_migration_requests_migration_id", "migration_requests", ["migration_id", "id"]
    )
    op.create_table(
        "migration_policies",
        sa.Column(
            "migration_id",
            sa.String(36),
            sa.ForeignKey("migrations.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("policy", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("migration_policies")
    op.drop_index("ix_migration_requests_migration_id", table_name="migration_requests")
    op.drop_table("migration_requests")
