"""The limits and the lease of each worker, kept with its row in ``workers``.

- ``workers.limits``: the per-host limits the worker claims under, as JSON (``max_outgoing``,
  ``max_incoming``, ``hosts``); null for a worker of an older version. A worker whose
  limits differ from a running worker's is refused at start (docs/workers.md).
- ``workers.lease_seconds``: the worker's lease; a worker silent for its own lease is
  dead. Null for a worker of an older version (the reader's ``--lease`` then applies).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("workers", sa.Column("limits", sa.JSON, nullable=True))
    op.add_column("workers", sa.Column("lease_seconds", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("lease_seconds")
        batch.drop_column("limits")
