"""The journal's transactions: group commit on SQLite, a pool of held connections elsewhere.

A write is a unit of work, ``work(cursor) -> result``, that ``Committer.run`` commits durably
before it returns (``docs/journal.md``, the write-ahead rule):

- **SQLite** (one writer at a time, one held connection): *group commit*. A caller queues
  its unit; if no batch is being led it leads one: it takes the commit lock, drains the
  queue and runs every unit queued so far in one transaction, each inside its own
  savepoint, then commits once. While one batch waits for its ``fsync``, the next one
  gathers, so 32 threads in flight share a commit instead of queueing for 32. Each waiting
  writer sleeps on a lock of its own, released once: when its batch ended, or to make it
  lead the next one (no convoy on the commit lock, no broadcast). A unit that fails (a
  compare-and-set that finds no row is not a failure: its unit returns that) rolls back to
  its savepoint and fails alone; a failed commit fails the whole batch, and no caller of it
  is told it committed. A lone caller runs its unit without a savepoint: sequential writes
  pay nothing more.
- **PostgreSQL** (the server commits concurrent transactions together): each unit runs in a
  transaction of its own on a held DBAPI connection taken from a free list (a pool checkout
  and reset per commit costs more than the commit), at most ``WRITERS`` at once, so
  concurrent writers do not wait for each other. The held connections are in autocommit
  mode: a unit of one statement (``single=True``, such as a step's state change with its
  events, one data-modifying ``WITH``) is its own transaction, one round trip to the
  server; any other unit is wrapped in ``BEGIN`` … ``COMMIT``.

A database error drops the connection it happened on (the next unit opens a fresh one) and
becomes ``JournalUnavailable``, marked ``transient`` when worth retrying and
``outcome_unknown`` when the commit itself failed (``Writer.run`` retries and reads back).
Before every transaction the database is checked to be the one the journal opened
(``resilience.Pin``): a SQLite file deleted or replaced, or a PostgreSQL database recreated,
stops the writes with ``JournalReplaced``.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import sqlalchemy as sa

from migrator.errors import JournalUnavailable
from migrator.journal import resilience

T = TypeVar("T")
WRITERS = 8
"""Concurrent write transactions on a server database (the engine's pool holds 15)."""
Work = Callable[[Any], Any]


class _Unit:
    """One queued write and, once its batch ended, what it gave.

    ``wake`` is held from the start; releasing it wakes the writer waiting for the unit:
    its batch ended (``done``), or it is handed the lead of the next batch."""

    __slots__ = ("done", "error", "result", "wake", "work")

    def __init__(self, work: Work) -> None:
        self.work = work
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False
        self.wake = threading.Lock()
        self.wake.acquire()


class _Held:
    """A DBAPI connection held across transactions, with its pool proxy; in autocommit mode
    (a server database), with a cursor held too: the driver's cursor keeps nothing on the
    server between statements, and a new one per commit costs microseconds."""

    __slots__ = ("cursor", "dbapi", "pooled")

    def __init__(self, engine: sa.Engine, pin: resilience.Pin, *, autocommit: bool) -> None:
        self.pooled: Any = engine.raw_connection()  # returned to the pool, or invalidated
        dbapi: Any = self.pooled.dbapi_connection
        self.dbapi = dbapi  # cursor, commit, rollback
        try:
            if autocommit:
                dbapi.autocommit = True  # undone before the pool has it back
            pin.check_connection(dbapi)
            self.cursor: Any = dbapi.cursor() if autocommit else None
        except BaseException:
            with contextlib.suppress(Exception):
                self.pooled.invalidate()
            raise


class _Gate:
    """At most ``n`` holders at once, as a ``threading.BoundedSemaphore`` with ``n`` gives:
    a queue of ``n`` tokens, written in C (the semaphore, in Python, costs two
    microseconds a commit)."""

    __slots__ = ("_tokens",)

    def __init__(self, n: int) -> None:
        self._tokens: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(n):
            self._tokens.put(None)

    def __enter__(self) -> None:
        self._tokens.get()  # waits while all n are held

    def __exit__(self, *exc: object) -> None:
        self._tokens.put(None)


class Committer:
    """Runs units of work in durable transactions on ``engine``'s database."""

    def __init__(self, engine: sa.Engine, url: str, pin: resilience.Pin) -> None:
        self.engine = engine
        self.url = url
        self.pin = pin
        self.grouped = engine.dialect.name == "sqlite"
        self._dbapi_module: Any = engine.dialect.loaded_dbapi
        self._dbapi_error: type[Exception] = self._dbapi_module.Error
        self._lock = threading.Lock()  # SQLite: the commit lock; elsewhere: the free list
        self._queue: list[_Unit] = []
        self._mutex = threading.Lock()  # SQLite: the queue, and whether a batch is being led
        self._leading = False
        self._free: list[_Held] = []
        self._writers = _Gate(WRITERS)  # elsewhere: held at most

    # -- units of work -------------------------------------------------------------------

    def run(self, work: Callable[[Any], T], *, single: bool = False) -> T:
        """``work(cursor)`` committed durably, alone or with the units queued beside it.

        ``single``: the unit runs one statement, which on a server database is then its own
        transaction (see the module docstring).
        """
        if not self.grouped:
            with self._writers, _Transaction(self, single=single) as held:
                return work(self._cursor(held, single=single))
        unit = _Unit(work)
        with self._mutex:
            self._queue.append(unit)
            waits, self._leading = self._leading, True
        if waits:
            try:
                unit.wake.acquire()  # until its batch ended, or it is handed the lead
            except BaseException:  # interrupted (Ctrl-C) while it waited
                self._withdraw(unit)
                raise
        if not unit.done:
            self._lead()
        if unit.error is not None:
            raise unit.error
        result: T = unit.result
        return result

    def _lead(self) -> None:
        """Commit every unit queued so far as one batch, wake their writers, then hand the
        lead to the oldest writer still waiting, if any (each waiter is woken once: no
        convoy on a lock, no broadcast)."""
        batch: list[_Unit] = []
        try:
            with self._lock:  # another transaction may hold it: what queues meanwhile joins
                with self._mutex:
                    batch, self._queue = self._queue, []
                self._batch(batch)
        finally:
            for queued in batch:
                queued.wake.release()
            with self._mutex:
                if self._queue:
                    self._queue[0].wake.release()  # it leads the next batch
                else:
                    self._leading = False

    def _withdraw(self, unit: _Unit) -> None:
        """``unit``'s writer stops waiting: a unit no batch took is never run, and a lead
        it was handed passes on, so the writers after it are not left waiting."""
        with self._mutex:
            if unit not in self._queue:
                return  # a batch runs it; that batch's leader hands the lead on
            self._queue.remove(unit)
            if unit.wake.acquire(blocking=False):  # it had been handed the lead
                if self._queue:
                    self._queue[0].wake.release()
                else:
                    self._leading = False

    def _batch(self, batch: list[_Unit]) -> None:
        """Every unit of ``batch`` in one transaction on the held connection (lock held)."""
        try:
            with _Transaction(self) as held:
                cursor = self._cursor(held, single=False)
                if len(batch) == 1:
                    batch[0].result = batch[0].work(cursor)
                else:
                    cursor.execute("BEGIN IMMEDIATE")  # else RELEASE would commit each unit
                    for unit in batch:
                        self._savepoint(cursor, unit)
        except BaseException as exc:  # noqa: BLE001 -- every caller of the batch learns it
            for unit in batch:
                if unit.error is None:
                    unit.error = exc
        finally:
            for unit in batch:
                unit.done = True

    def _savepoint(self, cursor: Any, unit: _Unit) -> None:
        """Run ``unit`` so that its failure undoes its own statements only."""
        cursor.execute("SAVEPOINT unit")
        try:
            unit.result = unit.work(cursor)
        except Exception as exc:  # noqa: BLE001 -- this unit's failure, reported to its caller
            cursor.execute("ROLLBACK TO SAVEPOINT unit")  # if this fails, the batch fails
            unit.error = self._unavailable(exc) if isinstance(exc, self._dbapi_error) else exc
        cursor.execute("RELEASE SAVEPOINT unit")

    # -- transactions --------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self, *, single: bool = False) -> Iterator[Any]:
        """One transaction of its own; yields a cursor, commits when the block ends.

        Rolls back on any exception; a database error drops the connection and becomes
        ``JournalUnavailable``. ``single``: see ``run``.
        """
        gate = self._lock if self.grouped else self._writers
        with gate, _Transaction(self, single=single) as held:
            yield self._cursor(held, single=single)

    def _cursor(self, held: _Held, *, single: bool) -> Any:
        """A cursor for one transaction on ``held``; on a server database, begun unless
        ``single`` (the statement is its own transaction)."""
        if self.grouped:
            return held.dbapi.cursor()
        if not single:
            held.cursor.execute("BEGIN")
        return held.cursor

    def _failed(self, held: _Held, exc: BaseException, *, outcome_unknown: bool) -> None:
        """After ``exc`` in a transaction on ``held``: rolled back; a database error drops
        the connection and is raised as ``JournalUnavailable``, else ``held`` is kept."""
        with contextlib.suppress(Exception):
            held.dbapi.rollback()
        if isinstance(exc, self._dbapi_error):
            with contextlib.suppress(Exception):
                held.pooled.invalidate()
            raise self._unavailable(exc, outcome_unknown=outcome_unknown) from exc
        self._give_back(held)

    def _held(self) -> _Held:
        """A connection to write on; a failure to connect is a ``JournalUnavailable``."""
        try:
            return self._take()
        except sa.exc.DBAPIError as exc:
            raise self._unavailable(exc.orig or exc) from exc
        except self._dbapi_error as exc:  # the pool lets a connect error through as is
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: BaseException, *, outcome_unknown: bool = False) -> Exception:
        return JournalUnavailable(
            url=self.url,
            reason=(str(exc).splitlines() or [type(exc).__name__])[0],
            transient=resilience.is_transient(exc, self._dbapi_module),
            outcome_unknown=outcome_unknown,
        )

    def _take(self) -> _Held:
        if self.grouped:
            return self._free.pop() if self._free else self._open()
        with self._lock:
            if self._free:
                return self._free.pop()
        return self._open()

    def _open(self) -> _Held:
        return _Held(self.engine, self.pin, autocommit=not self.grouped)

    def _give_back(self, held: _Held) -> None:
        if self.grouped:
            self._free.append(held)  # under the commit lock
            return
        with self._lock:
            self._free.append(held)

    def close(self) -> None:
        """Return the held connections to the pool; the next unit takes a fresh one."""
        with self._lock:
            free, self._free = self._free, []
        for held in free:
            with contextlib.suppress(Exception):
                if not self.grouped:
                    held.dbapi.autocommit = False  # as the pool's other users expect
                held.pooled.close()


class _Transaction:
    """A held connection for one transaction: committed after, rolled back on error.

    A single statement in autocommit mode commits as it runs: a failure during it leaves
    its outcome unknown, like a failure during a commit. (A class rather than a generator
    context manager: one is entered for every commit.)"""

    __slots__ = ("committer", "held", "single")

    def __init__(self, committer: Committer, *, single: bool = False) -> None:
        self.committer = committer
        self.single = single and not committer.grouped

    def __enter__(self) -> _Held:
        committer = self.committer
        committer.pin.check_file()
        self.held = committer._held()
        return self.held

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        committer, held = self.committer, self.held
        if exc is not None:
            committer._failed(held, exc, outcome_unknown=self.single)
            return  # not a database error: it goes on as it was
        try:
            held.dbapi.commit()
        except BaseException as failed:
            committer._failed(held, failed, outcome_unknown=True)
            raise
        committer._give_back(held)
