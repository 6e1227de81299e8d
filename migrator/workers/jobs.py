"""One migration a worker drives or takes over, on its own thread, and how it stops.

The jobs of a worker share its one ``Coordinator`` (one lease keeper, a hook runner per
job thread), built with ``Jobs.gate`` as its gate at every step boundary: when the worker
stops, a migration that has not reached the point of no return is handed over there,
before the next intent is committed, and one past it is finished (docs/workers.md,
"Graceful stop").
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from migrator.engine.coordinator import Coordinator
from migrator.engine.orphans import Orphan
from migrator.engine.run import Run
from migrator.engine.steps import Gate
from migrator.errors import FenceLost, HandedOver, JournalError, MigratorError, StateConflict
from migrator.journal.queue import Queue
from migrator.records import Migration
from migrator.states import State, Step

log = logging.getLogger(__name__)

BEFORE_NO_RETURN = frozenset(
    {
        Step.BEGIN,
        Step.PREPARE,
        Step.PREPARE_TUNNEL,
        Step.PERFORM,
        Step.DUMP_XML,
        Step.PREPARE2,
        Step.PERFORM2,
        Step.PREPARE1,
        Step.PERFORM1,
    }
)
"""Steps a stopping worker does not start: up to and including Perform, the migration can
still go back, so another worker may as well carry it on. From Finish on, it finishes."""


class StopLevel:
    """How a worker is stopping: 0 running, 1 graceful, 2 at the next step boundary."""

    RUNNING = 0
    GRACEFUL = 1
    NOW = 2


@dataclass
class Job:
    """A migration on its thread: claimed from the queue, or taken over (``orphan``: as
    ``orphans.found`` read and claimed it)."""

    migration: Migration
    orphan: Orphan | None = None
    thread: threading.Thread | None = None
    last: Migration | None = None
    """The migration as the gate last saw it: what a hand-over gives back."""


class Jobs:
    """Runs jobs for one worker; ``level`` says whether and how it is stopping."""

    def __init__(
        self,
        queue: Queue,
        make_coordinator: Callable[[Gate], Coordinator],
        worker_id: str,
        on_done: Callable[[], None],
    ) -> None:
        self.queue = queue
        self.coordinator = make_coordinator(self.gate)
        self.worker_id = worker_id
        self.on_done = on_done
        self.level = StopLevel.RUNNING
        self._lock = threading.Lock()
        self._running: dict[str, Job] = {}

    def busy(self) -> int:
        with self._lock:
            return sum(1 for job in self._running.values() if job.orphan is None)

    def holds(self, migration_id: str) -> bool:
        with self._lock:
            return migration_id in self._running

    def threads(self) -> list[threading.Thread]:
        with self._lock:
            return [job.thread for job in self._running.values() if job.thread is not None]

    def start(self, migration: Migration, *, orphan: Orphan | None = None) -> None:
        job = Job(migration, orphan)
        job.thread = threading.Thread(
            target=self._run, args=(job,), name=f"migrator-job-{migration.id[:8]}", daemon=True
        )
        with self._lock:
            self._running[migration.id] = job
        job.thread.start()

    def _run(self, job: Job) -> None:
        coordinator = self.coordinator
        try:
            self._drive(coordinator, job)
        except HandedOver:
            self._hand_over(job)
        except FenceLost:
            log.warning("migration %s was taken over by another worker", job.migration.id)
        except JournalError as exc:  # its lease lapses; a worker (maybe this one) takes over
            log.warning("migration %s left for takeover: %s", job.migration.id, exc)
        except Exception:  # a bug must not kill the worker: the lease lapses, others take over
            log.exception("migration %s stopped on an unexpected error", job.migration.id)
        finally:
            coordinator.engine.steps.close_thread()
            with self._lock:
                self._running.pop(job.migration.id, None)
            self.on_done()

    def _drive(self, coordinator: Coordinator, job: Job) -> None:
        if job.orphan is None:
            coordinator.drive(job.migration)
            return
        if job.migration.state is State.NEW:  # claimed, never begun: back to the queue
            self._requeue(job.migration)
            return
        report = coordinator.recover_found(job.orphan)
        log.info("took over migration %s: %s", job.migration.id, report.note or report.result)

    def close(self) -> None:
        """The jobs have ended: close the worker's coordinator."""
        self.coordinator.close()

    def gate(self, run: Run, step: Step) -> None:
        """The coordinator's gate: record where the job is; hand it over if stopping."""
        with self._lock:
            job = self._running.get(run.migration.id)
        if job is not None:
            job.last = run.migration
        if self.level == StopLevel.RUNNING:
            return
        if self.level == StopLevel.GRACEFUL and step not in BEFORE_NO_RETURN:
            return
        raise HandedOver(migration_id=run.migration.id, state=str(run.state))

    def _hand_over(self, job: Job) -> None:
        """Give a migration back at a step boundary: to the queue if nothing was begun,
        else let its lease lapse now so another worker takes it over at once."""
        held = job.last or job.migration
        if held.state is State.NEW:
            self._requeue(held)
        else:
            self.queue.release(held)
        log.info("handed over migration %s in %s", held.id, held.state)

    def _requeue(self, migration: Migration) -> None:
        try:
            self.queue.requeue(migration, by=self.worker_id)
        except (FenceLost, StateConflict) as exc:
            log.warning("migration %s not requeued: %s", migration.id, exc)
        except MigratorError as exc:
            log.warning("migration %s not requeued, left for takeover: %s", migration.id, exc)
