"""The failure rules as data (``migrator/engine/flows/``): every case has exactly one rule,
and what a failed Finish means is judged once, from the destination's probe."""

from __future__ import annotations

import itertools

import pytest

from migrator import Coordinator
from migrator.drivers.api import DomainState, ProbeResult
from migrator.engine.flows import ABORTABLE, FLOWS, flow_for, v2, v3
from migrator.engine.flows.base import FinishVerdict, Then, judge_finish
from migrator.engine.flows.v1 import V1Flow
from migrator.engine.flows.v2 import V2Flow
from migrator.errors import UsageError
from migrator.journal.store import Journal
from migrator.records import EventDraft, EventKind
from migrator.states import POSTCOPY_STATES, State


@pytest.mark.parametrize(
    ("probe", "verdict"),
    [
        (None, FinishVerdict.CANNOT_TELL),
        (ProbeResult(state=DomainState.RUNNING), FinishVerdict.RUNS),
        (ProbeResult(state=DomainState.PAUSED), FinishVerdict.RUNS),
        (ProbeResult(state=DomainState.ABSENT), FinishVerdict.ABSENT),
        (ProbeResult(state=DomainState.SHUTOFF), FinishVerdict.ABSENT),
    ],
)
def test_a_failed_finish_is_judged_by_the_destination_alone(
    probe: ProbeResult | None, verdict: FinishVerdict
) -> None:
    assert judge_finish(probe) is verdict


@pytest.mark.parametrize("table", [v3.FAILED_FINISH, v2.FAILED_FINISH], ids=["v3", "v2"])
def test_every_failed_finish_has_one_rule(table: dict[tuple[FinishVerdict, bool], object]) -> None:
    assert set(table) == set(itertools.product(FinishVerdict, (False, True)))


@pytest.mark.parametrize("table", [v3.FAILED_FINISH, v2.FAILED_FINISH], ids=["v3", "v2"])
def test_a_failed_finish_goes_forward_only_when_the_destination_runs_it(
    table: dict[tuple[FinishVerdict, bool], tuple[Then, str]],
) -> None:
    forward = {case for case, (then, _text) in table.items() if then is Then.FORWARD}
    assert forward == {(FinishVerdict.RUNS, False)}


def test_only_v2_and_v1_can_lose_the_domain() -> None:
    assert all(then is not Then.LOST for then, _text in v3.FAILED_FINISH.values())
    assert [case for case, (then, _t) in v2.FAILED_FINISH.items() if then is Then.LOST] == [
        (FinishVerdict.ABSENT, False)
    ]


ABORTABLE_BY_PROTOCOL = {
    3: {State.NEW, State.BEGINNING, State.BEGUN, State.PREPARING, State.PREPARED,
        State.PERFORMING},
    2: {State.DUMPING, State.DUMPED, State.PREPARING2, State.PREPARED2, State.PERFORMING2},
    1: {State.PREPARING1, State.PREPARED1, State.PERFORMING1},
}  # fmt: skip
"""Written out from docs/states.md: an abort turns a migration back until Perform's outcome
is committed (a Perform that failed or was cut short included); never after it."""


def test_each_protocol_has_its_flow_and_aborts_until_performs_outcome() -> None:
    assert {v: flow.protocol for v, flow in FLOWS.items()} == {1: 1, 2: 2, 3: 3}
    assert isinstance(flow_for(1), V1Flow) and type(flow_for(2)) is V2Flow
    assert {v: set(flow_for(v).abortable) for v in (1, 2, 3)} == ABORTABLE_BY_PROTOCOL
    assert set(ABORTABLE) == set().union(*ABORTABLE_BY_PROTOCOL.values())


@pytest.mark.no_replay  # states written by hand, not reached by the engine
def test_an_abort_is_accepted_exactly_until_performs_outcome(journal: Journal) -> None:
    expected = set().union(*ABORTABLE_BY_PROTOCOL.values())
    coordinator = Coordinator(journal)
    accepted = set()
    for state in set(State) - {State.QUEUED}:  # a queued one ends at once (test_workers_cli)
        m = journal.create(
            domain="vm1", src="test:///a", dst="test:///b", protocol=3, flags=0, bandwidth=0,
            owner="c1",
        )  # fmt: skip
        m = journal.record(m, EventDraft(kind=EventKind.RECOVERY), state=state)
        try:
            coordinator.abort(m.id)
        except UsageError as exc:
            if state in POSTCOPY_STATES:  # a second point of no return, said so
                assert "switched to post-copy" in str(exc) and "cannot be aborted" in str(exc)
            else:
                assert "only a migration that has not finished Perform" in str(exc)
            assert not journal.get(m.id).abort_requested, state
        else:
            assert journal.get(m.id).abort_requested, state
            accepted.add(state)
    assert accepted == expected


def test_v1_declares_only_its_differences_from_v2() -> None:
    """v1 is v2's flow with its own data and two rules: no description, no cancel."""
    own = {name for name in vars(V1Flow) if not name.startswith("__")}
    rules = {"description", "after_prepare_failed", "back"}
    assert own - rules <= {name for name, value in vars(V2Flow).items() if not callable(value)}
    assert rules <= own
