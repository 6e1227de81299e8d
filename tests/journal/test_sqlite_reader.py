"""``SqliteReader``: the reads of a SQLite journal on ``sqlite3``, equal to the journal's."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from migrator.errors import AmbiguousMigrationId, JournalUnavailable, MigrationNotFound
from migrator.journal.revisions import KNOWN_REVISIONS
from migrator.journal.sqlite_reader import SqliteReader
from migrator.journal.store import Journal
from migrator.jsonform import event_dict
from migrator.records import EventDraft, EventKind, Migration
from migrator.states import State, Step

pytestmark = pytest.mark.no_replay  # events written by hand, not by the engine


def _made(journal: Journal, domain: str, **draft: object) -> Migration:
    m = journal.create(
        domain=domain, src="null://a/x_%", dst="null://b", protocol=3, flags=1, bandwidth=0,
        owner="worker-7", dname=f"{domain}-new",
    )  # fmt: skip
    m = journal.record(m, EventDraft(kind=EventKind.INTENT, step=Step.BEGIN), state=State.NEW)
    journal.set_progress(m, {"total": 4, "transferred": 1, "remaining": 3, "passes": 1})
    ended = EventDraft(kind=EventKind.OK, step=Step.BEGIN, duration=0.25, **draft)  # type: ignore[arg-type]
    return journal.record(m, ended, state=State.FAILED, reason="disk on fire")


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'j.db'}"
    with Journal.open(url) as journal:
        _made(journal, "vm1", cookie_out=b"\x00\xffcookie", detail={"running": True})
        _made(journal, "vm2", cancelled=True, description="<domain/>")
        _made(journal, "vm3", cancelled=False, error_type="DriverError", error_message="x")
    return url


def test_every_read_gives_what_the_journal_gives(url: str) -> None:
    with Journal.open(url) as journal, SqliteReader.open(url) as reader:  # type: ignore[union-attr]
        made = journal.list()
        assert reader.list() == made
        assert reader.list(states=[State.FAILED], domain="vm2-new", host="x_%", owner="ker-") == [
            m for m in made if m.domain == "vm2"
        ]
        assert reader.count(host="_%") == 3 and reader.count(host="a_") == 0
        for m in made:
            assert reader.find(m.id[:8]) == reader.get(m.id) == m
            assert reader.history(m.id) == journal.history(m.id)
        assert list(reader.exports()) == list(journal.exports())
        for m, events in reader.exports():
            assert events == [event_dict(e) for e in journal.history(m.id)]
        assert reader.count_by_state() == journal.count_by_state()
        assert reader.count_by_reason() == [("disk on fire", 3)]
        assert reader.step_summaries() == journal.step_summaries()
        since = datetime.now(UTC) - timedelta(hours=1)
        assert reader.step_summaries(since=since) == journal.step_summaries(since=since)


def test_values_come_back_as_they_were_written(url: str) -> None:
    with SqliteReader.open(url) as reader:  # type: ignore[union-attr]
        by_domain = {m.domain: m for m in reader.list()}
        one = by_domain["vm1"]
        assert one.progress == {"total": 4, "transferred": 1, "remaining": 3, "passes": 1}
        assert one.created_at.tzinfo is UTC and one.abort_requested is False
        events = {m: reader.history(by_domain[m].id)[-1] for m in by_domain}
    assert events["vm1"].cookie_out == b"\x00\xffcookie"
    assert events["vm1"].detail == {"running": True}
    assert events["vm1"].cancelled is None
    assert events["vm2"].cancelled is True and events["vm2"].description == "<domain/>"
    assert events["vm3"].cancelled is False and events["vm3"].error_type == "DriverError"
    assert events["vm3"].kind is EventKind.OK and events["vm3"].step is Step.BEGIN


def test_an_unknown_or_ambiguous_id_is_refused_as_the_journal_refuses_it(url: str) -> None:
    with Journal.open(url) as journal:
        for i in range(14):  # 17 ids, 16 hexadecimal digits: two start alike
            _made(journal, f"more{i}")
        firsts = [m.id[0] for m in journal.list()]
    shared = next(c for c in firsts if firsts.count(c) > 1)
    with SqliteReader.open(url) as reader:  # type: ignore[union-attr]
        with pytest.raises(MigrationNotFound):
            reader.find("zz")
        with pytest.raises(MigrationNotFound):
            reader.get("0" * 36)
        with pytest.raises(AmbiguousMigrationId, match=f"{firsts.count(shared)} migrations"):
            reader.find(shared)


def test_a_database_error_is_journal_unavailable(url: str, tmp_path: Path) -> None:
    reader = SqliteReader.open(url)
    assert reader is not None
    with sqlite3.connect(tmp_path / "j.db") as conn:
        conn.execute("DROP TABLE migration_events")
    with reader, pytest.raises(JournalUnavailable, match="no such table: migration_events"):
        reader.history("0" * 36)


@pytest.mark.parametrize(
    "case", ["missing", "empty", "older", "foreign", "memory", "options", "escaped"]
)
def test_open_leaves_to_the_journal_what_reading_alone_cannot_do(case: str, tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    url = f"sqlite:///{path}"
    if case == "empty":
        path.touch()
    elif case == "older":
        with Journal.open(url, check=False) as journal:
            journal.upgrade(KNOWN_REVISIONS[-2])
    elif case == "foreign":
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE notes (body TEXT)")
    elif case == "memory":
        url = "sqlite:///:memory:"
    elif case in ("options", "escaped"):
        Journal.open(url).close()
        url = f"{url}?timeout=1" if case == "options" else url.replace("j.db", "j%2Edb")
    assert SqliteReader.open(url) is None
