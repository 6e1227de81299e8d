"""The write path: one transaction manager; fencing of heartbeats, claims and progress."""

from __future__ import annotations

import sqlite3
import struct
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from migrator.errors import AbortRequested, FenceLost, JournalUnavailable
from migrator.journal.store import Journal
from migrator.journal.writes import Writer
from migrator.records import Change, EventDraft, EventKind, Migration
from migrator.states import State

pytestmark = pytest.mark.no_replay  # events written by hand, not by the engine


def _new(journal: Journal) -> Migration:
    return journal.create(
        domain="vm1", src="test:///a", dst="test:///b", protocol=3, flags=1, bandwidth=0, owner="c1"
    )


def test_a_claim_raises_the_fence_and_shuts_out_the_old_owner(journal: Journal) -> None:
    old = _new(journal)
    new = journal.claim(old, "c2")
    assert (new.owner, new.fence) == ("c2", 2)
    assert journal.get(old.id).fence == 2
    with pytest.raises(FenceLost):
        journal.heartbeat(old)
    with pytest.raises(FenceLost):
        journal.claim(old, "c3")
    journal.heartbeat(new)


def test_claim_all_claims_each_at_the_fence_it_was_read_with(journal: Journal) -> None:
    """One claimed by another after it was read is left out, with its new owner kept."""
    a, b, c = _new(journal), _new(journal), _new(journal)
    journal.claim(b, "c2")
    claimed = journal.claim_all([a, b, c], "c3")
    assert sorted(claimed) == sorted([a.id, c.id])
    assert {(m.owner, m.fence) for m in claimed.values()} == {("c3", 2)}
    assert [(journal.get(m.id).owner, journal.get(m.id).fence) for m in (a, b, c)] == [
        ("c3", 2),
        ("c2", 2),
        ("c3", 2),
    ]
    journal.heartbeat(claimed[a.id])
    with pytest.raises(FenceLost):
        journal.heartbeat(a)


def test_progress_of_a_lost_owner_is_refused_with_fence_lost(journal: Journal) -> None:
    old = _new(journal)
    journal.claim(old, "c2")
    with pytest.raises(FenceLost):
        journal.set_progress(old, {"transferred": 1, "total": 2})
    assert journal.get(old.id).progress is None


def test_an_abort_is_requested_only_in_the_given_states(journal: Journal) -> None:
    m = _new(journal)
    assert journal.request_abort(m.id, states=[State.PERFORMING]) is False
    assert journal.abort_requested(m.id) is False
    assert journal.request_abort(m.id, states=[State.NEW, State.PERFORMING]) is True
    assert journal.abort_requested(m.id) is True


def test_the_next_state_change_reads_back_a_requested_abort(journal: Journal) -> None:
    m = _new(journal)
    journal.request_abort(m.id, states=[State.NEW])
    moved = journal.record(m, EventDraft(kind=EventKind.RECOVERY), state=State.NEW)
    assert moved.abort_requested is True


def test_a_write_unless_aborted_writes_nothing_once_an_abort_is_requested(
    journal: Journal,
) -> None:
    m = _new(journal)
    note = EventDraft(kind=EventKind.ABORT)  # any event that keeps the state
    changes = [Change(note, State.NEW), Change(note, State.NEW)]
    moved = journal.record_changes(m, changes, unless_aborted=True)[-1]  # none requested yet
    assert moved.last_seq == m.last_seq + 2
    journal.request_abort(m.id, states=[State.NEW])
    with pytest.raises(AbortRequested):
        journal.record_changes(moved, changes, unless_aborted=True)
    assert journal.get(m.id).last_seq == moved.last_seq
    assert len(journal.history(m.id)) == moved.last_seq
    assert journal.record_changes(moved, changes)[-1].last_seq == moved.last_seq + 2


def test_a_write_unless_aborted_by_a_lost_owner_is_still_fence_lost(journal: Journal) -> None:
    m = _new(journal)
    journal.request_abort(m.id, states=[State.NEW])
    journal.claim(m, "c2")
    with pytest.raises(FenceLost):
        journal.record_changes(
            m, [Change(EventDraft(kind=EventKind.RECOVERY), State.NEW)], unless_aborted=True
        )


def test_a_failed_write_rolls_back_and_the_next_one_reconnects(journal: Journal) -> None:
    writer = Writer(journal.engine, journal.url, lease_seconds=journal.lease_seconds)
    m = _new(journal)
    with pytest.raises(JournalUnavailable), writer.transaction() as cursor:
        cursor.execute("UPDATE migrations SET owner = 'x'")
        cursor.execute("SELECT * FROM no_such_table")
    assert journal.get(m.id).owner == "c1"
    writer.heartbeat(m)
    writer.close()


def test_an_exception_inside_a_write_rolls_it_back(journal: Journal) -> None:
    writer = Writer(journal.engine, journal.url, lease_seconds=journal.lease_seconds)
    m = _new(journal)
    with pytest.raises(KeyError), writer.transaction() as cursor:
        cursor.execute("UPDATE migrations SET owner = 'x'")
        raise KeyError("not a database error")
    assert journal.get(m.id).owner == "c1"
    writer.close()


