"""The claim: the oldest queued migration that fits the per-host limits, taken in one
transaction of the journal's write path (``Journal.write``: the committer, its reconnect
and its journal-identity check), with claims of other hosts running beside it.

On PostgreSQL no lock is taken for the whole journal. A claim reads the loads of the hosts
and the oldest queued migrations without locking them; for the first migration that seems
to fit, it takes, without waiting, a transaction advisory lock for each limited side of the
migration (the source's outgoing side, the destination's incoming side), then the
migration's row with ``FOR UPDATE SKIP LOCKED``, and only then counts that host's
migrations in flight again: every claim that adds one to a host's count holds that host's
lock until it commits, so the count read under the lock is exact, across every worker. A
host another claim is counting, or a row another claim holds, is skipped, never waited for
(the migration is taken at a later claim). Claims of disjoint hosts therefore never wait
for each other. On SQLite, ``BEGIN IMMEDIATE`` takes its single write lock first, so the
counts cannot move during the claim (docs/workers.md, "The claim").
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from migrator.hostlimits import HostLimits
from migrator.journal import queries, rows
from migrator.journal.flavor import Flavor, flavor
from migrator.journal.schema import events, migrations
from migrator.journal.statement import Statement
from migrator.machine import machine
from migrator.records import EventDraft, EventKind, Migration
from migrator.states import TERMINAL, State, Trigger

CLAIM_WINDOW = 500
"""How many of the oldest queued migrations one claim looks at for one that fits."""
CLAIM_LOCK = 0x6D69_6772
"""The advisory lock (CLAIM_LOCK, a hash of the schema) that claims of earlier versions
took exclusively, one claim at a time; a claim now takes it shared, so claims of this
version run together but never beside an older worker's claim during an upgrade."""
NOT_IN_FLIGHT = frozenset({State.QUEUED, State.IN_DOUBT}) | TERMINAL
"""States that hold no slot of a host's limits: waiting, ended, or waiting for an operator."""

_C = migrations.c
_IN_FLIGHT = "state NOT IN ({})".format(", ".join(f"'{s.value}'" for s in sorted(NOT_IN_FLIGHT)))
_SEEN = (
    f"SELECT src, dst, NULL, NULL FROM migrations WHERE {_IN_FLIGHT} UNION ALL"
    " SELECT * FROM (SELECT src, dst, id, created_at FROM migrations WHERE state = 'QUEUED'"
    " ORDER BY created_at, id LIMIT :window) AS oldest ORDER BY 4, 3"
)
"""The hosts of every migration in flight (no id), and of the oldest queued ones, oldest
first: one round trip."""
_ROW = (
    f"SELECT {rows.MIGRATION_COLUMNS},"
    f" (SELECT count(*) FROM migrations WHERE src = :src AND {_IN_FLIGHT}),"
    f" (SELECT count(*) FROM migrations WHERE dst = :dst AND {_IN_FLIGHT})"
    " FROM migrations WHERE id = :id AND state = 'QUEUED'"
)
"""A queued migration with the loads of its two hosts, in a statement after the one that
took their locks: a statement sees what committed before it started, so one that took the
locks itself could miss a claim of those hosts that committed while it ran."""
_PG_BEGIN = (
    "SELECT set_config('lock_timeout', :ms, true),"
    " set_config('idle_in_transaction_session_timeout', :ms, true),"
    " pg_advisory_xact_lock_shared(:claim_lock, hashtext(current_schema()))::text"
)
_PG_HOST = "pg_try_advisory_xact_lock(hashtext(current_schema()), hashtext(:key{}))"
_TAKE = (
    migrations.update()
    .where(_C.id == sa.bindparam("mid"), _C.state == sa.bindparam("expect_state"))
    .values(
        state=sa.bindparam("new_state"),
        owner=sa.bindparam("owner"),
        fence=_C.fence + 1,
        lease_expires_at=sa.bindparam("lease"),
        last_seq=sa.bindparam("seq"),
        updated_at=sa.bindparam("now"),
    )
)


class ClaimSql:
    """The claim's statements for one database kind, made once per queue."""

    def __init__(self, dialect: sa.Dialect) -> None:
        self.flavor: Flavor = flavor(dialect.name)
        self.server = dialect.name == "postgresql"
        sql = self.flavor.sql
        self.seen = sql(_SEEN)
        self.row = sql(_ROW + (" FOR UPDATE SKIP LOCKED" if self.server else ""))
        self.begin = sql(_PG_BEGIN)
        self.hosts = [sql("SELECT " + ", ".join(_PG_HOST.format(k) for k in range(n)))
                      for n in (1, 2)]  # fmt: skip
        self.take = Statement(_TAKE, dialect)
        columns = [c for c in events.c if c.name != "position"]  # by default: positions.py
        self.event = Statement(
            events.insert().values({c.name: sa.bindparam(c.name, type_=c.type) for c in columns}),
            dialect,
        )


