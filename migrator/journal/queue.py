"""Queued migrations, their claim under per-host limits, and the workers table.

A submitted migration is a ``migrations`` row in state QUEUED with no owner. A worker
claims the oldest one that fits the per-host limits in ONE transaction that first makes
claims exclusive (PostgreSQL: a transaction-scoped advisory lock, then ``SELECT ... FOR
UPDATE SKIP LOCKED`` over the queue; SQLite: ``BEGIN IMMEDIATE``, its single writer), then
counts the migrations in flight per host, so limits hold across every worker of the
journal, in every process (docs/workers.md).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from migrator.hostlimits import HostLimits
from migrator.journal import rows
from migrator.journal.lifecycle import translated
from migrator.journal.schema import events, migrations, workers
from migrator.journal.store import Journal
from migrator.journal.writes import now
from migrator.records import EventDraft, EventKind, Migration
from migrator.states import TERMINAL, State

_C = migrations.c
CLAIM_WINDOW = 500
"""How many of the oldest queued migrations one claim looks at for one that fits."""
CLAIM_LOCK = 0x6D69_6772
"""The PostgreSQL advisory lock that serializes claims is (CLAIM_LOCK, a hash of the
schema): advisory locks are per database, and journals in other schemas must not wait."""
NOT_IN_FLIGHT = frozenset({State.QUEUED, State.IN_DOUBT}) | TERMINAL
"""States that hold no slot of a host's limits: waiting, ended, or waiting for an operator."""


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker as its row in ``workers`` says, with the migrations it holds."""

    id: str
    hostname: str
    pid: int
    concurrency: int
    started_at: datetime
    heartbeat_at: datetime
    stopping: bool
    holds: tuple[str, ...] = ()


class Queue:
    """The queue, the claims and the workers of one journal."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.engine = journal.engine
        self.url = journal.url

    @contextmanager
    def _exclusive(self) -> Iterator[sa.Connection]:
        """One transaction no other claim runs beside; commits when the block ends."""
        with translated(self.url), self.engine.connect() as conn:
            if self.engine.dialect.name == "postgresql":
                self._bounded(conn)
                schema = sa.func.hashtext(sa.func.current_schema())
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(CLAIM_LOCK, schema)))
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            yield conn
            conn.commit()

    def _bounded(self, conn: sa.Connection) -> None:
        """A claim waits for the lock at most a lease, and a claimer stalled inside its
        transaction (SIGSTOP) loses its session, and so the lock, after a lease: one stalled
        worker must not stop every other from claiming (docs/workers.md)."""
        ms = max(1, int(self.journal.lease_seconds * 1000))
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {ms}")
        conn.exec_driver_sql(f"SET LOCAL idle_in_transaction_session_timeout = {ms}")

    # -- submitting ----------------------------------------------------------------------

    def submit(
        self,
        *,
        domain: str,
        src: str,
        dst: str,
        protocol: int,
        flags: int,
        bandwidth: int,
        dname: str | None = None,
    ) -> Migration:
        """Journal a QUEUED migration: no owner, no lease, fence 1, no event yet."""
        at = now()
        values = rows.new_migration(
            migration_id=str(uuid.uuid4()),
            domain=domain,
            dname=dname,
            src=src,
            dst=dst,
            protocol=protocol,
            flags=flags,
            bandwidth=bandwidth,
            owner="",
            now=at,
            lease=at,
        )
        values.update(state=State.QUEUED.value, owner=None, lease_expires_at=None)
        with translated(self.url), self.engine.begin() as conn:
            conn.execute(migrations.insert().values(**values))
        return Migration(**{**values, "state": State.QUEUED})

    def depth(self) -> int:
        """How many migrations wait in the queue."""
        query = sa.select(sa.func.count()).where(_C.state == State.QUEUED.value)
        with translated(self.url), self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def takeovers(self) -> int:
        """How many times a coordinator took a migration over from another (recovery's
        claim notes, which name the previous owner)."""
        query = sa.select(sa.func.count()).where(
            events.c.kind == EventKind.RECOVERY.value,
            sa.cast(events.c.detail, sa.Text).like('%"previous_owner"%'),
        )
        with translated(self.url), self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    # -- claiming ------------------------------------------------------------------------

    def claim(self, worker_id: str, limits: HostLimits) -> Migration | None:
        """Take the oldest queued migration that fits ``limits`` (QUEUED -> NEW, owned by
        ``worker_id`` with a fresh lease and a higher fence), or None if none fits."""
        with self._exclusive() as conn:
            out, into = in_flight(conn)
            for migration in self._waiting(conn):
                if limits.admits(migration.src, migration.dst, out, into):
                    return self._take(conn, migration, worker_id)
        return None

    def _waiting(self, conn: sa.Connection) -> list[Migration]:
        query = (
            sa.select(migrations)
            .where(_C.state == State.QUEUED.value)
            .order_by(_C.created_at, _C.id)
            .limit(CLAIM_WINDOW)
        )
        if self.engine.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        return [rows.migration(row) for row in conn.execute(query)]

    def _take(self, conn: sa.Connection, migration: Migration, worker_id: str) -> Migration:
        at = now()
        lease = at + timedelta(seconds=self.journal.lease_seconds)
        seq = migration.last_seq + 1
        conn.execute(
            migrations.update()
            .where(_C.id == migration.id, _C.state == State.QUEUED.value)
            .values(
                state=State.NEW.value,
                owner=worker_id,
                fence=_C.fence + 1,
                lease_expires_at=lease,
                last_seq=seq,
                updated_at=at,
            )
        )
        draft = EventDraft(kind=EventKind.QUEUE, detail={"claimed_by": worker_id})
        conn.execute(
            events.insert().values(
                **rows.event_values(migration.id, seq, draft, State.NEW, at, worker_id)
            )
        )
        return rows.replace(
            migration,
            state=State.NEW,
            owner=worker_id,
            fence=migration.fence + 1,
            lease_expires_at=lease,
            last_seq=seq,
            updated_at=at,
        )

    def release(self, migration: Migration) -> bool:
        """Let the lease of ``migration`` lapse now, if we still own it: another worker
        takes it over at its next poll."""
        stmt = (
            migrations.update()
            .where(_C.id == migration.id, _C.fence == migration.fence)
            .values(lease_expires_at=now())
        )
        with translated(self.url), self.engine.begin() as conn:
            return bool(conn.execute(stmt).rowcount)

    # -- workers -------------------------------------------------------------------------

    def register(self, worker_id: str, *, concurrency: int) -> None:
        at = now()
        row = {
            "id": worker_id,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "concurrency": concurrency,
            "started_at": at,
            "heartbeat_at": at,
            "stopping": False,
        }
        with translated(self.url), self.engine.begin() as conn:
            conn.execute(workers.delete().where(workers.c.id == worker_id))
            conn.execute(workers.insert().values(**row))

    def beat(self, worker_id: str, *, stopping: bool = False) -> None:
        """Heartbeat the worker's row (and say whether it is stopping)."""
        stmt = (
            workers.update()
            .where(workers.c.id == worker_id)
            .values(heartbeat_at=now(), stopping=stopping)
        )
        with translated(self.url), self.engine.begin() as conn:
            conn.execute(stmt)

    def unregister(self, worker_id: str) -> None:
        with translated(self.url), self.engine.begin() as conn:
            conn.execute(workers.delete().where(workers.c.id == worker_id))

    def workers(self, *, alive_within: float | None = None) -> list[WorkerInfo]:
        """Workers, oldest first, each with what it holds; only those that heartbeat within
        ``alive_within`` seconds, if given (a killed worker's row stays until pruned)."""
        query = sa.select(workers).order_by(workers.c.started_at, workers.c.id)
        if alive_within is not None:
            query = query.where(workers.c.heartbeat_at >= now() - timedelta(seconds=alive_within))
        held = (
            sa.select(_C.owner, _C.id)
            .where(_C.state.not_in([s.value for s in NOT_IN_FLIGHT]))
            .order_by(_C.created_at)
        )
        with translated(self.url), self.engine.connect() as conn:
            found = list(conn.execute(query))
            holds: dict[str, list[str]] = {}
            for owner, mid in conn.execute(held):
                holds.setdefault(owner, []).append(mid)
        return [WorkerInfo(**row._mapping, holds=tuple(holds.get(row.id, ()))) for row in found]

    def forget_workers(self, *, silent_for: float) -> int:
        """Delete the rows of workers silent for ``silent_for`` seconds; how many."""
        stmt = workers.delete().where(
            workers.c.heartbeat_at < now() - timedelta(seconds=silent_for)
        )
        with translated(self.url), self.engine.begin() as conn:
            return int(conn.execute(stmt).rowcount)


def in_flight(conn: sa.Connection) -> tuple[Counter[str], Counter[str]]:
    """How many migrations are leaving and entering each host now."""
    query = sa.select(_C.src, _C.dst).where(_C.state.not_in([s.value for s in NOT_IN_FLIGHT]))
    out: Counter[str] = Counter()
    into: Counter[str] = Counter()
    for src, dst in conn.execute(query):
        out[src] += 1
        into[dst] += 1
    return out, into
