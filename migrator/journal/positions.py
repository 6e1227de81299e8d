"""Journal-wide event positions: how the writer assigns them, and how far a reader may read.

A reader of the whole journal (``Journal.events_after``) resumes from the last position it
saw; it must never pass over an event that commits after it read (docs/journal.md,
"Positions"):

- **SQLite** has one writer at a time: each event takes the highest position plus one in
  the statement that inserts it, under the write lock, so positions follow the commits and
  every position a reader sees has all lower ones committed before it.
- **PostgreSQL** commits concurrent transactions in any order. An event's position is its
  transaction's id times ``SLOTS`` plus its index among the events of the statement: no
  lock, no counter row, and a transaction's events are adjacent. A reader reads only below
  the oldest transaction id still running (``pg_snapshot_xmin``): every transaction below
  it has ended, and every later one has a higher id, so nothing can appear below a position
  once it was read past (the readers' side: ``reads.HORIZON``).
"""

from __future__ import annotations

import sqlalchemy as sa

from migrator.journal.schema import events

SLOTS = 65536
"""Positions per PostgreSQL transaction: the events one statement may insert."""
_XID = "pg_current_xact_id()::text::bigint"

_ZERO, _ONE = sa.literal_column("0", sa.BigInteger), sa.literal_column("1", sa.BigInteger)
_HIGHEST = sa.func.coalesce(sa.func.max(events.c.position), _ZERO)
NEXT_SQLITE = sa.select(_HIGHEST + _ONE).scalar_subquery()
"""SQLite: the position of the event being inserted."""
INSERT_SQLITE = events.insert().values(
    {c.name: NEXT_SQLITE if c.name == "position" else sa.bindparam(c.name, type_=c.type)
     for c in events.c}
)  # fmt: skip
"""SQLite: the insert of one event, its position included."""


def postgres(k: int) -> sa.ColumnElement[int]:
    """PostgreSQL: the position of the ``k``-th event its statement inserts."""
    if not 0 <= k < SLOTS - 1:  # the last slot is the database default's (revision 0005)
        raise ValueError(f"at most {SLOTS - 1} events a statement, not {k + 1}")
    return sa.literal_column(f"{_XID} * {SLOTS} + {k}", sa.BigInteger)
