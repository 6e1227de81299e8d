"""``Journal``: the front door of the journal database, and the one owner of its connections.

The work is done by one module per job (``docs/journal.md``): ``lifecycle`` (engine,
schema revision, upgrades), ``writes`` (the compare-and-set writes, leases and fencing,
in one transaction manager), ``reads`` (records read back) and ``analytics`` (counts and
durations), whose methods ``Reads`` (``reading``) gives the journal. Database errors are
translated into ``JournalUnavailable`` / ``SchemaOutOfDate`` at those edges and nowhere
else.
"""

from __future__ import annotations

import builtins
import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa

from migrator import limits
from migrator.journal import DEFAULT_URL, lifecycle, queries, resilience
from migrator.journal.flavor import flavor
from migrator.journal.reading import Reads
from migrator.journal.reads import Db
from migrator.journal.writes import Writer
from migrator.records import KEEP_REASON, Change, EventDraft, Migration, Reason
from migrator.redaction import redact
from migrator.states import State

LEASE_SECONDS = 30.0
T = TypeVar("T")
Listener = Callable[[str, str | None], None]
"""Told ``(migration_id, coordinator)`` after each commit of a migration's events."""
_DELIVERED = (
    "INSERT INTO migration_deliveries (migration_id, seq) VALUES (:mid, :seq)"
    " ON CONFLICT (migration_id) DO UPDATE SET seq = {greatest}(migration_deliveries.seq,"
    " excluded.seq)"
)
_ALL_DELIVERED = "DELETE FROM migration_deliveries WHERE migration_id = :mid"
_WEBHOOK_CURSOR = (
    "INSERT INTO webhook_cursors (endpoint, position, updated_at) VALUES (:endpoint, :position,"
    " :at) ON CONFLICT (endpoint) DO UPDATE SET position = {greatest}(webhook_cursors.position,"
    " excluded.position), updated_at = excluded.updated_at"
)


