"""``Worker``: claims queued migrations and drives them, takes over orphaned ones, and
stops gracefully (docs/workers.md).

Every ``poll`` seconds (and whenever a job ends) the worker heartbeats its row in the
``workers`` table, takes over every migration whose owner died or whose lease lapsed
(``engine/orphans.py``: the same rule, claims and plans as ``migrator recover``), then claims
queued migrations (``Queue.claim``, under the per-host limits) while it has free slots.
A takeover therefore starts at most ``lease + poll`` seconds after the owner's last
heartbeat.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

import tenacity

from migrator import limits as bounds
from migrator.drivers.registry import connect
from migrator.engine import orphans
from migrator.engine.coordinator import Coordinator, new_coordinator_id
from migrator.engine.observers import Hook
from migrator.engine.run import Connect
from migrator.engine.steps import Gate
from migrator.errors import JournalError, JournalUnavailable
from migrator.failpoints import INERT, Failpoints
from migrator.hostlimits import UNLIMITED, HostLimits
from migrator.journal.queue import Queue
from migrator.journal.store import Journal
from migrator.workers import fleet
from migrator.workers.jobs import Jobs, StopLevel

log = logging.getLogger(__name__)

TAKEOVER_CHUNK = 32
"""Orphans a takeover reads the events of, and claims, in one query and one statement."""
JOURNAL_PAUSE = 0.05
"""Seconds a worker pauses after a journal error, before it waits for its next poll."""


class Worker:
    """Claims and drives queued migrations of ``journal``, ``concurrency`` at once.

    ``run()`` blocks until the worker stopped; ``start()`` runs it on a daemon thread (to
    embed a worker in a controller) and ``stop()`` asks it to stop: the first call claims
    nothing new, finishes what is past the point of no return and hands the rest over at
    their next step boundary; a second call (or ``stop(now=True)``) hands everything over
    at its next step boundary. The lease length is the journal's (``Journal.open(...,
    lease_seconds=...)``). ``by_lease_only`` takes a migration over only once its lease
    lapsed, never because its owner's process seems gone (``engine/ownership.py``).
    """

    def __init__(
        self,
        journal: Journal,
        *,
        concurrency: int = 4,
        limits: HostLimits = UNLIMITED,
        poll: float = 1.0,
        worker_id: str | None = None,
        step_timeout: float | None = 600.0,
        hooks: Iterable[Hook] = (),
        connect: Connect = connect,
        failpoints: Failpoints = INERT,
        by_lease_only: bool = False,
    ) -> None:
        bounds.integer(concurrency, name="concurrency", low=1)
        bounds.seconds(poll, name="poll")
        self.journal = journal
        self.queue = Queue(journal)
        self.id = worker_id or new_coordinator_id()
        self.concurrency = concurrency
        self.limits = limits
        self.poll = poll
        self.by_lease_only = by_lease_only
        self._hooks = tuple(hooks)
        self._coordinator_options = {
            "step_timeout": step_timeout,
            "connect": connect,
            "failpoints": failpoints,
        }
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.jobs = Jobs(self.queue, self._coordinator, self.id, self._wake.set)
        self.claimed = 0
        self.taken_over = 0
        self._registered = False
        self._guarded = self._journal_retry()

    def _coordinator(self, gate: Gate) -> Coordinator:
        """The worker's one coordinator, shared by its jobs, stopping them at ``gate``."""
        return Coordinator(
            self.journal,
            coordinator_id=self.id,
            hooks=self._hooks,
            gate=gate,
            **self._coordinator_options,  # type: ignore[arg-type]
        )

    # -- running and stopping ------------------------------------------------------------

    def start(self) -> Worker:
        """Register the worker (``register``: a refusal is raised here), then run it on a
        daemon thread; ``stop()`` then ``join()`` ends it."""
        if not self._registered:
            self.register()
        self._thread = threading.Thread(target=self.run, name=f"migrator-worker-{self.id}")
        self._thread.daemon = True
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> bool:
        """Wait for a started worker to end; whether it did."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stop(self, *, now: bool = False) -> None:
        """Claim nothing new; see the class docstring for what happens to running ones."""
        stopping = self._stopping.is_set()
        self.jobs.level = StopLevel.NOW if now or stopping else StopLevel.GRACEFUL
        self._stopping.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def register(self) -> None:
        """Check this worker's limits against the running workers' (``UsageError`` if they
        differ) and register it, with its limits and lease, in one transaction (two workers
        starting at once cannot both pass); ``run`` does it if not done."""
        lease = self.journal.lease_seconds
        self.queue.register(
            self.id,
            concurrency=self.concurrency,
            limits=self.limits.as_dict(),
            lease_seconds=lease,
            admit=fleet.limits_check(self.id, self.limits, lease=lease),
        )
        self._registered = True

    def run(self) -> None:
        """Claim, drive and take over until stopped; then wait for the jobs to end."""
        if not self._registered:
            self.register()
        log.info("worker %s started (concurrency %d)", self.id, self.concurrency)
        try:
            while not self._stopping.is_set():
                self._guarded(self.tick)
                self._idle()
            self._drain()
        finally:
            self._stopping.set()  # a worker whose run ended retries nothing
            self.jobs.close()
            self._guarded(lambda: self.queue.unregister(self.id))
            log.info("worker %s stopped", self.id)

    def _drain(self) -> None:
        while threads := self.jobs.threads():
            self._guarded(lambda: self.queue.beat(self.id, stopping=True))
            threads[0].join(self.poll)

    def _journal_retry(self) -> tenacity.Retrying:
        """What a worker does on a journal error (the journal has already retried what is
        transient): it logs it, pauses ``JOURNAL_PAUSE`` and tries again at the next poll,
        while it runs. It is never fatal; any other error is."""
        return tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(JournalError),
            stop=lambda _state: self.stopping,
            wait=tenacity.wait_fixed(JOURNAL_PAUSE),
            sleep=self._pause,
            after=_warn,
            retry_error_callback=lambda _state: None,
        )

    def _pause(self, seconds: float) -> None:
        time.sleep(seconds)
        self._idle()

    def _idle(self) -> None:
        """Wait for the next poll, or until woken; a stopping worker does not wait."""
        if not self._stopping.is_set():
            self._wake.wait(self.poll)
            self._wake.clear()

    # -- one poll ------------------------------------------------------------------------

    def tick(self) -> None:
        """One round: heartbeat, take over orphans, claim what fits; none once stopping."""
        if self.stopping:
            return
        self.queue.beat(self.id)
        self.take_over()
        self.claim()

    def take_over(self) -> int:
        """Claim every migration whose owner died or whose lease lapsed, as ``recover``
        does (``orphans.found``: read and claimed a chunk at a time), and start a job that
        carries out its plan."""
        stopped: list[JournalUnavailable] = []
        found = orphans.found(
            self.journal, self.id, stopped, chunk=TAKEOVER_CHUNK, steal=False, claim=True,
            claimable_only=True, by_lease_only=self.by_lease_only,
        )  # fmt: skip
        started = 0
        for orphan in found:
            if orphan.claimed is None or self.jobs.holds(orphan.migration.id):
                continue  # another worker claimed it first, or still ours on a job
            self.jobs.start(orphan.claimed, orphan=orphan)
            started += 1
        self.taken_over += started
        if stopped:
            raise stopped[0]  # retried at the next poll (``_journal_retry``)
        return started

    def claim(self) -> int:
        """Claim queued migrations that fit the limits while slots are free."""
        claimed = 0
        while not self._stopping.is_set() and self.jobs.busy() < self.concurrency:
            migration = self.queue.claim(self.id, self.limits)
            if migration is None:
                break
            self.jobs.start(migration)
            claimed += 1
        self.claimed += claimed
        return claimed


def _warn(state: tenacity.RetryCallState) -> None:
    assert state.outcome is not None
    log.warning("journal unavailable, retrying in the next poll: %s", state.outcome.exception())
