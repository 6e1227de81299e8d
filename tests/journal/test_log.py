"""The journal read as a log (``journal/log.py``): every event has a journal-wide position
that a reader resumes from, and a reader never passes over an event that commits late."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from migrator.drivers.null import NullDriver
from migrator.engine.coordinator import Coordinator
from migrator.journal import rows
from migrator.journal.schema import events
from migrator.journal.store import Journal
from migrator.records import Entry, EventDraft, EventKind
from migrator.states import State
from tests.conftest import ROOT

WAIT = 60.0
"""Seconds a reader waits for events still to come (a deadline, never an assertion)."""


def migrate(journal: Journal, coordinator: Coordinator | None = None) -> str:
    name = uuid.uuid4().hex[:10]
    src, dst = NullDriver(f"null://src-{name}"), NullDriver(f"null://dst-{name}")
    src.define("vm1")
    return (coordinator or Coordinator(journal)).migrate("vm1", src=src, dst=dst).id


def read_all(journal: Journal, expected: int, *, limit: int = 7) -> list[Entry]:
    """Read from the first position on, resuming from the last one seen, until
    ``expected`` entries came (or the deadline passed)."""
    seen: list[Entry] = []
    deadline = time.monotonic() + WAIT
    while len(seen) < expected and time.monotonic() < deadline:
        page = journal.events_after(seen[-1].position if seen else None, limit=limit)
        seen += page
        if not page:
            time.sleep(0.05)
    return seen


def assert_once_in_order(seen: list[Entry], journal: Journal) -> None:
    keys = [(e.event.migration_id, e.event.seq) for e in seen]
    every = [(m.id, e.seq) for m in journal.list() for e in journal.history(m.id)]
    assert sorted(keys) == sorted(every)  # each event once
    positions = [e.position for e in seen]
    assert positions == sorted(set(positions))
    for mid in {k[0] for k in keys}:
        seqs = [seq for m, seq in keys if m == mid]
        assert seqs == sorted(seqs)


def test_a_reader_resuming_from_its_last_position_reads_every_event_once(
    journal: Journal,
) -> None:
    for _ in range(3):
        migrate(journal)
    seen = read_all(journal, 30)
    assert len(seen) == 30
    assert_once_in_order(seen, journal)
    assert journal.events_after(seen[-1].position) == []
    [m, *_] = journal.list()
    mine = journal.events_after(None, migration_id=m.id)
    assert [e.event for e in mine] == journal.history(m.id)


def test_positions_follow_concurrent_writers_and_a_tailing_reader_misses_none(
    journal: Journal,
) -> None:
    """Four threads migrate while a reader tails the journal from its last position."""
    coordinator = Coordinator(journal)
    seen: list[Entry] = []
    done = threading.Event()

    def tail() -> None:
        while not done.is_set():
            page = journal.events_after(seen[-1].position if seen else None, limit=50)
            seen.extend(page)

    def work() -> None:
        for _ in range(5):
            migrate(journal, coordinator)

    reader = threading.Thread(target=tail)
    reader.start()
    writers = [threading.Thread(target=work) for _ in range(4)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    done.set()
    reader.join()
    coordinator.close()
    seen += read_all_after(journal, seen, 200)
    assert_once_in_order(seen, journal)


def read_all_after(journal: Journal, seen: list[Entry], expected: int) -> list[Entry]:
    more: list[Entry] = []
    deadline = time.monotonic() + WAIT
    while len(seen) + len(more) < expected and time.monotonic() < deadline:
        last = (more or seen)[-1].position if (more or seen) else None
        more += journal.events_after(last, limit=50)
    return more


def test_an_event_that_commits_late_is_not_passed_over(pg_url: str) -> None:
    """PostgreSQL: a transaction that began writing first commits last. While it runs, the
    events committed after it are not given; once it commits, a reader resuming from its
    last position gets its event, then the others."""
    journal = Journal.open(pg_url, upgrade=True)
    try:
        late_m, early_m = (_created(journal, f"vm{i}") for i in (1, 2))
        engine = sa.create_engine(pg_url)
        with engine.connect() as late:
            late.begin()
            late.execute(events.insert().values(_event(late_m, 1)))  # its transaction id first
            moved = journal.record(
                journal.get(early_m), EventDraft(kind=EventKind.RECOVERY), state=State.NEW
            )  # a later transaction, committed first
            assert journal.events_after(None) == []
            late.commit()
        engine.dispose()
        seen = read_all(journal, 2, limit=1)
        assert [(e.event.migration_id, e.event.seq) for e in seen] == [
            (late_m, 1),
            (moved.id, 1),
        ]
    finally:
        journal.close()


def _created(journal: Journal, domain: str) -> str:
    return journal.create(
        domain=domain, src="null://a", dst="null://b", protocol=3, flags=0, bandwidth=0,
        owner="test",
    ).id  # fmt: skip


def _created_before_0007(conn: sa.Connection, domain: str) -> str:
    """A migration's row as the code of a revision before 0007 (no trace id) wrote it."""
    at = datetime.now(UTC)
    values = rows.new_migration(
        migration_id=str(uuid.uuid4()), domain=domain, dname=None, src="null://a",
        dst="null://b", protocol=3, flags=0, bandwidth=0, owner="test", now=at, lease=at,
    )  # fmt: skip
    del values["trace_id"]
    conn.execute(sa.insert(sa.table("migrations", *map(sa.column, values))), values)
    return str(values["id"])


