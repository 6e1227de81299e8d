"""``Reads``: every read of the journal, as methods, whoever holds the connection.

``Journal`` (``store.py``) reads on its SQLAlchemy engine's connections, retried while the
database restarts; ``SqliteReader`` (``sqlite_reader.py``) on a ``sqlite3`` connection of
its own, for the read commands. Both run the same queries (``reads.py``,
``analytics.py``), so the post-mortem views (``migrator.inspect``) take either
(``docs/journal.md``).
"""

from __future__ import annotations

import builtins
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from migrator.journal import log, reads
from migrator.journal.reads import Db, Filters
from migrator.records import Entry, Event, Migration, Request
from migrator.states import State

if TYPE_CHECKING:
    from migrator.journal.analytics import Histogram, StepDuration, StepSummary

T = TypeVar("T")


class Reads:
    """The read methods of a journal; a subclass says how a query gets its ``Db``."""

    url: str

    def _read(self, query: Callable[[Db], T]) -> T:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Reads:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, migration_id: str) -> Migration:
        return self._read(lambda db: reads.get(db, migration_id))

    def find(self, prefix: str) -> Migration:
        """The one migration whose id starts with ``prefix``."""
        return self._read(lambda db: reads.find(db, prefix))

    def abort_requested(self, migration_id: str) -> bool:
        return self._read(lambda db: reads.abort_requested(db, migration_id))

    def list(
        self,
        *,
        states: Iterable[State] = (),
        since: datetime | None = None,
        until: datetime | None = None,
        domain: str | None = None,
        host: str | None = None,
        limit: int | None = None,
        owner: str | None = None,
        after: Migration | None = None,
    ) -> builtins.list[Migration]:
        """Migrations, newest first; ``host`` matches the source or the destination URI,
        ``owner`` part of the owner's id; only those after ``after`` in that order (the
        next page of a keyset cursor)."""
        chosen = Filters.of(states, since, until, domain, host, owner)
        return self._read(lambda db: reads.page(db, chosen, after=after, limit=limit))

    def count(
        self,
        *,
        states: Iterable[State] = (),
        since: datetime | None = None,
        until: datetime | None = None,
        domain: str | None = None,
        host: str | None = None,
        owner: str | None = None,
    ) -> int:
        """How many migrations ``list`` returns with these filters and no limit."""
        chosen = Filters.of(states, since, until, domain, host, owner)
        return self._read(lambda db: reads.count(db, chosen))

    def stream(
        self,
        *,
        states: Iterable[State] = (),
        since: datetime | None = None,
        until: datetime | None = None,
        domain: str | None = None,
        host: str | None = None,
        owner: str | None = None,
    ) -> Iterator[Migration]:
        """What ``list`` gives, newest first, read a page at a time: constant memory, and
        no read held open between pages (``recover`` writes while it reads)."""
        chosen = Filters.of(states, since, until, domain, host, owner)
        for page, _ in self._pages(chosen, reads.STREAM_CHUNK):
            yield from page

    def exports(
        self, *, states: Iterable[State] = (), since: datetime | None = None
    ) -> Iterator[tuple[Migration, builtins.list[dict[str, Any]]]]:
        """Each migration with the JSON form of every event of it (``jsonform.event_form``),
        newest first, streamed: the events of a page of migrations are read in one query."""
        for page, found in self._pages(Filters.of(states, since), reads.EXPORT_CHUNK, True):
            for migration in page:
                yield migration, found[migration.id]

    def _pages(
        self, chosen: Filters, size: int, histories: bool = False
    ) -> Iterator[tuple[builtins.list[Migration], dict[str, builtins.list[dict[str, Any]]]]]:
        """Keyset pages of ``size`` migrations ``chosen``, with their events if asked."""
        after: Migration | None = None
        while True:
            read = functools.partial(
                _page, chosen=chosen, after=after, size=size, histories=histories
            )
            page, found = self._read(read)
            if page:
                yield page, found
            if len(page) < size:
                return
            after = page[-1]

    def histories(self, ids: Sequence[str]) -> dict[str, builtins.list[Event]]:
        """Every event of each migration of ``ids``, oldest first, in one query."""
        return self._read(lambda db: reads.histories(db, ids))

    def history(self, migration_id: str) -> builtins.list[Event]:
        """Every event of a migration, oldest first."""
        return self._read(lambda db: reads.history(db, migration_id))

    def requests(self, migration_id: str) -> builtins.list[Request]:
        """Every runtime request of a migration, oldest first (docs/convergence.md)."""
        return self._read(lambda db: reads.requests(db, migration_id))

    def policy(self, migration_id: str) -> dict[str, Any] | None:
        """A migration's journaled convergence policy (its dict form), if it has one."""
        return self._read(lambda db: reads.policy(db, migration_id))

    # -- the journal as a log (``log.py``) ---------------------------------------------

    def events_after(
        self,
        position: int | None = None,
        limit: int = log.PAGE,
        migration_id: str | None = None,
    ) -> builtins.list[Entry]:
        """Up to ``limit`` committed events past ``position`` (None: from the first), in
        position order, each with its position; of one migration if ``migration_id``.

        A reader that passes the last position it was given reads every event once, in
        order, whatever order concurrent writers commit in (docs/journal.md, "Positions");
        on PostgreSQL an event becomes readable once every transaction older than its own
        has ended."""
        return self._read(lambda db: log.events_after(db, position, limit, migration_id))

    def entries_from(self, migration_id: str, seq: int) -> builtins.list[Entry]:
        """The entries of a migration's events from ``seq`` on, oldest first."""
        return self._read(lambda db: log.entries_from(db, migration_id, seq))

    def delivered(self, migration_id: str) -> int | None:
        """The seq up to which the migration's hook events were delivered (None: no cursor:
        none was, or all of a finished migration's were)."""
        return self._read(lambda db: log.delivered(db, migration_id))

    def owed(self, states: Iterable[State]) -> builtins.list[Migration]:
        """The migrations in ``states`` whose hook events were not all delivered."""
        return self._read(lambda db: log.owed(db, states))

    def last_position(self, *, readable: bool = True) -> int | None:
        """The highest position ``events_after`` gives now (None: no event yet); unless
        ``readable``, of every event committed, which ``events_after`` gives once each
        transaction older than its own has ended (docs/journal.md, "Positions")."""
        return self._read(lambda db: log.last_position(db, readable=readable))

    def webhook_position(self, endpoint: str) -> int | None:
        """The position up to which webhook ``endpoint`` was given every event (None: no
        cursor: from the first event)."""
        return self._read(lambda db: log.webhook_position(db, endpoint))

    def trace_ids(self, ids: builtins.list[str]) -> dict[str, str | None]:
        """The trace id of each of the migrations ``ids`` (docs/tracing.md)."""
        return self._read(lambda db: log.trace_ids(db, ids))

    # -- analytics (imported by the commands that count: ``list`` and ``show`` do not) ----

    def count_by_state(self, *, since: datetime | None = None) -> builtins.list[tuple[State, int]]:
        """``(state, count)`` of the migrations created at or after ``since``, most first."""
        from migrator.journal import analytics

        return self._read(lambda db: analytics.count_by_state(db, Filters(since=since)))

    def count_by_reason(
        self, *, states: Iterable[State] = (), since: datetime | None = None
    ) -> builtins.list[tuple[str | None, int]]:
        """``(reason, count)`` of the migrations in ``states`` (any if empty), most first."""
        from migrator.journal import analytics

        chosen = Filters.of(states, since)
        return self._read(lambda db: analytics.count_by_reason(db, chosen))

    def step_durations(self, *, since: datetime | None = None) -> builtins.list[StepDuration]:
        """The duration of every step outcome (``ok`` or ``error``) of the migrations
        created at or after ``since``."""
        from migrator.journal import analytics

        return self._read(lambda db: analytics.step_durations(db, Filters(since=since)))

    def step_summaries(self, *, since: datetime | None = None) -> dict[str, StepSummary]:
        """Per step: outcomes, errors, nearest-rank p50 and p95 and the max of their
        durations (migrations created at or after ``since``). Without ``since`` the database
        counts and ranks them on its index; with it, the chosen outcomes are read."""
        from migrator.journal import analytics

        if since is None:
            return self._read(analytics.step_summaries)
        return analytics.summarize(self.step_durations(since=since))

    def duration_buckets(self, buckets: Sequence[float]) -> dict[tuple[str, str], Histogram]:
        """Per (step, kind) of step outcomes: how many took at most each bucket's seconds,
        their total seconds and their count, counted by the database (for a histogram)."""
        from migrator.journal import analytics

        return self._read(lambda db: analytics.duration_buckets(db, buckets))


def _page(
    db: Db, *, chosen: Filters, after: Migration | None, size: int, histories: bool
) -> tuple[builtins.list[Migration], dict[str, builtins.list[dict[str, Any]]]]:
    """One keyset page of ``Reads._pages``, with its events' JSON forms if asked."""
    page = reads.page(db, chosen, after=after, limit=size)
    return page, reads.event_forms(db, [m.id for m in page]) if histories else {}
