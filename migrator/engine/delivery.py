"""Hook events delivered from the journal's committed events, by one thread per coordinator.

The engine never calls a hook (``observers.py``): a step's commit only wakes this
thread (``Journal.listen``), which reads the migration's events past its delivery cursor
from the journal, calls the hooks for each in order, then moves the cursor forward in the
journal (``migration_deliveries``). So a hook, however slow, never delays a step nor
lengthens the blackout between Perform and Finish, and delivery is at least once:

- one thread delivers a coordinator's migrations, each migration's events in seq order;
- the cursor is moved after the hooks were called (every ``SAVE_EVERY`` seconds during a
  long batch, and at its end), so a crash repeats at most what was delivered since;
- a migration's cursor is written before its first hook is called, and removed once it
  finished with every event delivered: ``owed`` finds the finished ones a crash left
  undelivered, and ``recover`` delivers them (``Coordinator.recover``); a migration that
  ``recover`` or a worker takes over is delivered from its cursor by the new owner, whose
  first commit wakes its own thread (no cursor: from its first event);
- ``close`` waits (bounded) until what was committed is delivered.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from migrator.engine.observers import ENDS, HookEvent, Hooks, names_for
from migrator.engine.ownership import left_behind
from migrator.errors import JournalUnavailable, MigratorError
from migrator.journal.store import Journal
from migrator.records import Entry, Migration
from migrator.states import TERMINAL, State

log = logging.getLogger("migrator.hooks")

DRAIN_SECONDS = 300.0
"""How long ``close`` waits for the hooks to be given what was committed."""
SAVE_EVERY = 0.5
"""Seconds of hook calls after which the cursor is saved before the batch ends."""
REMEMBERED = 10_000
"""Migrations whose cursor the thread keeps in memory (the most recent)."""
RETRY_SECONDS = 1.0
"""The pause after the journal failed a delivery, before it is tried again."""
RETRIES = 5
"""Times a delivery the journal fails is tried again; then its cursor is left for
``recover``."""


def as_of(migration: Migration, entry: Entry) -> Migration:
    """The migration as of ``entry``'s event: its state, seq, time and reason then; owner,
    fence and lease as journaled now."""
    event = entry.event
    return dataclasses.replace(
        migration,
        state=event.state,
        last_seq=event.seq,
        updated_at=event.at,
        reason=entry.reason,
        finished_at=migration.finished_at if event.state in TERMINAL else None,
    )


class Delivery:
    """Delivers the hook events of the migrations ``owner`` commits (or is told of)."""

    def __init__(self, journal: Journal, hooks: Hooks, owner: str) -> None:
        self.journal = journal
        self.hooks = hooks
        self.owner = owner
        self._pending: dict[str, None] = {}  # migration ids, in the order first told
        self._busy = False
        self._closing = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        # Per migration: the seq delivered and the state as of it, kept once it is done too
        # (its row is then removed: a later commit must not deliver it from the start).
        self._cursors: collections.OrderedDict[str, tuple[int, State]] = collections.OrderedDict()
        self._failures: collections.Counter[str] = collections.Counter()
        self._stop_listening: Callable[[], None] | None = None
        if hooks:
            self._stop_listening = journal.listen(self._committed)

    def _committed(self, migration_id: str, coordinator: str | None) -> None:
        if coordinator == self.owner:
            self.wake(migration_id)

    def wake(self, migration_id: str) -> None:
        """Deliver what the journal holds past the migration's cursor (returns at once)."""
        if not self.hooks:
            return
        with self._cond:
            self._pending[migration_id] = None
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="migrator-hooks", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def owed(
        self, *, steal: bool = False, dry_run: bool = False, by_lease_only: bool = False
    ) -> list[str]:
        """Deliver the hook events that the coordinators of finished migrations left
        undelivered when they died (or their lease lapsed; any, with ``steal``): what
        ``recover`` does besides its orphans. The ids of those migrations (with
        ``dry_run``, of those it would deliver, and nothing is delivered)."""
        if not self.hooks:
            return []
        taken = [
            m.id
            for m in self.journal.owed(ENDS)
            if left_behind(m, steal=steal, by_lease_only=by_lease_only)
        ]
        for migration_id in [] if dry_run else taken:
            self.wake(migration_id)
        return taken

    def drain(self, timeout: float = DRAIN_SECONDS) -> bool:
        """Wait until every migration told of is delivered; False if ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = DRAIN_SECONDS) -> None:
        """Stop listening, deliver what was committed (for ``timeout`` at most), stop."""
        if self._stop_listening is not None:
            self._stop_listening()
        if not self.drain(timeout):
            log.warning("hook events left undelivered after %.0f s: recover delivers them", timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    def _run(self) -> None:
        try:
            while self._next():
                pass
        finally:  # ended, or a hook raised what no ``except Exception`` stops
            with self._cond:
                self._thread, self._busy = None, False
                self._cond.notify_all()

    def _next(self) -> bool:
        """Deliver the migrations told of so far; False once closing."""
        with self._cond:
            while not self._pending and not self._closing:
                self._cond.wait()
            if self._closing:
                return False
            chosen, self._pending = list(self._pending), {}
            self._busy = True
        failed = [mid for mid in chosen if not self._deliver(mid)]
        with self._cond:
            self._busy = False
            for mid in failed:
                self._pending.setdefault(mid, None)
            self._cond.notify_all()
            if failed:
                self._cond.wait(RETRY_SECONDS)
        return True

    def _deliver(self, migration_id: str) -> bool:
        """Call the hooks for the migration's events past its cursor; False if the journal
        failed for a while (it is tried again), True otherwise."""
        try:
            self._deliver_events(migration_id)
        except JournalUnavailable as exc:
            self._failures[migration_id] += 1
            if not exc.transient or self._failures[migration_id] > RETRIES:
                del self._failures[migration_id]  # its cursor stays behind, for ``recover``
                log.warning("hook events of migration %s not delivered: %s", migration_id, exc)
                return True
            log.warning("hook events of migration %s not delivered yet: %s", migration_id, exc)
            return False
        except MigratorError as exc:  # deleted (pruned) meanwhile, say
            log.warning("hook events of migration %s not delivered: %s", migration_id, exc)
        except Exception:  # a bug here must not stop delivery for the other migrations
            log.exception("hook events of migration %s not delivered", migration_id)
        self._failures.pop(migration_id, None)
        return True

    def _deliver_events(self, migration_id: str) -> None:
        seq, previous = self._cursor(migration_id)
        entries = self.journal.entries_from(migration_id, max(seq, 1))
        if seq > 0 and entries and entries[0].event.seq == seq:
            previous = entries.pop(0).event.state
        if not entries:
            return
        migration = self.journal.get(migration_id)
        saved = time.monotonic()
        for entry in entries:
            event = entry.event
            for name in names_for(event, previous):
                self.hooks.call(HookEvent(name, as_of(migration, entry), event))
            previous = event.state
            self._remember(migration_id, event.seq, previous)
            if time.monotonic() - saved >= SAVE_EVERY:
                self.journal.deliver_up_to(migration_id, event.seq)
                saved = time.monotonic()
        last = entries[-1].event.seq
        done = migration.state in TERMINAL and last >= migration.last_seq
        self.journal.deliver_up_to(migration_id, last, done=done)

    def _remember(self, migration_id: str, seq: int, state: State) -> None:
        self._cursors[migration_id] = (seq, state)
        self._cursors.move_to_end(migration_id)
        if len(self._cursors) > REMEMBERED:
            self._cursors.popitem(last=False)

    def _cursor(self, migration_id: str) -> tuple[int, State]:
        """The seq delivered so far and the state as of it; a migration never delivered
        gets its cursor written first, so that a crash leaves it owed (``owed``)."""
        known = self._cursors.get(migration_id)
        if known is not None:
            return known
        seq = self.journal.delivered(migration_id)
        if seq is None:
            seq = 0
            self.journal.deliver_up_to(migration_id, 0)
        return seq, State.NEW