def _event(migration_id: str, seq: int) -> dict[str, object]:
    draft = EventDraft(kind=EventKind.RECOVERY)
    return rows.event_values(migration_id, seq, draft, State.NEW, datetime.now(UTC), "test")


def test_an_old_sqlite_journal_upgrades_with_every_event_positioned(tmp_path: Path) -> None:
    """The revision 0001 journal of the replay corpus: its events numbered from 1, migration
    by migration in seq order; the unfinished ones counted as delivered; new events after."""
    path = tmp_path / "old.db"
    shutil.copy(ROOT / "tests" / "replay_corpus" / "journal-0001.db", path)
    with Journal.open(f"sqlite:///{path}") as journal:
        old = journal.events_after(None, limit=10_000)
        assert [e.position for e in old] == list(range(1, len(old) + 1))
        assert_once_in_order(old, journal)
        for m in journal.list():
            expected = (
                None
                if m.state in (State.CONFIRMED, State.ROLLED_BACK, State.FAILED)
                else m.last_seq
            )
            assert journal.delivered(m.id) == expected
        mid = migrate(journal)
        new = journal.events_after(old[-1].position)
        assert [e.event.migration_id for e in new] == [mid] * 10


@pytest.mark.parametrize("previous", ["0004"])
def test_an_old_postgres_journal_upgrades_below_every_new_position(
    pg_url: str, previous: str
) -> None:
    with Journal.open(pg_url, check=False) as journal:
        journal.upgrade(previous)
        with journal.engine.begin() as conn:
            mid = _created_before_0007(conn, "vm-old")
            for seq in (1, 2):
                values = _event(mid, seq)
                del values["reason"]
                conn.execute(
                    sa.insert(sa.table("migration_events", *map(sa.column, values))), values
                )
            conn.execute(sa.text("UPDATE migrations SET last_seq = 2 WHERE id = :id"), {"id": mid})
    with Journal.open(pg_url, upgrade=True) as journal:
        old = journal.events_after(None)
        assert [(e.event.seq, e.reason) for e in old] == [(1, None), (2, None)]
        assert journal.delivered(mid) == 2
        new_mid = migrate(journal)
        new = read_all(journal, 12)
        assert [e.event.migration_id for e in new[2:]] == [new_mid] * 10
        assert old[-1].position < new[2].position


def test_the_last_position_is_none_on_an_empty_journal_then_a_readable_event(
    journal: Journal,
) -> None:
    """The newest event on SQLite; on PostgreSQL one at most as new (the horizon is below
    every transaction running on the server, another test's too)."""
    assert journal.last_position() is None
    migrate(journal)
    last = journal.last_position()
    positions = [e.position for e in journal.events_after(None, limit=1000)]
    if journal.engine.dialect.name == "sqlite":
        assert last == positions[-1]
    else:
        assert last is None or last in positions


def test_the_last_position_stays_below_an_event_that_commits_late(pg_url: str) -> None:
    """PostgreSQL: following the journal from its last position while a transaction that
    began writing first is still open misses none of its events: that position is below
    them."""
    journal = Journal.open(pg_url, upgrade=True)
    try:
        late_m, early_m = (_created(journal, f"vm{i}") for i in (1, 2))
        engine = sa.create_engine(pg_url)
        with engine.connect() as late:
            late.begin()
            late.execute(events.insert().values(_event(late_m, 1)))
            journal.record(
                journal.get(early_m), EventDraft(kind=EventKind.RECOVERY), state=State.NEW
            )
            start = journal.last_position()
            late.commit()
        engine.dispose()
        seen = read_all_after(journal, [], 2) if start is None else journal.events_after(start)
        assert [(e.event.migration_id, e.event.seq) for e in seen] == [(late_m, 1), (early_m, 1)]
    finally:
        journal.close()
