"""Counts and durations over the journal, as typed values."""

from __future__ import annotations

import pytest

from migrator.journal.store import Journal
from migrator.records import EventDraft, Migration
from migrator.states import State, Step

pytestmark = pytest.mark.no_replay  # events written by hand, not by the engine


def _ended(journal: Journal, state: State, reason: str | None = None) -> Migration:
    m = journal.create(
        domain="vm", src="test:///a", dst="test:///b", protocol=3, flags=1, bandwidth=0, owner="c"
    )
    return journal.record(m, EventDraft(kind="end"), state=state, reason=reason)


def test_counts_by_state_are_states_most_frequent_first(journal: Journal) -> None:
    for state in (State.FAILED, State.CONFIRMED, State.CONFIRMED):
        _ended(journal, state)
    assert journal.count_by_state() == [(State.CONFIRMED, 2), (State.FAILED, 1)]


def test_counts_by_reason_keep_to_the_given_states(journal: Journal) -> None:
    _ended(journal, State.FAILED, "disk on fire")
    _ended(journal, State.FAILED, "disk on fire")
    _ended(journal, State.ROLLED_BACK, "perform failed")
    _ended(journal, State.CONFIRMED)
    assert journal.count_by_reason(states=[State.FAILED]) == [("disk on fire", 2)]
    assert journal.count_by_reason()[0] == ("disk on fire", 2)


def test_duration_buckets_count_each_outcome_at_most_its_bucket(journal: Journal) -> None:
    m = journal.create(
        domain="vm", src="test:///a", dst="test:///b", protocol=3, flags=1, bandwidth=0, owner="c"
    )
    for kind, seconds in (("ok", 0.5), ("ok", 2.0), ("error", 0.1)):
        draft = EventDraft(kind=kind, step=Step.BEGIN, duration=seconds)
        m = journal.record(m, draft, state=State.NEW)
    got = journal.duration_buckets([1.0, 5.0])
    assert got[("begin", "ok")] == ([1, 2], 2.5, 2)
    assert got[("begin", "error")].calls == 1
