"""The journal: one transaction per state change and event, gapless seq, fencing."""

from __future__ import annotations

import threading

import pytest

from migrator.errors import AmbiguousMigrationId, FenceLost, MigrationNotFound, StateConflict
from migrator.journal import reads
from migrator.journal.store import Journal
from migrator.jsonform import event_dict
from migrator.records import EventDraft, EventKind, Migration
from migrator.states import State, Step

pytestmark = pytest.mark.no_replay  # events written by hand, not by the engine


def _new(journal: Journal, domain: str = "vm1") -> Migration:
    return journal.create(
        domain=domain,
        src="test:///a",
        dst="test:///b",
        protocol=3,
        flags=1,
        bandwidth=0,
        owner="c1",
    )


def test_create_records_a_new_migration_with_fence_one(journal: Journal) -> None:
    m = _new(journal)
    stored = journal.get(m.id)
    assert (stored.state, stored.fence, stored.last_seq, stored.owner) == (State.NEW, 1, 0, "c1")
    assert stored.lease_expires_at is not None and stored.lease_expires_at > stored.created_at


def test_record_moves_the_state_and_appends_the_event_together(journal: Journal) -> None:
    m = _new(journal)
    cookie = bytes(range(256))
    m = journal.record(m, EventDraft(kind="intent", step=Step.BEGIN), state=State.BEGINNING)
    m = journal.record(
        m,
        EventDraft(kind="ok", step=Step.BEGIN, cookie_out=cookie, detail={"a": 1}),
        state=State.BEGUN,
    )
    assert journal.get(m.id).state is State.BEGUN
    events = journal.history(m.id)
    assert [(e.seq, e.kind, e.state) for e in events] == [
        (1, "intent", State.BEGINNING),
        (2, "ok", State.BEGUN),
    ]
    assert events[1].cookie_out == cookie
    assert events[1].detail == {"a": 1}
    assert events[1].at.tzinfo is not None


def test_seq_is_gapless_per_migration(journal: Journal) -> None:
    a, b = _new(journal, "a"), _new(journal, "b")
    for _ in range(3):
        a = journal.record(a, EventDraft(kind=EventKind.RECOVERY), state=State.NEW)
        b = journal.record(b, EventDraft(kind=EventKind.RECOVERY), state=State.NEW)
    assert [e.seq for e in journal.history(a.id)] == [1, 2, 3]
    assert [e.seq for e in journal.history(b.id)] == [1, 2, 3]


def test_a_stale_fence_writes_nothing(journal: Journal) -> None:
    m = _new(journal)
    stale = Migration(**_fields(m, fence=0))  # type: ignore[arg-type]
    with pytest.raises(FenceLost):
        journal.record(stale, EventDraft(kind="intent"), state=State.BEGINNING)
    assert journal.history(m.id) == []
    assert journal.get(m.id).state is State.NEW


def test_a_moved_state_writes_nothing(journal: Journal) -> None:
    m = _new(journal)
    journal.record(m, EventDraft(kind="intent"), state=State.BEGINNING)
    with pytest.raises(StateConflict):
        journal.record(m, EventDraft(kind="intent"), state=State.BEGINNING)  # m is still NEW
    assert len(journal.history(m.id)) == 1


def test_two_writers_racing_on_one_migration_commit_exactly_one(journal: Journal) -> None:
    m = _new(journal)
    results: list[str] = []

    def attempt() -> None:
        try:
            journal.record(m, EventDraft(kind="intent"), state=State.BEGINNING)
            results.append("ok")
        except StateConflict:
            results.append("refused")

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["ok", "refused", "refused", "refused"]
    assert [e.seq for e in journal.history(m.id)] == [1]


def test_find_accepts_a_unique_prefix(journal: Journal) -> None:
    m = _new(journal)
    assert journal.find(m.id[:6]).id == m.id
    assert journal.find(m.id.upper()).id == m.id


def test_find_refuses_unknown_and_ambiguous_prefixes(journal: Journal) -> None:
    ids = [_new(journal, f"vm{i}").id for i in range(40)]
    first = {i[0] for i in ids}
    shared = next(c for c in first if sum(i.startswith(c) for i in ids) > 1)
    with pytest.raises(AmbiguousMigrationId):
        journal.find(shared)
    with pytest.raises(MigrationNotFound):
        journal.find("zz")
    with pytest.raises(MigrationNotFound):
        journal.find("%")


def test_list_is_newest_first_and_filters_by_state(journal: Journal) -> None:
    a = _new(journal, "a")
    b = _new(journal, "b")
    journal.record(b, EventDraft(kind="intent"), state=State.BEGINNING)
    assert [m.domain for m in journal.list()] == ["b", "a"]
    assert [m.domain for m in journal.list(states=[State.NEW])] == ["a"]
    assert [m.domain for m in journal.list(limit=1)] == ["b"]
    assert a.id in {m.id for m in journal.list()}


def test_terminal_state_sets_finished_at_and_keeps_the_reason(journal: Journal) -> None:
    m = _new(journal)
    m = journal.record(m, EventDraft(kind="intent"), state=State.BEGINNING)
    m = journal.record(
        m,
        EventDraft(kind="error", error_type="X", error_message="boom"),
        state=State.FAILED,
        reason="begin failed: boom",
    )
    stored = journal.get(m.id)
    assert stored.finished_at is not None
    assert stored.reason == "begin failed: boom"


def test_progress_sample_is_kept_on_the_migration(journal: Journal) -> None:
    m = _new(journal)
    journal.set_progress(m, {"total": 10, "transferred": 4, "remaining": 6, "passes": 1})
    assert journal.get(m.id).progress == {
        "total": 10,
        "transferred": 4,
        "remaining": 6,
        "passes": 1,
    }


def _fields(m: Migration, **changes: object) -> dict[str, object]:
    import dataclasses

    return {**{f.name: getattr(m, f.name) for f in dataclasses.fields(m)}, **changes}


def test_exports_stream_each_migration_with_its_history_a_chunk_at_a_time(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reads, "STREAM_CHUNK", 2)
    monkeypatch.setattr(reads, "EXPORT_CHUNK", 2)
    made = []
    for i in range(5):
        m = journal.create(
            domain=f"vm{i}", src="null://a", dst="null://b", protocol=3, flags=1, bandwidth=0,
            owner="c",
        )  # fmt: skip
        for _ in range(i):
            m = journal.record(m, EventDraft(kind=EventKind.RECOVERY), state=State.NEW)
        made.append(m.id)
    streamed = [(m.id, history) for m, history in journal.exports()]
    assert [mid for mid, _ in streamed] == [m.id for m in journal.list()]
    assert sorted(mid for mid, _ in streamed) == sorted(made)
    for mid, events in streamed:
        assert events == [event_dict(e) for e in journal.history(mid)]
    assert [m.id for m in journal.stream()] == [m.id for m in journal.list()]
    assert journal.count() == 5
    assert journal.count(domain="vm3") == 1