class Journal(Reads):
    """The journal of migrations. Open it with ``Journal.open(url)``; its reads are
    ``Reads``'s methods (``reading.py``)."""

    def __init__(self, engine: sa.Engine, *, lease_seconds: float = LEASE_SECONDS) -> None:
        self.engine = engine
        self.url = redact(engine.url.render_as_string(hide_password=False))
        self.lease_seconds = lease_seconds
        self._writer = Writer(engine, self.url, lease_seconds=lease_seconds)
        self._flavor = flavor(engine.dialect.name)
        self._listeners: tuple[Listener, ...] = ()
        self._listening = threading.Lock()

    @classmethod
    def open(
        cls,
        url: str = DEFAULT_URL,
        *,
        upgrade: bool | None = None,
        check: bool = True,
        lease_seconds: float = LEASE_SECONDS,
    ) -> Journal:
        """Open the journal at ``url``; SQLite files are created and upgraded on first use.

        A PostgreSQL journal must be upgraded explicitly (``migrator db upgrade``, or
        ``upgrade=True``); an out-of-date schema raises ``SchemaOutOfDate``. ``check=False``
        skips the schema check (for ``db current`` and ``db upgrade``). ``lease_seconds``:
        how long an owner's lease lasts without a write or heartbeat (docs/journal.md).
        """
        limits.seconds(lease_seconds, name="lease_seconds")
        engine = lifecycle.create_engine(url)
        journal = cls(engine, lease_seconds=lease_seconds)
        auto = engine.dialect.name == "sqlite" if upgrade is None else upgrade
        try:
            if check:
                lifecycle.ensure_schema(engine, journal.url, auto_upgrade=auto)
            journal._writer.pin.take_file()
        except BaseException:
            engine.dispose()
            raise
        return journal

    def close(self) -> None:
        self._writer.close()
        self.engine.dispose()

    def __enter__(self) -> Journal:
        return self

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sa.Connection]:
        with lifecycle.translated(self.url), self.engine.connect() as conn:
            yield conn

    def _read(self, query: Callable[[Db], T]) -> T:
        """``query`` on a connection of its own, retried while the database restarts."""
        errors = self.engine.dialect.loaded_dbapi.Error

        def attempt() -> T:
            self._writer.pin.check_file()
            with self._reading() as conn:
                raw = conn.connection.driver_connection
                return query(Db(raw, self._flavor, self.url, errors))

        return resilience.retried(attempt, self.engine)

    # -- schema -------------------------------------------------------------------------

    def revision(self) -> str | None:
        """The schema revision stamped in the database (None for an empty database)."""
        return lifecycle.revision(self.engine, self.url)

    def upgrade(self, revision: str = "head") -> None:
        """Apply the Alembic revisions up to ``revision``; each commits with its stamp.

        A journal stamped with a revision this code does not know (a newer migrator wrote
        it) is refused, never touched.
        """
        lifecycle.upgrade(self.engine, self.url, revision)

    # -- writes -------------------------------------------------------------------------

    def new(
        self,
        *,
        domain: str,
        src: str,
        dst: str,
        protocol: int,
        flags: int,
        bandwidth: int,
        owner: str,
        dname: str | None = None,
    ) -> Migration:
        """A NEW migration's record owned by ``owner`` with fence 1, not yet written:
        ``create`` writes it alone, ``record_changes(..., insert=True)`` with its first
        events (one transaction instead of two)."""
        return self._writer.new(
            domain=domain,
            dname=dname,
            src=src,
            dst=dst,
            protocol=protocol,
            flags=flags,
            bandwidth=bandwidth,
            owner=owner,
        )

    def create(self, **fields: Any) -> Migration:
        """Record a NEW migration (``fields`` as ``new``'s) owned by its ``owner``, fence 1."""
        return self._writer.create(self.new(**fields))

    def record(
        self,
        migration: Migration,
        draft: EventDraft,
        *,
        state: State,
        coordinator: str | None = None,
        reason: Reason = KEEP_REASON,
    ) -> Migration:
        """Append ``draft`` and move the migration to ``state``, in one transaction.

        ``reason`` replaces the migration's reason (None clears it); ``KEEP_REASON`` keeps it.

        Conditional on the migration still being in ``migration.state`` with
        ``migration.fence``; otherwise nothing is written and ``FenceLost`` (another
        coordinator took it) or ``StateConflict`` (its state moved) is raised.
        """
        changes = [Change(draft, state, reason)]
        recorded = self._writer.record(migration, changes, coordinator=coordinator)[-1]
        self._committed(migration.id, coordinator)
        return recorded

    def record_changes(
        self,
        migration: Migration,
        changes: Sequence[Change],
        *,
        coordinator: str | None = None,
        insert: bool = False,
        each: bool = True,
        unless_aborted: bool = False,
    ) -> list[Migration]:
        """Append several events in one transaction, as ``record`` appends one; the
        migration ends in the last change's state. Returns the migration as of each event.

        ``insert``: ``migration`` is a record from ``new``, written in the same transaction
        (with no change, written alone). Unless ``each``, only the last is returned.
        ``unless_aborted``: nothing is written, and ``AbortRequested`` raised, if an abort
        of the migration is requested by the time of the commit (the compare-and-set
        includes it: docs/journal.md, "Commits")."""
        if not changes:
            return [self._writer.create(migration)] if insert else [migration]
        recorded = self._writer.record(
            migration,
            changes,
            coordinator=coordinator,
            insert=insert,
            each=each,
            unless_aborted=unless_aborted,
        )
        self._committed(migration.id, coordinator)
        return recorded

    # -- commits as they happen, and the hook delivery cursors --------------------------

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Tell ``listener`` of every commit of events through this ``Journal`` (``record``
        and ``record_changes``), after it, on the committing thread: it must return at
        once (a hook delivery thread is woken so). Returns the call that stops it."""
        with self._listening:
            self._listeners = (*self._listeners, listener)

        def stop() -> None:
            with self._listening:
                self._listeners = tuple(x for x in self._listeners if x is not listener)

        return stop

    def _committed(self, migration_id: str, coordinator: str | None) -> None:
        for listener in self._listeners:
            listener(migration_id, coordinator)

    def deliver_up_to(self, migration_id: str, seq: int, *, done: bool = False) -> None:
        """Move the migration's hook delivery cursor forward to ``seq`` (never back).
        ``done``: the migration is finished and every event of it delivered: the cursor
        is removed (docs/embedding.md, "Hooks and metrics")."""
        greatest = "max" if self._flavor.name == "sqlite" else "greatest"
        sql = self._flavor.sql(_ALL_DELIVERED if done else _DELIVERED.format(greatest=greatest))
        values = {"mid": migration_id, "seq": seq}
        self._writer.run(lambda cursor: cursor.execute(sql, values))

    def set_webhook_position(self, endpoint: str, position: int) -> None:
        """Move webhook ``endpoint``'s cursor forward to ``position`` (never back): every
        event up to it was delivered (docs/webhooks.md)."""
        greatest = "max" if self._flavor.name == "sqlite" else "greatest"
        sql = self._flavor.sql(_WEBHOOK_CURSOR.format(greatest=greatest))
        at = self._flavor.bind_time(datetime.now(UTC))
        values = {"endpoint": endpoint, "position": position, "at": at}
        self._writer.run(lambda cursor: cursor.execute(sql, values))

    def write(
        self,
        work: Callable[[Any], T],
        *,
        verify: Callable[[sa.Connection], T | None] | None = None,
    ) -> T:
        """``work(cursor)`` committed in one transaction of the journal's write path: on a
        checked connection of the committer (a journal replaced since it was opened raises
        ``JournalReplaced``), retried while its error is transient (``Writer.run``). A
        commit that went unanswered is read back with ``verify``; without it ``work`` must
        be idempotent. ``cursor`` is the driver's: statements bound as ``Statement`` binds
        them. For the writes of other modules of the journal (``queue``)."""
        return self._writer.run(work, verify=verify)

    def set_progress(self, migration: Migration, progress: dict[str, Any]) -> None:
        """Keep the last progress sample of a long step (not an event: it is overwritten);
        raise FenceLost if another owner took over."""
        self._writer.set_progress(migration, progress)

    def heartbeat(self, migration: Migration) -> None:
        """Extend the lease while a step runs; raise FenceLost if another owner took over."""
        self._writer.heartbeat(migration)

    def claim(self, migration: Migration, owner: str) -> Migration:
        """Take ownership: a new owner, a fresh lease and a higher fence, or FenceLost.

        Conditional on the fence the caller read, so of two coordinators claiming the same
        migration exactly one wins; the loser's later writes (old fence) are refused.
        """
        return self._writer.claim(migration, owner)

    def claim_all(self, found: Sequence[Migration], owner: str) -> dict[str, Migration]:
        """``claim`` each of ``found`` in one statement and one commit (``recover``); the
        ones claimed, by id. Each is conditional on the fence it was read with: one claimed
        by another coordinator meanwhile is left out."""
        return self._writer.claim_all(found, owner)

    def request_abort(self, migration_id: str, *, states: Iterable[State]) -> bool:
        """Persist an abort request if the migration is still in one of ``states``."""
        return self._writer.request_abort(migration_id, states=states)

    def prune(
        self,
        *,
        finished_before: datetime,
        states: Iterable[State] = (),
        dry_run: bool = False,
    ) -> builtins.list[Migration]:
        """Delete terminal migrations finished before ``finished_before``, with their events.

        Only ``TERMINAL`` states are ever deleted, whatever ``states`` asks for: the
        condition is part of the DELETE itself, so a migration that a coordinator is
        driving cannot be removed by a race. Returns what was (or would be) deleted.
        """
        where = queries.finished_where(states, finished_before)
        with self._reading() as conn:
            doomed = queries.finished(conn, where)
        if not dry_run:
            self._writer.delete([m.id for m in doomed], where=where)
        return doomed
