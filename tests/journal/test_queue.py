"""The queue: submitting, claiming under per-host limits (FIFO among what fits), handing
back, the workers table (docs/workers.md)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from migrator.errors import IllegalTransition, JournalReplaced
from migrator.hostlimits import HostLimit, HostLimits
from migrator.journal.queue import Queue
from migrator.journal.store import Journal
from migrator.records import EventDraft, EventKind, Migration
from migrator.states import State, Step


def _submit(queue: Queue, domain: str, src: str, dst: str) -> Migration:
    return queue.submit(domain=domain, src=src, dst=dst, protocol=3, flags=0, bandwidth=0)


def _moved(m: Migration) -> tuple[State, int, int, str | None]:
    return m.state, m.last_seq, m.fence, m.reason


pytestmark = pytest.mark.no_replay  # no migration here is driven: nothing to replay


def _row(journal: Journal, migration_id: str) -> dict[str, object]:
    """The ``migrations`` row of ``migration_id`` as the database holds it (read in SQL)."""
    query = sa.text("SELECT * FROM migrations WHERE id = :id")
    with journal.engine.connect() as conn:
        return dict(conn.execute(query, {"id": migration_id}).mappings().one())


def _event_rows(journal: Journal, migration_id: str) -> int:
    query = sa.text("SELECT count(*) FROM migration_events WHERE migration_id = :id")
    with journal.engine.connect() as conn:
        return int(conn.execute(query, {"id": migration_id}).scalar_one())


def test_a_submitted_migration_is_queued_with_no_owner_and_no_event(journal: Journal) -> None:
    queue = Queue(journal)
    m = queue.submit(
        domain="vm1", src="test:///a", dst="test:///b", protocol=2, flags=5, bandwidth=7,
        dname="vm1-new",
    )  # fmt: skip
    row = _row(journal, m.id)
    assert {k: row[k] for k in ("domain", "dname", "src", "dst", "protocol", "flags")} == {
        "domain": "vm1", "dname": "vm1-new", "src": "test:///a", "dst": "test:///b",
        "protocol": 2, "flags": 5,
    }  # fmt: skip
    assert (row["bandwidth"], row["state"], row["owner"], row["lease_expires_at"]) == (
        7, "QUEUED", None, None,
    )  # fmt: skip
    assert (row["fence"], row["last_seq"], bool(row["abort_requested"])) == (1, 0, False)
    assert row["finished_at"] is None and row["reason"] is None
    assert _event_rows(journal, m.id) == 0
    assert journal.get(m.id) == m  # what submit returned is what the journal holds
    assert queue.depth() == 1


def test_claim_takes_the_oldest_and_journals_who_claimed_it(journal: Journal) -> None:
    queue = Queue(journal)
    first = _submit(queue, "vm1", "test:///a", "test:///b")
    second = _submit(queue, "vm2", "test:///a", "test:///b")
    claimed = queue.claim("w1", HostLimits())
    assert claimed is not None and claimed.id == first.id
    assert (claimed.state, claimed.owner, claimed.fence) == (State.NEW, "w1", 2)
    assert journal.get(first.id) == claimed
    (event,) = journal.history(first.id)
    assert (event.kind, event.state, event.coordinator) == (EventKind.QUEUE, State.NEW, "w1")
    assert queue.depth() == 1
    assert _row(journal, second.id)["state"] == "QUEUED"


def test_claim_returns_none_when_nothing_is_queued(journal: Journal) -> None:
    assert Queue(journal).claim("w1", HostLimits()) is None


def test_a_busy_host_does_not_hold_back_the_others(journal: Journal) -> None:
    queue = Queue(journal)
    a1 = _submit(queue, "vm1", "test:///a", "test:///b")
    a2 = _submit(queue, "vm2", "test:///a", "test:///c")
    d1 = _submit(queue, "vm3", "test:///d", "test:///c")
    limits = HostLimits(max_outgoing=1)
    assert [queue.claim("w", limits) for _ in range(3)][:2] == [
        journal.get(a1.id),
        journal.get(d1.id),
    ]
    assert journal.get(a2.id).state is State.QUEUED  # host a is full until vm1 ends


def test_incoming_limits_and_per_host_overrides(journal: Journal) -> None:
    queue = Queue(journal)
    for i in range(4):
        _submit(queue, f"vm{i}", f"test:///s{i}", "test:///big")
    _submit(queue, "vm9", "test:///s9", "test:///small")
    limits = HostLimits(max_incoming=1, hosts={"test:///big": HostLimit(max_incoming=3)})
    claimed = [queue.claim("w", limits) for _ in range(6)]
    taken = [m.dst for m in claimed if m is not None]
    assert sorted(taken) == ["test:///big"] * 3 + ["test:///small"]


def test_release_lets_the_lease_lapse_now(journal: Journal) -> None:
    from migrator.engine.ownership import claimable

    queue = Queue(journal)
    _submit(queue, "vm1", "test:///a", "test:///b")
    claimed = queue.claim("somewhere-else:1:w", HostLimits())
    assert claimed is not None
    assert claimable(journal.get(claimed.id)) is None
    assert queue.release(claimed)
    assert claimable(journal.get(claimed.id)) == "lease lapsed"


def test_workers_register_heartbeat_list_what_they_hold_and_leave(journal: Journal) -> None:
    queue = Queue(journal)
    queue.register("w1", concurrency=3)
    queue.register("w2", concurrency=1)
    queue.beat("w2", stopping=True)
    found = {w.id: w for w in queue.workers(alive_within=60)}
    assert set(found) == {"w1", "w2"}
    assert found["w2"].stopping and found["w1"].concurrency == 3
    queue.unregister("w1")
    assert [w.id for w in queue.workers()] == ["w2"]
    assert queue.forget_workers(silent_for=0) == 1


def test_workers_list_what_each_holds(journal: Journal) -> None:
    queue = Queue(journal)
    queue.register("w1", concurrency=1)
    _submit(queue, "vm1", "test:///a", "test:///b")
    claimed = queue.claim("w1", HostLimits())
    assert claimed is not None
    (w1,) = queue.workers()
    assert w1.holds == (claimed.id,)
    assert [m.id for m in journal.list(owner="w1")] == [claimed.id]
    assert journal.list(owner="nobody") == []


def test_requeue_and_abandon_hand_a_migration_back_and_end_a_queued_one(journal: Journal) -> None:
    queue = Queue(journal)
    first = _submit(queue, "vm1", "test:///a", "test:///b")
    second = _submit(queue, "vm2", "test:///a", "test:///b")
    claimed = queue.claim("w1", HostLimits())
    assert claimed is not None and claimed.id == first.id
    back = queue.requeue(claimed, by="w1")
    assert (back.state, back.last_seq) == (State.QUEUED, 2)
    assert _moved(journal.get(first.id)) == _moved(back)
    ended = queue.abandon(second, by="op")
    assert (ended.state, ended.reason) == (State.FAILED, "aborted while queued")
    assert _moved(journal.get(second.id)) == _moved(ended)
    assert [e.detail for e in journal.history(first.id)] == [
        {"claimed_by": "w1"},
        {"requeued_by": "w1"},
    ]


def test_a_move_the_state_table_lacks_raises_and_writes_nothing(journal: Journal) -> None:
    """A migration already begun is neither handed back to the queue nor abandoned as
    queued: the state table has no such move (``requeue`` and ``abandon`` leave only NEW
    and QUEUED)."""
    queue = Queue(journal)
    _submit(queue, "vm1", "test:///a", "test:///b")
    claimed = queue.claim("w1", HostLimits())
    assert claimed is not None
    intent = EventDraft(kind=EventKind.INTENT, step=Step.BEGIN)
    begun = journal.record(claimed, intent, state=State.BEGINNING, coordinator="w1")
    with pytest.raises(IllegalTransition):
        queue.requeue(begun, by="w1")
    with pytest.raises(IllegalTransition):
        queue.abandon(begun, by="op")
    assert _moved(journal.get(begun.id)) == _moved(begun)
    assert len(journal.history(begun.id)) == 2


QUEUE_WRITES: dict[str, Callable[[Queue], object]] = {
    "submit": lambda q: _submit(q, "vm9", "test:///a", "test:///b"),
    "claim": lambda q: q.claim("w1", HostLimits()),
    "register": lambda q: q.register("w2", concurrency=1),
    "beat": lambda q: q.beat("w1"),
    "forget_workers": lambda q: q.forget_workers(silent_for=0),
}


@pytest.mark.parametrize("write", QUEUE_WRITES.values(), ids=QUEUE_WRITES.keys())
def test_queue_writes_refuse_a_journal_replaced_since_it_was_opened(
    tmp_path: Path, write: Callable[[Queue], object]
) -> None:
    """The queue writes through the journal's write path, which checks, before every
    transaction, that the database is the one it opened."""
    path = tmp_path / "journal.db"
    with Journal.open(f"sqlite:///{path}") as journal:
        queue = Queue(journal)
        queue.register("w1", concurrency=1)
        _submit(queue, "vm1", "test:///a", "test:///b")
        for p in tmp_path.glob("journal.db*"):
            p.unlink()
        Journal.open(f"sqlite:///{path}").close()  # another command creates it again
        with pytest.raises(JournalReplaced, match="replaced by another file"):
            write(queue)
    with Journal.open(f"sqlite:///{path}") as fresh:
        assert (fresh.list(), Queue(fresh).workers()) == ([], [])
