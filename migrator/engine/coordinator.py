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
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor

from migrator import limits
from migrator.convergence.policy import MAX_BANDWIDTH_MIB, MAX_DOWNTIME_MS, Policy
from migrator.drivers.api import Driver
from migrator.drivers.registry import connect
from migrator.drivers.uri import redact_uri
from migrator.engine import hostmap, lease, orphans
from migrator.engine.applier import PostcopyFactory
from migrator.engine.delivery import Delivery
from migrator.engine.flows import ABORTABLE, flow_for, postcopy
from migrator.engine.flows.base import Engine
from migrator.engine.flows.postcopy import starter
from migrator.engine.observers import Hook, Hooks
from migrator.engine.orphans import Orphan, Recovered
from migrator.engine.ownership import new_owner_id
from migrator.engine.preflight import Preflight
from migrator.engine.retry import RetryPolicy
from migrator.engine.run import Connect, Run, resume
from migrator.engine.runtime import Convergence
from migrator.engine.steps import (
    PROBE_PATIENCE,
    Gate,
    ProgressCallback,
    Steps,
    patience,
)
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
from migrator.records import EventDraft, EventKind, Migration, Request, RequestKind
from migrator.states import POSTCOPY_STATES, State

log = logging.getLogger(__name__)

RECOVER_WORKERS = 16
"""Orphans ``recover`` brings to an end at once, by default."""


def new_coordinator_id() -> str:
    """``HOSTNAME:PID:RANDOM:PLACE`` (``ownership.new_owner_id``)."""
    return new_owner_id()


