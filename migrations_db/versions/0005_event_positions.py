"""Every event a journal-wide position; each event the migration's reason as of it; the
hook delivery cursor of each migration.

- ``migration_events.position``: increasing, unique, what a reader of the whole journal
  resumes from (``Journal.events_after``). The journal's writer assigns it in the statement
  that inserts the event: on SQLite the next integer (one writer at a time, so positions
  follow the commits); on PostgreSQL ``transaction id * 65536 + the event's index in its
  statement``, which readers only read below the oldest transaction still running, so an
  event that commits late is never passed over. An insert that names no position gets one
  from the database (a trigger on SQLite, a default on PostgreSQL).
  Existing events are numbered in order, migration by migration (oldest migration first,
  each one's events by seq): on SQLite from 1, on PostgreSQL just below the positions the
  upgrading transaction's successors will take.
- ``migration_events.reason``: the migration's reason as of the event (null before 0005).
- ``migration_deliveries``: how far the hook events of a migration were delivered
  (docs/embedding.md, "Hooks and metrics"). Every migration that is not finished is
  counted as delivered up to its last event: the hooks of older versions were called as
  each event committed.

The unique index on the positions is built over every event: on a large journal writes
wait for it, as for revision 0004's index.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_INDEX = "ix_migration_events_position"
_TRIGGER = "migration_events_position"
_FINISHED = ("CONFIRMED", "ROLLED_BACK", "FAILED")

_SQLITE_TRIGGER = f"""
CREATE TRIGGER {_TRIGGER} AFTER INSERT ON migration_events
WHEN NEW.position IS NULL
BEGIN
  UPDATE migration_events
  SET position = (SELECT coalesce(max(position), 0) + 1 FROM migration_events)
  WHERE migration_id = NEW.migration_id AND seq = NEW.seq;
END
"""
_PG_DEFAULT = "pg_current_xact_id()::text::bigint * 65536 + 65535"

# Old events in order, migration by migration; on PostgreSQL ending just below this
# transaction's slot, so every later position is higher.
_NUMBERED = """
UPDATE migration_events SET position = numbered.n + {base}
FROM (
  SELECT e.migration_id, e.seq,
         row_number() OVER (ORDER BY m.created_at, e.migration_id, e.seq) AS n
  FROM migration_events e JOIN migrations m ON m.id = e.migration_id
) AS numbered
WHERE migration_events.migration_id = numbered.migration_id
  AND migration_events.seq = numbered.seq
"""
_PG_BASE = (
    "(pg_current_xact_id()::text::bigint * 65536 - (SELECT count(*) FROM migration_events) - 1)"
)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.add_column("migration_events", sa.Column("position", sa.BigInteger, nullable=True))
    op.add_column("migration_events", sa.Column("reason", sa.Text, nullable=True))
    op.execute(_NUMBERED.format(base=_PG_BASE if postgres else "0"))
    op.create_index(_INDEX, "migration_events", ["position"], unique=True)
    if postgres:
        op.execute(f"ALTER TABLE migration_events ALTER COLUMN position SET DEFAULT {_PG_DEFAULT}")
    else:
        op.execute(_SQLITE_TRIGGER)
    op.create_table(
        "migration_deliveries",
        sa.Column(
            "migration_id",
            sa.String(36),
            sa.ForeignKey("migrations.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("seq", sa.Integer, nullable=False),
    )
    finished = ", ".join(f"'{state}'" for state in _FINISHED)
    op.execute(
        "INSERT INTO migration_deliveries (migration_id, seq)"
        f" SELECT id, last_seq FROM migrations WHERE state NOT IN ({finished})"
    )


def downgrade() -> None:
    op.drop_table("migration_deliveries")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE migration_events ALTER COLUMN position DROP DEFAULT")
    else:
        op.execute(f"DROP TRIGGER {_TRIGGER}")
    op.drop_index(_INDEX, table_name="migration_events")
    with op.batch_alter_table("migration_events") as batch:
        batch.drop_column("reason")
        batch.drop_column("position")
