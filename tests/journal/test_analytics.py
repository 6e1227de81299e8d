"""Counts and durations over the journal, as typed values."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from migrator.journal.store import Journal
from migrator.records import EventDraft, EventKind, Migration
from migrator.states import State, Step

pytestmark = pytest.mark.no_replay  # events written by hand, not by the engine


def _ended(journal: Journal, state: State, reason: str | None = None) -> Migration:
    m = journal.create(
        domain="vm", src="test:///a", dst="test:///b", protocol=3, flags=1, bandwidth=0, owner="c"
    )
    return journal.record(m, EventDraft(kind=EventKind.DECIDED), state=state, reason=reason)


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


@pytest.mark.parametrize("errors", [0, 1, 7])
def test_step_summaries_on_the_index_equal_those_of_every_outcome_read(
    journal: Journal, errors: int
) -> None:
    rng = random.Random(errors)
    m = journal.create(
        domain="vm", src="test:///a", dst="test:///b", protocol=3, flags=1, bandwidth=0, owner="c"
    )
    kinds = ["ok"] * 23 + ["error"] * errors
    rng.shuffle(kinds)
    for kind in kinds:
        for step in (Step.BEGIN, Step.PERFORM):
            draft = EventDraft(kind=kind, step=step, duration=round(rng.uniform(0, 5), 3))
            m = journal.record(m, draft, state=State.NEW)
    m = journal.record(m, EventDraft(kind="intent", step=Step.BEGIN), state=State.NEW)
    indexed = journal.step_summaries()
    long_ago = datetime.now(UTC) - timedelta(days=1)
    assert indexed == journal.step_summaries(since=long_ago)
    assert set(indexed) == {"begin", "perform"}
    assert indexed["begin"].count == 23 + errors
    assert indexed["begin"].errors == errors