@dataclass
class Claim:
    """One claim by ``worker_id`` under ``limits``, as a unit of work (``__call__``)."""

    sql: ClaimSql
    worker_id: str
    limits: HostLimits
    lease_seconds: float
    taking: tuple[str, int] | None = None
    """The migration (id, fence read) the claim moved, once it did: what ``verify`` reads."""
    busy: set[str] = field(default_factory=set)
    """Host sides another claim holds: skipped for the rest of this claim."""

    def __call__(self, cursor: Any) -> Migration | None:
        self.taking = None
        self.busy = set()
        self._begin(cursor)
        cursor.execute(self.sql.seen, {"window": CLAIM_WINDOW})
        seen = cursor.fetchall()
        out, into = loads(seen)
        for src, dst, mid, _ in seen:
            if mid is None or not self.limits.admits(src, dst, out, into):
                continue
            if self._hosts(cursor, src, dst):
                found = self._locked(cursor, mid, src, dst, out, into)
                if found is not None:
                    return self._take(cursor, found)
        return None

    def _begin(self, cursor: Any) -> None:
        if self.sql.server:
            ms = str(max(1, int(self.lease_seconds * 1000)))
            cursor.execute(self.sql.begin, {"ms": ms, "claim_lock": CLAIM_LOCK})
        elif not cursor.connection.in_transaction:  # alone; in a batch, it holds the lock
            cursor.execute("BEGIN IMMEDIATE")

    def _hosts(self, cursor: Any, src: str, dst: str) -> bool:
        """The locks of the limited sides of ``src`` -> ``dst``, taken without waiting;
        False if another claim holds one (PostgreSQL; on SQLite the write lock is held)."""
        keys = self._sides(src, dst)
        if any(k in self.busy for k in keys):
            return False
        if not self.sql.server or not keys:
            return True
        cursor.execute(self.sql.hosts[len(keys) - 1], {f"key{k}": v for k, v in enumerate(keys)})
        held = cursor.fetchone()
        self.busy.update(k for k, ok in zip(keys, held, strict=True) if not ok)
        return all(held)

    def _sides(self, src: str, dst: str) -> list[str]:
        sides = []
        if self.limits.outgoing(src) is not None:
            sides.append(f"out {src}")
        if self.limits.incoming(dst) is not None:
            sides.append(f"in {dst}")
        return sides

    def _locked(
        self, cursor: Any, mid: str, src: str, dst: str, out: Counter[str], into: Counter[str]
    ) -> Migration | None:
        """The migration ``mid`` with its row locked, if still queued, not held by another
        claim, and its hosts' exact counts (read under their locks) admit it."""
        cursor.execute(self.sql.row, {"id": mid, "src": src, "dst": dst})
        row = cursor.fetchone()
        if row is None:
            return None
        out[src], into[dst] = row[-2:]
        if not self.limits.admits(src, dst, out, into):
            return None
        return rows.migration_of(row, self.sql.flavor)

    def _take(self, cursor: Any, migration: Migration) -> Migration:
        """CLAIM fired on the machine; its write callback takes the row (``_taken``)."""
        return machine().do(
            migration.state, Trigger.CLAIM, lambda state: self._taken(cursor, migration, state)
        )

    def _taken(self, cursor: Any, migration: Migration, state: State) -> Migration:
        at = datetime.now(UTC)
        lease = at + timedelta(seconds=self.lease_seconds)
        seq = migration.last_seq + 1
        self.taking = (migration.id, migration.fence)
        self.sql.take.execute(cursor, {
            "mid": migration.id, "expect_state": migration.state.value, "new_state": state.value,
            "owner": self.worker_id, "lease": lease, "seq": seq, "now": at,
        })  # fmt: skip
        draft = EventDraft(kind=EventKind.QUEUE, detail={"claimed_by": self.worker_id})
        event = rows.event_values(migration.id, seq, draft, state, at, self.worker_id)
        self.sql.event.execute(cursor, event)
        return rows.replace(
            migration,
            state=state,
            owner=self.worker_id,
            fence=migration.fence + 1,
            lease_expires_at=lease,
            last_seq=seq,
            updated_at=at,
        )

    def verify(self, conn: sa.Connection) -> Migration | None:
        """After a commit that went unanswered: the migration the claim took, if it was
        committed; None if nothing was."""
        if self.taking is None:
            return None
        mid, fence = self.taking
        if queries.fence_and_owner(conn, mid) != (fence + 1, self.worker_id):
            return None
        row = conn.execute(sa.select(migrations).where(_C.id == mid)).one()
        return rows.migration(row)


def loads(seen: list[Any]) -> tuple[Counter[str], Counter[str]]:
    """How many migrations are leaving and entering each host now, from ``_SEEN``'s rows."""
    out: Counter[str] = Counter()
    into: Counter[str] = Counter()
    for src, dst, mid, _ in seen:
        if mid is None:
            out[src] += 1
            into[dst] += 1
    return out, into
