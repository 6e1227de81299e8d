"""The leases of the migrations a coordinator drives: the one place that renews them.

Whatever a driving thread is doing (a step, a retry's backoff, a slow observer hook such
as a ``--hook-command`` running to its timeout), the lease of each run it drives is renewed
every third of its length, so no live migration looks dead to ``recover``
(docs/journal.md, "Ownership: leases, heartbeats and fences"). One keeper thread serves
every run of a coordinator (a thread started and joined per migration would cost more
than a migration's commits); it stops renewing a run when the run ends or at the first
refused heartbeat (another owner took over), and exits when it finds no run to renew.

The keeper is also what the step path asks: ``renew`` before a call to a host that does
not refuse a stale fence itself (a synchronous renewal, so a coordinator stopped past its
lease never acts for the one that took over), and ``check`` while a hook runs (the
refusal the keeper thread met, raised on the driving thread without another write).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

from migrator.engine.run import Run
from migrator.errors import JournalError, MigratorError
from migrator.journal.store import Journal

log = logging.getLogger(__name__)


class Keeper:
    """Renews the lease of every run in a ``kept`` block, every ``lease_seconds / 3``."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._runs: dict[int, Run] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @contextlib.contextmanager
    def kept(self, run: Run) -> Iterator[None]:
        """Renew ``run``'s lease in the background while the block runs."""
        with self._lock:
            self._runs[id(run)] = run
            if self._thread is None:
                self._stop = threading.Event()
                self._thread = threading.Thread(
                    target=self._keep, args=(self._stop,), name="migrator-lease", daemon=True
                )
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._runs.pop(id(run), None)

    def renew(self, run: Run) -> None:
        """Renew ``run``'s lease now; raise what refused it (``FenceLost``, ...)."""
        self.check(run)
        self.journal.heartbeat(run.migration)

    def check(self, run: Run) -> None:
        """Raise the refusal the keeper thread met renewing ``run``'s lease, if it met one."""
        if run.lease_lost is not None:
            raise run.lease_lost

    def close(self) -> None:
        """Stop the keeper thread (a later ``kept`` starts another)."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _keep(self, stop: threading.Event) -> None:
        every = self.journal.lease_seconds / 3
        while not stop.wait(every):
            with self._lock:
                runs = list(self._runs.items())
                if not runs:
                    if self._thread is threading.current_thread():
                        self._thread = None
                    return
            for key, run in runs:
                if run.unwritten:
                    continue  # not in the journal yet: no lease to renew
                try:
                    self.journal.heartbeat(run.migration)  # the newest record: its fence
                except MigratorError as exc:
                    log.warning("lease of migration %s not renewed: %s", run.migration.id, exc)
                    if isinstance(exc, JournalError):  # the driving thread stops at once
                        run.lease_lost = exc
                    with self._lock:
                        if self._runs.get(key) is run:
                            del self._runs[key]
