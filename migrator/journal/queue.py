"""Queued migrations, their claim under per-host limits, and the workers table.

A submitted migration is a ``migrations`` row in state QUEUED with no owner. A worker
claims the oldest one that fits the per-host limits in one transaction (``claims.py``):
on PostgreSQL claims of different hosts run side by side, and each host's count is read
under that host's lock, so limits hold across every worker of the journal, in every
process (docs/workers.md). Every write of the queue goes through the journal's write path
(``Journal.write``, ``Journal.record``), and every state change it makes is checked
as a trigger fired on the machine (``machine.Machine.do``), whose write callback writes it.
"""

from __future__ import annotations

import functools
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from migrator.errors import MigrationNotFound
from migrator.hostlimits import HostLimits
from migrator.journal import rows
from migrator.journal.claims import NOT_IN_FLIGHT, Claim, ClaimSql
from migrator.journal.flavor import Flavor, flavor
from migrator.journal.lifecycle import translated
from migrator.journal.schema import events, migrations, workers
from migrator.journal.statement import Statement
from migrator.journal.store import Journal
from migrator.journal.writes import now
from migrator.machine import machine
from migrator.records import EventDraft, EventKind, Migration
from migrator.states import State, Trigger

_C = migrations.c
_W = workers.c
_PG_LOCK_TIMEOUT = "SELECT set_config('lock_timeout', :ms, true)"
_PG_WORKERS_LOCK = "LOCK TABLE workers IN SHARE ROW EXCLUSIVE MODE"
"""A registration's lock on PostgreSQL: it conflicts with itself and with every write of
the table (heartbeats wait the few milliseconds it lasts), never with reads."""
REGISTER_LOCK_TIMEOUT = 10.0
"""Seconds a registration waits for another one's lock (as SQLite's busy timeout)."""

Admit = Callable[[list["WorkerInfo"]], None]
"""A check of the workers registered, made in the registration's transaction: raising
refuses the registration."""


class _Sql:
    """The queue's statements for one database, compiled at first use."""

    def __init__(self, dialect: sa.Dialect) -> None:
        self.claim = ClaimSql(dialect)
        by_id = _W.id == sa.bindparam("wid")
        self.release = Statement(
            migrations.update()
            .where(_C.id == sa.bindparam("mid"), _C.fence == sa.bindparam("fence"))
            .values(lease_expires_at=sa.bindparam("at")),
            dialect,
        )
        self.unregister = Statement(workers.delete().where(by_id), dialect)
        self.register = Statement(workers.insert(), dialect)
        self.beat = Statement(
            workers.update()
            .where(by_id)
            .values(heartbeat_at=sa.bindparam("at"), stopping=sa.bindparam("stopping")),
            dialect,
        )
        silent = workers.delete().where(_W.heartbeat_at < sa.bindparam("before"))
        self.forget = Statement(silent, dialect)
        self.flavor = flavor(dialect.name)
        self.rows = Statement(sa.select(workers).order_by(_W.started_at, _W.id), dialect)
        self.server = dialect.name == "postgresql"
        self.lock = [self.flavor.sql(_PG_LOCK_TIMEOUT), _PG_WORKERS_LOCK]


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
    limits: dict[str, Any] | None = None
    """The limits it claims under (``HostLimits.as_dict``); None: an older worker's row."""
    lease_seconds: float | None = None
    """Its lease; None: an older worker's row."""
    holds: tuple[str, ...] = ()


