"""Replay: today's engine against recorded journals, and the detection of divergence."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from migrator.engine.coordinator import Coordinator
from migrator.failpoints import Crash, Failpoints
from migrator.journal.store import Journal
from migrator.replay import replay
from migrator.states import State
from tests.conftest import Hosts, run_cli

CORPUS = Path(__file__).parent / "replay_corpus"


@pytest.fixture
def corpus(tmp_path: Path) -> str:
    """A copy of the committed journal (opening may upgrade it; the original stays as it is)."""
    copy = tmp_path / "journal.db"
    shutil.copy(CORPUS / "journal-0001.db", copy)
    return f"sqlite:///{copy}"


def _ids(url: str) -> list[str]:
    with Journal.open(url) as journal:
        return [m.id for m in journal.list()]


def test_the_corpus_covers_every_end_state(corpus: str) -> None:
    with Journal.open(corpus) as journal:
        states = {m.state.value for m in journal.list()}
    assert states == {"CONFIRMED", "ROLLED_BACK", "FAILED", "IN_DOUBT", "CONFIRMING"}


def test_every_recorded_journal_replays_consistently(corpus: str) -> None:
    with Journal.open(corpus) as journal:
        results = [replay(journal, mid) for mid in _ids(corpus)]
    assert len(results) >= 16
    assert [r.as_dict() for r in results if not r.consistent] == []


def test_a_changed_outcome_is_reported_as_the_first_divergence(corpus: str) -> None:
    """If Finish had said "not running", today's engine would roll back: replay says so."""
    path = corpus.removeprefix("sqlite:///")
    with Journal.open(corpus) as journal:
        target = next(m for m in journal.list() if m.domain == "success")
        finish_ok = next(
            e
            for e in journal.history(target.id)
            if e.step and e.step.value == "finish" and e.kind == "ok"
        )
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE migration_events SET detail = ? WHERE migration_id = ? AND seq = ?",
            ('{"running": false}', target.id, finish_ok.seq),
        )
    conn.close()
    proc = run_cli("replay", target.id[:8], "--json", db=corpus)
    assert proc.returncode == 1, proc.stderr
    assert '"consistent": false' in proc.stdout
    assert f'"seq": {finish_ok.seq + 1}' in proc.stdout  # Confirm's cancelled flag differs


def test_replay_cli_says_consistent_and_exits_zero(corpus: str) -> None:
    mid = _ids(corpus)[0]
    proc = run_cli("replay", mid[:8], db=corpus)
    assert proc.returncode == 0, proc.stderr
    assert "consistent" in proc.stdout


@pytest.mark.parametrize("second", ["finish.called", "confirm.intent", "finish.recorded"])
def test_a_recovery_that_crashed_and_was_recovered_replays_consistently(
    second: str, journal: Journal, hosts: Hosts
) -> None:
    """Crash at finish.intent; the recovery crashes too (at ``second``); recover again."""
    first = Coordinator(journal, failpoints=Failpoints({"finish.intent": "raise"}))
    with pytest.raises(Crash):
        first.migrate("vm1", src=hosts.src, dst=hosts.dst)
    connect = {hosts.src_uri: hosts.src, hosts.dst_uri: hosts.dst}.__getitem__
    crashing = Coordinator(journal, connect=connect, failpoints=Failpoints({second: "raise"}))
    with pytest.raises(Crash):
        crashing.recover(steal=True)
    [report] = Coordinator(journal, connect=connect).recover(steal=True)
    assert report.result is State.CONFIRMED
    result = replay(journal, report.id)
    assert result.consistent, result.as_dict()
