"""The HTTP API's bearer tokens (stored hashed) and its idempotency keys.

- ``api_tokens``: one row per token ``migrator token create`` made: its id (the public
  part of the token), the SHA-256 of the whole token, its scope (``read`` or ``operate``),
  a name, when it was made. The token itself is never stored.
- ``api_idempotency``: the ``Idempotency-Key`` of a ``POST /v1/migrations``, the migration
  it queued (null while the first request is being handled) and the hash of the request,
  so a retried request returns that migration instead of queuing a second one.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_table(
        "api_idempotency",
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("migration_id", sa.String(36), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("api_idempotency")
    op.drop_table("api_tokens")