class Queue:
    """The queue, the claims and the workers of one journal."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.engine = journal.engine
        self.url = journal.url

    @functools.cached_property
    def _sql(self) -> _Sql:
        return _Sql(self.engine.dialect)

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
        migration_id: str | None = None,
    ) -> Migration:
        """Journal a QUEUED migration: no owner, no lease, fence 1, no event yet.

        ``migration_id``: its id, chosen by the caller (a new UUID if None); a migration
        with that id already journaled is left as it is and returned (an idempotent
        retry), never written twice."""
        if migration_id is not None:
            found = self._existing(migration_id)
            if found is not None:
                return found
        at = now()
        values = rows.new_migration(
            migration_id=migration_id or str(uuid.uuid4()),
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
        values.update(state=State.QUEUED, owner=None, lease_expires_at=None)
        queued = Migration(**values)
        # The record written alone (no change), read back if its commit goes unanswered.
        self.journal.record_changes(queued, [], insert=True)
        return queued

    def _existing(self, migration_id: str) -> Migration | None:
        try:
            return self.journal.get(migration_id)
        except MigrationNotFound:
            return None

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

    # -- claiming and handing back -------------------------------------------------------

    def claim(self, worker_id: str, limits: HostLimits) -> Migration | None:
        """Take the oldest queued migration that fits ``limits`` (QUEUED -> NEW, owned by
        ``worker_id`` with a fresh lease and a higher fence), or None if none fits now."""
        claim = Claim(self._sql.claim, worker_id, limits, self.journal.lease_seconds)
        return self.journal.write(claim, verify=claim.verify)

    def requeue(self, migration: Migration, *, by: str) -> Migration:
        """Hand a claimed migration that was not begun back to the queue (NEW -> QUEUED),
        if ``by`` still holds it; else ``FenceLost`` or ``StateConflict``."""
        draft = EventDraft(kind=EventKind.QUEUE, detail={"requeued_by": by})
        return machine().do(
            migration.state,
            Trigger.REQUEUE,
            lambda state: self.journal.record(migration, draft, state=state, coordinator=by),
        )

    def abandon(self, migration: Migration, *, by: str) -> Migration:
        """End a migration no worker claimed: QUEUED -> FAILED, nothing having been called;
        ``StateConflict`` (or ``FenceLost``) if a worker claimed it meanwhile."""
        draft = EventDraft(kind=EventKind.ABORT, detail={"queued": True})
        reason = "aborted while queued"
        return machine().do(
            migration.state,
            Trigger.ABANDON,
            lambda state: self.journal.record(
                migration, draft, state=state, coordinator=by, reason=reason
            ),
        )

    def release(self, migration: Migration) -> bool:
        """Let the lease of ``migration`` lapse now, if we still own it: another worker
        takes it over at its next poll."""
        values = {"mid": migration.id, "fence": migration.fence, "at": now()}
        return self._write(self._sql.release, values) > 0

    # -- workers -------------------------------------------------------------------------

    def register(
        self,
        worker_id: str,
        *,
        concurrency: int,
        limits: dict[str, Any] | None = None,
        lease_seconds: float | None = None,
        admit: Admit | None = None,
    ) -> None:
        """Add (or replace) the worker's row, with its limits and lease.

        With ``admit``, the workers' rows are read and checked (``admit`` raising refuses
        the registration) in the same transaction as the write, under a lock that orders
        registrations (SQLite's write lock; on PostgreSQL a lock of the table): of two
        workers registering at once, the second checks against the first."""
        at = now()
        row = {
            "limits": limits,
            "lease_seconds": lease_seconds,
            "id": worker_id,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "concurrency": concurrency,
            "started_at": at,
            "heartbeat_at": at,
            "stopping": False,
        }
        sql = self._sql

        def replace(cursor: Any) -> None:
            if admit is not None:
                admit(self._registered(cursor))
            sql.unregister.execute(cursor, {"wid": worker_id})
            sql.register.execute(cursor, row)

        self.journal.write(replace)

    def _registered(self, cursor: Any) -> list[WorkerInfo]:
        """The workers' rows, oldest first, read under the registration lock."""
        sql = self._sql
        if sql.server:
            ms = str(int(REGISTER_LOCK_TIMEOUT * 1000))
            cursor.execute(sql.lock[0], {"ms": ms})
            cursor.execute(sql.lock[1])
        elif not cursor.connection.in_transaction:  # in a batch, the write lock is held
            cursor.execute("BEGIN IMMEDIATE")
        return [_worker_of(row, sql.flavor) for row in sql.rows.execute(cursor, {}).fetchall()]

    def beat(self, worker_id: str, *, stopping: bool = False) -> None:
        """Heartbeat the worker's row (and say whether it is stopping)."""
        self._write(self._sql.beat, {"wid": worker_id, "at": now(), "stopping": stopping})

    def unregister(self, worker_id: str) -> None:
        self._write(self._sql.unregister, {"wid": worker_id})

    def workers(self, *, alive_within: float | None = None) -> list[WorkerInfo]:
        """Workers, oldest first, each with what it holds; only those that heartbeat within
        ``alive_within`` seconds, if given (a killed worker's row stays until pruned)."""
        query = sa.select(workers).order_by(_W.started_at, _W.id)
        if alive_within is not None:
            query = query.where(_W.heartbeat_at >= now() - timedelta(seconds=alive_within))
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
        return self._write(self._sql.forget, {"before": now() - timedelta(seconds=silent_for)})

    def _write(self, statement: Statement, values: dict[str, Any]) -> int:
        """One idempotent statement through the journal's write path; the rows it changed."""
        return self.journal.write(lambda cursor: int(statement.execute(cursor, values).rowcount))


def _worker_of(row: tuple[Any, ...], f: Flavor) -> WorkerInfo:
    """A ``workers`` row read on a driver's cursor (in the table's column order)."""
    wid, hostname, pid, concurrency, started, beat, stopping, limits, lease = row
    started_at, heartbeat_at = f.time(started), f.time(beat)
    assert started_at is not None and heartbeat_at is not None  # NOT NULL columns
    return WorkerInfo(
        id=wid, hostname=hostname, pid=pid, concurrency=concurrency, started_at=started_at,
        heartbeat_at=heartbeat_at, stopping=bool(f.boolean(stopping)), limits=f.json(limits),
        lease_seconds=lease,
    )  # fmt: skip
