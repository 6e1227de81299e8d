"""Each migration's trace id; the webhook deliverers' cursors.

- ``migrations.trace_id``: the W3C trace id (32 lowercase hex digits) of the migration's
  trace, chosen when the migration is journaled, so that every process that drives it
  (``recover``, a worker's takeover) continues the same trace (docs/tracing.md). Existing
  migrations get their id's 32 hex digits.
- ``webhook_cursors``: the journal-wide position up to which each webhook endpoint was
  given every event (docs/webhooks.md); a deliverer that restarts resumes there.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("migrations", sa.Column("trace_id", sa.String(32), nullable=True))
    op.execute("UPDATE migrations SET trace_id = lower(replace(id, '-', ''))")
    op.create_table(
        "webhook_cursors",
        sa.Column("endpoint", sa.String(64), primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("webhook_cursors")
    with op.batch_alter_table("migrations") as batch:
        batch.drop_column("trace_id")
