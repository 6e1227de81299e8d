"""The coordinator: the public front of the engine (docs/embedding.md).

It checks a request, journals the migration, picks the protocol's flow once and lets it
drive; ``recover`` and ``resolve`` rebuild a run from the journal and hand it to the same
flow. Everything that writes migration state goes through ``writeahead.py``; every driver
call through ``steps.py``; every retry through ``retry.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

from migrator import limits
from migrator.drivers.api import Driver
from migrator.drivers.registry import connect
from migrator.drivers.uri import redact_uri
from migrator.engine import lease, orphans
from migrator.engine.delivery import Delivery
from migrator.engine.flows import ABORTABLE, flow_for, postcopy
from migrator.engine.flows.base import Engine
from migrator.engine.observers import Hook, Hooks
from migrator.engine.orphans import Orphan, Recovered
from migrator.engine.preflight import Preflight
from migrator.engine.retry import RetryPolicy
from migrator.engine.run import Connect, Run, resume
from migrator.engine.steps import Gate, ProgressCallback, Steps
from migrator.engine.writeahead import WriteAhead
from migrator.errors import (
    FenceLost,
    HandedOver,
    JournalUnavailable,
    MigratorError,
    StateConflict,
    UsageError,
)
from migrator.failpoints import INERT, Failpoints
from migrator.flags import MigrateFlags
from migrator.journal.queue import Queue
from migrator.journal.store import Journal
from migrator.records import EventDraft, EventKind, Migration
from migrator.states import POSTCOPY_STATES, State

log = logging.getLogger(__name__)

RECOVER_WORKERS = 16
"""Orphans ``recover`` brings to an end at once, by default."""


def new_coordinator_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Coordinator:
    """Runs migrations and records every step in ``journal``.

    ``step_timeout`` (seconds, or None) turns a hung hook into a failure of its step;
    ``confirm_attempts`` and ``retry_backoff`` bound the retries of a failing Confirm (or
    Finish), after which the migration stays CONFIRMING for ``recover`` to finish.
    ``connect`` reaches a journaled host URI (recovery, resolve); ``failpoints`` are the
    crash-test points armed (none by default; the command line reads them from
    ``MIGRATOR_FAILPOINTS``). ``hooks`` are given the committed events by ``delivery``;
    ``gate`` is called at each step boundary, before the intent, and raises to stop
    driving (a worker's graceful stop, docs/workers.md).
    """

    def __init__(
        self,
        journal: Journal,
        *,
        coordinator_id: str | None = None,
        step_timeout: float | None = 600.0,
        confirm_attempts: int = 5,
        retry_backoff: float = 0.2,
        on_progress: ProgressCallback | None = None,
        hooks: Iterable[Hook] = (),
        connect: Connect = connect,
        failpoints: Failpoints = INERT,
        gate: Gate | None = None,
    ) -> None:
        if step_timeout is not None:
            limits.seconds(step_timeout, name="step_timeout")
        limits.integer(confirm_attempts, name="confirm_attempts", low=1, high=1000)
        limits.seconds(retry_backoff, name="retry_backoff", zero=True)
        self.journal = journal
        self.id = coordinator_id or new_coordinator_id()
        self.connect = connect
        self.delivery = Delivery(journal, Hooks(hooks), self.id)
        self._leases = lease.Keeper(journal)  # the one renewer of this coordinator's leases
        writes = WriteAhead(journal, self.id, failpoints)
        steps = Steps(
            writes, self._leases, step_timeout=step_timeout, on_progress=on_progress, gate=gate
        )
        retry = RetryPolicy(attempts=confirm_attempts, backoff=retry_backoff)
        self.engine = Engine(writes, steps, retry)
        self._preflight = Preflight(steps.runner, step_timeout)

    @property
    def step_timeout(self) -> float | None:
        return self.engine.steps.step_timeout

    def close(self) -> None:
        """Stop its threads once its hooks were given what it committed (bounded wait)."""
        self.engine.steps.close()
        self._leases.close()
        self.delivery.close()

    @contextlib.contextmanager
    def _driving(self, run: Run) -> Iterator[None]:
        """While ``run`` is driven its lease is renewed; once it stops, nothing it staged
        is left uncommitted (``WriteAhead.flush``)."""
        with self._leases.kept(run):
            yield
            self.engine.writes.flush(run)

    def migrate(
        self,
        domain: str,
        *,
        src: Driver,
        dst: Driver,
        flags: MigrateFlags = MigrateFlags.NONE,
        dname: str | None = None,
        bandwidth: int = 0,
        protocol: int | None = None,
    ) -> Migration:
        """Migrate ``domain`` from ``src`` to ``dst``; return the migration at its end state.

        Bad input raises a ``UsageError`` before anything is journaled or called.
        """
        params, version = self._preflight.check(
            domain, src, dst, MigrateFlags(flags), dname, bandwidth, protocol
        )
        migration = self.journal.new(
            domain=domain,
            dname=dname,
            src=redact_uri(src.uri),
            dst=redact_uri(dst.uri),
            protocol=version,
            flags=int(params.flags),
            bandwidth=bandwidth,
            owner=self.id,
        )
        return self._driven(Run(migration, src, dst, params, unwritten=True))

    # -- the queue (docs/workers.md) -------------------------------------------------------

    def submit(
        self,
        domain: str,
        *,
        src: Driver,
        dst: Driver,
        flags: MigrateFlags = MigrateFlags.NONE,
        dname: str | None = None,
        bandwidth: int = 0,
        protocol: int | None = None,
    ) -> Migration:
        """Check the request as ``migrate`` does, journal it QUEUED and return at once; a
        worker (``migrator.workers``) claims and drives it."""
        params, version = self._preflight.check(
            domain, src, dst, MigrateFlags(flags), dname, bandwidth, protocol
        )
        return Queue(self.journal).submit(
            domain=domain,
            dname=dname,
            src=redact_uri(src.uri),
            dst=redact_uri(dst.uri),
            protocol=version,
            flags=int(params.flags),
            bandwidth=bandwidth,
        )

    def drive(self, migration: Migration) -> Migration:
        """Drive a migration this coordinator claimed from the queue (state NEW, owned by
        ``self.id``) to an end state, reaching its journaled hosts with ``connect``."""
        return self._driven(resume(migration, [], self.connect))

    def _driven(self, run: Run) -> Migration:
        """``run`` driven to an end state, its lease renewed meanwhile (docs/recovery.md)."""
        try:
            with self._driving(run):
                flow_for(run.migration.protocol).drive(self.engine, run)
        finally:
            run.release()
        return run.migration

    # -- recovery, operators' commands ---------------------------------------------------

    def recover(
        self, *, dry_run: bool = False, steal: bool = False, workers: int = RECOVER_WORKERS
    ) -> list[Recovered]:
        """Bring every orphaned migration to a safe end (docs/recovery.md).

        A migration is claimed when its owner provably died (same host, process gone), its
        lease lapsed, or ``steal``; one whose owner is alive is reported and left alone.
        ``dry_run`` plans without claiming, calling or writing anything. The orphans are
        read as a stream, claimed a chunk at a time (``orphans.py``) and recovered by
        ``workers`` threads at once (each migration by one thread, its steps in order;
        their commits shared, ``docs/journal.md``); the reports come in the order the
        journal lists them, newest first. Hook events left undelivered are delivered too.
        """
        stopped: list[JournalUnavailable] = []  # the journal failed: the rest is not tried
        self.delivery.owed(steal=steal, dry_run=dry_run)
        window = 4 * max(1, workers)
        found = orphans.found(
            self.journal, self.id, stopped, chunk=window, steal=steal, claim=not dry_run
        )

        def one(orphan: Orphan) -> Recovered:
            if orphan.failed is not None:
                return orphans.report_stopped(self.journal, orphan.migration, orphan.failed)
            if stopped:
                return orphans.report_untouched(orphan.migration, f"not attempted: {stopped[0]}")
            try:
                return self.recover_found(orphan, dry_run=dry_run)
            except JournalUnavailable as exc:  # the journal fails them all: stop once, say why
                stopped.append(exc)
                return orphans.report_stopped(self.journal, orphan.migration, exc)

        first = next(found, None)
        if first is None:
            return []
        # The first alone: a journal that fails (locked, full) stops recovery once, before
        # other threads queue behind the same busy timeout.
        reports = [one(first)]
        if workers <= 1 or stopped:
            return reports + [one(o) for o in found]
        with ThreadPoolExecutor(workers, thread_name_prefix="migrator-recover") as pool:
            return reports + list(orphans.in_order(pool, one, found, window=window))

    def recover_found(self, orphan: Orphan, *, dry_run: bool = False) -> Recovered:
        """Carry out the plan of an orphan as ``orphans.found`` read (and claimed, if it
        was): ``recover`` for each orphan, a worker's takeover (docs/workers.md). A journal
        that fails raises ``JournalUnavailable``; any other trouble is in the report."""
        report = orphan.report
        if dry_run or orphan.because is None:
            return report
        if orphan.claimed is None:
            return dataclasses.replace(report, note="claimed by another coordinator")
        if orphans.lease_left(orphan.claimed) < 2 * self.journal.lease_seconds / 3:
            try:  # claimed a while ago with its chunk: still ours?
                self.journal.heartbeat(orphan.claimed)
            except FenceLost:
                return dataclasses.replace(report, note="claimed by another coordinator")
        try:
            return self._carry_out(orphan, orphan.claimed)
        except (HandedOver, JournalUnavailable):
            raise
        except MigratorError as exc:  # one migration's trouble must not stop the others
            return orphans.report_stopped(self.journal, orphan.migration, exc)

    def _carry_out(self, orphan: Orphan, claimed: Migration) -> Recovered:
        migration, plan, report = orphan.migration, orphan.plan, orphan.report
        try:
            run = resume(claimed, orphan.history, self.connect)
        except MigratorError as exc:
            return dataclasses.replace(report, note=f"cannot reach its hosts: {exc}")
        try:
            detail = {
                "from_state": str(migration.state),
                "action": str(plan.action),
                "plan": plan.text,
                "previous_owner": migration.owner,
                "because": orphan.because,
            }
            recovery = EventDraft(kind=EventKind.RECOVERY, detail=detail)
            self.engine.writes.note(run, recovery, then=True)  # commits with the plan's first
            with self._driving(run):
                flow_for(migration.protocol).carry_out(self.engine, run, plan)
        finally:
            run.release()
        return dataclasses.replace(
            report, claimed=True, result=run.migration.state, reason=run.migration.reason
        )

    def resolve(self, migration_id: str, *, running_on: str) -> Migration:
        """An operator's decision for an IN_DOUBT migration: where the domain really runs.

        ``src``: the destination is cleaned (Finish with ``cancelled=1``) and the source
        resumed; should the destination still report the domain running, the migration
        stays IN_DOUBT. ``dst``: the paused source is ended. The decision is journaled with
        the operator's coordinator id.
        """
        if running_on not in ("src", "dst"):
            raise UsageError(f"--running-on must be src or dst, not {running_on!r}")
        migration = self.journal.find(migration_id)
        if migration.state is not State.IN_DOUBT:
            raise UsageError(f"migration {migration.id} is {migration.state}, not IN_DOUBT")
        migration = self.journal.claim(migration, self.id)
        run = resume(migration, self.journal.history(migration.id), self.connect)
        reason = f"resolved by an operator: the domain runs on {running_on}"
        draft = EventDraft(kind=EventKind.RESOLVE, detail={"running_on": running_on})
        try:
            self.engine.writes.note(run, draft, reason=reason)
            with self._driving(run):
                flow_for(migration.protocol).resolve(self.engine, run, running_on)
        finally:
            run.release()
        return run.migration

    def abort(self, migration_id: str) -> Migration:
        """Persist an abort request; a running Perform notices it and the cancel path runs."""
        migration = self.journal.find(migration_id)
        if migration.state is State.QUEUED and self._abandon_queued(migration):
            return self.journal.get(migration.id)
        if not self.journal.request_abort(migration.id, states=ABORTABLE):
            current = self.journal.get(migration.id)
            if current.state in POSTCOPY_STATES:
                raise UsageError(postcopy.abort_refused(current.id, current.state))
            raise UsageError(
                f"migration {current.id} is {current.state}: only a migration that has not"
                " finished Perform can be aborted"
            )
        return self.journal.get(migration.id)

    def _abandon_queued(self, migration: Migration) -> bool:
        """End a migration no worker claimed yet: FAILED, nothing was called. False if a
        worker claimed it meanwhile (its run then honours the abort request)."""
        try:
            Queue(self.journal).abandon(migration, by=self.id)
        except (FenceLost, StateConflict):
            return False
        return True
