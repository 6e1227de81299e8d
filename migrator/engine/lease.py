"""The lease of a migration being driven, renewed by a thread of its own.

Whatever the driving thread is doing (a step, a retry's backoff, a slow observer hook
such as a ``--hook-command`` running to its timeout), the lease is renewed every third of
its length, so no live migration looks dead to ``recover`` (docs/journal.md,
"Ownership: leases, heartbeats and fences"). The keeper stops when the run ends, or at
the first refused heartbeat: another owner took over, and the run's next fenced write
finds out.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

from migrator.engine.run import Run
from migrator.errors import MigratorError
from migrator.journal.store import Journal

log = logging.getLogger(__name__)


@contextlib.contextmanager
def kept(journal: Journal, run: Run) -> Iterator[None]:
    """Renew ``run``'s lease in the background while the block runs."""
    stop = threading.Event()
    keeper = threading.Thread(
        target=_keep, args=(journal, run, stop), name="migrator-lease", daemon=True
    )
    keeper.start()
    try:
        yield
    finally:
        stop.set()
        keeper.join()


def _keep(journal: Journal, run: Run, stop: threading.Event) -> None:
    every = journal.lease_seconds / 3
    while not stop.wait(every):
        try:
            journal.heartbeat(run.migration)  # the newest record: its fence is current
        except MigratorError as exc:
            log.warning("lease of migration %s not renewed: %s", run.migration.id, exc)
            return