@pytest.mark.parametrize("kind", ["note", "INTENT", "", None, 3], ids=repr)
def test_an_event_of_a_kind_that_is_no_event_kind_writes_nothing(
    journal: Journal, kind: object
) -> None:
    """Not even the valid change committed with it: the transaction is refused whole."""
    m = _new(journal)
    kept = Change(EventDraft(kind=EventKind.RECOVERY), State.NEW)
    bad = Change(EventDraft(kind=kind), State.BEGINNING)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not an event kind"):
        journal.record_changes(m, [kept, bad])
    with pytest.raises(ValueError, match="not an event kind"):
        journal.record(m, bad.draft, state=State.NEW)
    assert _event_rows(journal, m.id) == 0
    assert journal.get(m.id) == m
    assert journal.history(m.id) == []


def test_an_event_kind_given_as_its_text_is_stored_as_that_kind(journal: Journal) -> None:
    m = journal.record(_new(journal), EventDraft(kind="recovery"), state=State.NEW)  # type: ignore[arg-type]
    [event] = journal.history(m.id)
    assert event.kind is EventKind.RECOVERY


def _event_rows(journal: Journal, migration_id: str) -> int:
    """The events of a migration, counted in SQL: rows ``history()`` might fail to read."""
    query = sa.text("SELECT count(*) FROM migration_events WHERE migration_id = :m")
    with journal.engine.connect() as conn:
        return int(conn.execute(query, {"m": migration_id}).scalar_one())


def _wal_commits(db: Path) -> int:
    """The commits in SQLite's write-ahead log of ``db`` since it was last reset.

    Read from the file as https://sqlite.org/fileformat.html#the_write_ahead_log lays it
    out: a 32-byte header (its salts at bytes 16-23), then frames of a 24-byte header and a
    page; a frame whose header gives the database size after it (bytes 4-7, else 0) ends
    a transaction. Frames with other salts are left over from before the last reset."""
    data = db.with_name(db.name + "-wal").read_bytes()
    if len(data) < 32:
        return 0
    page_size, salts = struct.unpack(">I", data[8:12])[0], data[16:24]
    commits, offset = 0, 32
    while offset + 24 + page_size <= len(data) and data[offset + 8 : offset + 16] == salts:
        commits += struct.unpack(">I", data[offset + 4 : offset + 8])[0] != 0
        offset += 24 + page_size
    return commits


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_writes_queued_together_share_one_commit_and_each_fails_alone(
    db_url: str, journal: Journal
) -> None:
    """Group commit (docs/journal.md): writes queued while another commit holds the lock
    commit together, as one transaction in the WAL; a refused compare-and-set and a failing
    statement fail alone."""
    committer = journal._writer.committer
    first, second, stale = _new(journal), _new(journal), _new(journal)
    journal.claim(stale, "c2")  # ``stale`` now holds an old fence
    db = Path(db_url.removeprefix("sqlite:///"))
    with sqlite3.connect(db) as other:
        other.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # an empty log: count from 0
    assert _wal_commits(db) == 0
    outcomes: dict[str, object] = {}

    def write(name: str, call: object) -> None:
        try:
            outcomes[name] = call()  # type: ignore[operator]
        except Exception as exc:  # noqa: BLE001 -- recorded for the assertions
            outcomes[name] = exc

    note = EventDraft(kind=EventKind.RECOVERY)
    calls = {
        "first": lambda: journal.record(first, note, state=State.NEW),
        "second": lambda: journal.record(second, note, state=State.NEW),
        "stale": lambda: journal.record(stale, note, state=State.NEW),
        "bad": lambda: committer.run(lambda cursor: cursor.execute("SELECT * FROM nowhere")),
    }
    with committer._lock:  # a commit in progress: the four queue up behind it
        threads = [threading.Thread(target=write, args=item) for item in calls.items()]
        for t in threads:
            t.start()
        while len(committer._queue) < len(calls):
            time.sleep(0.01)
    for t in threads:
        t.join()
    assert _wal_commits(db) == 1
    for name, m in (("first", first), ("second", second)):
        written = outcomes[name]
        assert isinstance(written, Migration) and written.last_seq == 1, written
        assert [(e.seq, e.kind) for e in journal.history(m.id)] == [(1, EventKind.RECOVERY)]
    assert isinstance(outcomes["stale"], FenceLost)
    assert isinstance(outcomes["bad"], JournalUnavailable)
    assert journal.history(stale.id) == []


def test_a_writer_that_stops_waiting_passes_on_the_lead_it_was_handed(tmp_path: Path) -> None:
    """A writer interrupted (Ctrl-C) while it waits for a batch: its unit, not taken by any
    batch, is never run, and a lead it had been handed passes to the next writer, so no
    one is left waiting for a leader that is gone."""
    from migrator.journal.committer import _Unit

    with Journal.open(f"sqlite:///{tmp_path / 'journal.db'}") as journal:
        committer = journal._writer.committer
        ran: list[str] = []
        gone, after = _Unit(lambda c: ran.append("gone")), _Unit(lambda c: ran.append("after"))
        committer._queue[:] = [gone, after]
        committer._leading = True
        gone.wake.release()  # the leader that just finished handed it the lead
        committer._withdraw(gone)
        assert committer._queue == [after]
        assert after.wake.acquire(blocking=False), "the lead was not passed on"
        committer._lead()  # what ``after``'s writer does once woken
        assert ran == ["after"] and after.done and not committer._leading
        lone = _Unit(lambda c: None)
        committer._queue[:] = [lone]
        committer._leading = True
        lone.wake.release()
        committer._withdraw(lone)
        assert committer._queue == [] and not committer._leading
