"""The write path's statements: the compare-and-set that advances a migration, the insert
of its events with it (one statement on PostgreSQL), heartbeats, progress samples, claims.
Built once here; ``writes.py`` runs them."""

from __future__ import annotations

import functools
import operator

import sqlalchemy as sa

from migrator.journal import positions
from migrator.journal.schema import events, migrations

_C = migrations.c
OWNED = (_C.id == sa.bindparam("mid"), _C.fence == sa.bindparam("expect_fence"))

ADVANCE = (
    migrations.update()
    .where(
        *OWNED,
        _C.state == sa.bindparam("expect_state"),
        # ``unless_aborted``: refused once an abort is requested (``Writer.record``)
        sa.or_(sa.bindparam("unless_aborted", type_=sa.Boolean) == sa.false(), ~_C.abort_requested),
    )
    .values(
        state=sa.bindparam("new_state"),
        last_seq=_C.last_seq + sa.bindparam("n", type_=sa.Integer),
        updated_at=sa.bindparam("now"),
        lease_expires_at=sa.bindparam("lease"),
        reason=sa.case(
            (sa.bindparam("keep_reason", type_=sa.Boolean), _C.reason),
            else_=sa.bindparam("new_reason", type_=sa.Text),
        ),
        finished_at=sa.bindparam("finished"),
    )
    .returning(_C.last_seq, _C.abort_requested)
)
HEARTBEAT = migrations.update().where(*OWNED).values(lease_expires_at=sa.bindparam("lease"))
PROGRESS = (
    migrations.update()
    .where(*OWNED)
    .values(progress=sa.bindparam("progress"), lease_expires_at=sa.bindparam("lease"))
)
CLAIM = (
    migrations.update()
    .where(*OWNED)
    .values(owner=sa.bindparam("owner"), fence=_C.fence + 1, lease_expires_at=sa.bindparam("lease"))
)
EVENT_COLUMNS = tuple(c for c in events.c if c.name not in ("migration_id", "seq", "position"))
APPENDED = tuple(c.name for c in EVENT_COLUMNS)
APPENDED_VALUES = operator.itemgetter(*APPENDED)


@functools.cache
def appended_as(k: int) -> tuple[str, ...]:
    """The names event ``k``'s values are bound as (``advance_and_append``), made once."""
    return tuple(f"{name}_{k}" for name in APPENDED)


def advance_and_append(n: int, *, insert: bool) -> sa.Insert:
    """``ADVANCE`` and the insert of its ``n`` events as one statement (PostgreSQL: a
    data-modifying ``WITH``): one round trip, its own transaction. The events take the
    sequence numbers the update returns; when the update matches no row (a lost
    compare-and-set) nothing is inserted and no row is returned. ``insert``: a new
    migration's row, already in its state after the events (bound as ``row_<column>``),
    is inserted instead of updated. Each event's values are bound as ``<column>_<k>``;
    the rows returned are ``(seq, abort_requested)``."""
    if insert:
        head = migrations.insert().values(
            {c.name: sa.bindparam(f"row_{c.name}", type_=c.type) for c in migrations.c}
        )
        advanced = head.returning(_C.last_seq, _C.abort_requested).cte("advanced")
    else:
        advanced = ADVANCE.cte("advanced")
    rows_ = [
        sa.select(
            sa.cast(sa.bindparam("mid", type_=events.c.migration_id.type), sa.String),
            advanced.c.last_seq - (n - 1 - k),
            positions.postgres(k),
            *(sa.cast(sa.bindparam(f"{c.name}_{k}", type_=c.type), c.type) for c in EVENT_COLUMNS),
        )
        for k in range(n)
    ]
    names = ["migration_id", "seq", "position", *(c.name for c in EVENT_COLUMNS)]
    source = rows_[0] if n == 1 else sa.union_all(*rows_)
    abort = sa.select(advanced.c.abort_requested).scalar_subquery()
    return (
        events.insert().from_select(names, source).add_cte(advanced).returning(events.c.seq, abort)
    )