class Coordinator:
    """Runs migrations and records every step in ``journal``.

    ``step_timeout`` (seconds, or None) turns a hung hook into a failure of its step;
    ``confirm_attempts`` and ``retry_backoff`` bound the retries of a failing Confirm (or
    Finish), after which the migration stays CONFIRMING for ``recover`` to finish.
    ``connect`` reaches a journaled host URI (recovery, resolve); ``failpoints`` are the
    crash-test points armed (none by default; the command line reads them from
    ``MIGRATOR_FAILPOINTS``). ``hooks`` are given the committed events by ``delivery``;
    ``gate`` is called at each step boundary, before the intent, and raises to stop
    driving (a worker's graceful stop, docs/workers.md). ``probe_patience`` (seconds) is how
    long a probe that cannot reach its host keeps asking before the host counts as unable
    to tell (each attempt journaled; ``Steps.probe``). ``postcopy`` gives a run being
    driven its post-copy entry point (``start_postcopy(reason)``), by default the switch
    of ``flows/postcopy.py`` (docs/convergence.md, docs/postcopy.md).
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
        probe_patience: float = PROBE_PATIENCE,
        postcopy: PostcopyFactory | None = None,
    ) -> None:
        if step_timeout is not None:
            limits.seconds(step_timeout, name="step_timeout")
        limits.integer(confirm_attempts, name="confirm_attempts", low=1, high=1000)
        limits.seconds(retry_backoff, name="retry_backoff", zero=True)
        limits.seconds(probe_patience, name="probe_patience", zero=True)
        self.journal = journal
        self.id = coordinator_id or new_coordinator_id()
        self.connect = connect
        self.delivery = Delivery(journal, Hooks(hooks), self.id)
        self._leases = lease.Keeper(journal)  # the one renewer of this coordinator's leases
        writes = WriteAhead(journal, self.id, failpoints)
        self.convergence = Convergence(journal, self.id, postcopy or starter)
        steps = Steps(
            writes, self._leases, step_timeout=step_timeout, on_progress=on_progress, gate=gate,
            probe_patience=patience(probe_patience, retry_backoff),
            beside=self.convergence.beside,
        )  # fmt: skip
        retry = RetryPolicy(attempts=confirm_attempts, backoff=retry_backoff)
        self.engine = Engine(writes, steps, retry)
        self._preflight = Preflight(lambda: steps.runner, step_timeout)

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
        policy: Policy | None = None,
    ) -> Migration:
        """Migrate ``domain`` from ``src`` to ``dst``; return the migration at its end state.

        ``policy``: how Perform converges (docs/convergence.md); its ``bandwidth_mib``
        applies when ``bandwidth`` is 0. Bad input, and a policy setting the source's
        driver does not honour, raise a ``UsageError`` before anything is journaled or
        called.
        """
        bandwidth = bandwidth or (policy.bandwidth_mib if policy is not None else None) or 0
        params, version = self._preflight.check(
            domain, src, dst, MigrateFlags(flags), dname, bandwidth, protocol, policy
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
        return self._driven(Run(migration, src, dst, params, unwritten=True, policy=policy))

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
        policy: Policy | None = None,
        migration_id: str | None = None,
    ) -> Migration:
        """Check the request as ``migrate`` does, journal it QUEUED (with its policy) and
        return at once; a worker claims and drives it. ``migration_id``: the id to give it
        (``Queue.submit``: a retry with the same id queues nothing more)."""
        bandwidth = bandwidth or (policy.bandwidth_mib if policy is not None else None) or 0
        params, version = self._preflight.check(
            domain, src, dst, MigrateFlags(flags), dname, bandwidth, protocol, policy
        )
        queued = Queue(self.journal).submit(
            domain=domain,
            dname=dname,
            src=redact_uri(src.uri),
            dst=redact_uri(dst.uri),
            protocol=version,
            flags=int(params.flags),
            bandwidth=bandwidth,
            migration_id=migration_id,
        )
        if policy is not None:
            self.convergence.requests.set_policy(queued.id, policy.as_dict())
        return queued

    def drive(self, migration: Migration) -> Migration:
        """Drive a migration this coordinator claimed from the queue (state NEW, owned by
        ``self.id``) to an end state, reaching its journaled hosts with ``connect``."""
        return self._driven(self.convergence.resumed(resume(migration, [], self.connect)))

    def _driven(self, run: Run) -> Migration:
        """``run`` driven to an end state, its lease renewed meanwhile (docs/recovery.md)."""
        try:
            with self._driving(run):
                flow_for(run.migration.protocol).drive(self.engine, run)
        finally:
            self._release(run)
        return run.migration

    def _release(self, run: Run) -> None:
        run.release()
        self.convergence.ended(run)

    # -- recovery, operators' commands ---------------------------------------------------

    def recover(
        self,
        *,
        dry_run: bool = False,
        steal: bool = False,
        workers: int = RECOVER_WORKERS,
        by_lease_only: bool = False,
        host_map: Mapping[str, str] | None = None,
    ) -> list[Recovered]:
        """Bring every orphaned migration to a safe end (docs/recovery.md).

        A migration is claimed when its owner provably died (same host and PID namespace,
        process gone; never with ``by_lease_only``), its lease lapsed, or ``steal``; one
        whose owner is alive is reported and left alone.
        ``dry_run`` plans without claiming, calling or writing anything. The orphans are
        read as a stream, claimed a chunk at a time (``orphans.py``) and recovered by
        ``workers`` threads at once (each migration by one thread, its steps in order;
        their commits shared, ``docs/journal.md``); the reports come in the order the
        journal lists them, newest first. Hook events left undelivered are delivered too.

        ``host_map`` maps a journaled host URI (as ``show`` prints it) to where that host
        is reached now; each map is checked first (``hostmap.py``: a host there that is
        not the one the journal met refuses it, UsageError, nothing claimed) and noted in
        the recovery event of each migration it applies to.
        """
        mapped: dict[str, str] = {}
        if host_map:
            check = None if dry_run else self.connect
            mapped = hostmap.prepared(host_map, hostmap.pending(self.journal), check)
        stopped: list[JournalUnavailable] = []  # the journal failed: the rest is not tried
        self.delivery.owed(steal=steal, dry_run=dry_run, by_lease_only=by_lease_only)
        window = 4 * max(1, workers)
        found = orphans.found(
            self.journal,
            self.id,
            stopped,
            chunk=window,
            steal=steal,
            claim=not dry_run,
            by_lease_only=by_lease_only,
        )

        def one(orphan: Orphan) -> Recovered:
            if orphan.failed is not None:
                return orphans.report_stopped(self.journal, orphan.migration, orphan.failed)
            if stopped:
                return orphans.report_untouched(orphan.migration, f"not attempted: {stopped[0]}")
            try:
                return self.recover_found(orphan, dry_run=dry_run, host_map=mapped)
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

    def recover_found(
        self, orphan: Orphan, *, dry_run: bool = False, host_map: Mapping[str, str] | None = None
    ) -> Recovered:
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
            return self._carry_out(orphan, orphan.claimed, host_map or {})
        except (HandedOver, JournalUnavailable):
            raise
        except MigratorError as exc:  # one migration's trouble must not stop the others
            return orphans.report_stopped(self.journal, orphan.migration, exc)

    def _carry_out(
        self, orphan: Orphan, claimed: Migration, host_map: Mapping[str, str]
    ) -> Recovered:
        migration, plan, report = orphan.migration, orphan.plan, orphan.report
        connect = hostmap.connecting(self.connect, host_map)
        try:
            run = self.convergence.resumed(resume(claimed, orphan.history, connect))
        except MigratorError as exc:
            return dataclasses.replace(report, note=f"cannot reach its hosts: {exc}")
        try:
            detail = orphans.recovery_detail(orphan, hostmap.noted(host_map, migration))
            recovery = EventDraft(kind=EventKind.RECOVERY, detail=detail)
            self.engine.writes.note(run, recovery, then=True)  # commits with the plan's first
            with self._driving(run):
                flow_for(migration.protocol).carry_out(self.engine, run, plan)
        finally:
            self._release(run)
        return dataclasses.replace(
            report, claimed=True, result=run.migration.state, reason=run.migration.reason
        )

    def resolve(self, migration_id: str, *, running_on: str) -> Migration:
        """An operator's decision for an IN_DOUBT migration: where the domain really runs.
        ``src``: the destination is cleaned (Finish with ``cancelled=1``) and the source
        resumed (the migration stays IN_DOUBT if the destination still reports the domain
        running); ``dst``: the paused source is ended. Journaled with our coordinator id."""
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
            self._release(run)
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

    # -- runtime requests (docs/convergence.md) ---------------------------------------------

    def set_downtime(self, migration_id: str, ms: int) -> Request:
        """Journal a request to allow ``ms`` of downtime to a migration in Perform; whoever
        drives it applies it. A ``UsageError`` if the migration is not in Perform."""
        limits.integer(ms, name="downtime (ms)", low=1, high=MAX_DOWNTIME_MS)
        return self.convergence.request(migration_id, RequestKind.DOWNTIME, ms)

    def set_speed(self, migration_id: str, mib: int) -> Request:
        """Journal a request to send at ``mib`` MiB/s, as ``set_downtime`` (or post-copy)."""
        limits.integer(mib, name="speed (MiB/s)", low=1, high=MAX_BANDWIDTH_MIB)
        return self.convergence.request(migration_id, RequestKind.SPEED, mib)

    def request_postcopy(self, migration_id: str) -> Request:  # now (force-complete)
        return self.convergence.request(migration_id, RequestKind.POSTCOPY, None)

    def _abandon_queued(self, migration: Migration) -> bool:
        """End a migration no worker claimed yet: FAILED, nothing was called. False if a
        worker claimed it meanwhile (its run then honours the abort request)."""
        try:
            Queue(self.journal).abandon(migration, by=self.id)
        except (FenceLost, StateConflict):
            return False
        return True
