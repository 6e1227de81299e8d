"""The first journal schema: migrations and their append-only events.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "migrations",
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
        sa.Column("lease_expires_at", _TS, nullable=True),
        sa.Column("fence", sa.Integer, nullable=False),
        sa.Column("last_seq", sa.Integer, nullable=False),
        sa.Column("abort_requested", sa.Boolean, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("finished_at", _TS, nullable=True),
        sa.Column("progress", sa.JSON, nullable=True),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_migrations_created_at", "migrations", ["created_at"])
    op.create_table(
        "migration_events",
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
        sa.Column("at", _TS, nullable=False),
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
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("migration_events")
    op.drop_index("ix_migrations_created_at", table_name="migrations")
    op.drop_table("migrations")
