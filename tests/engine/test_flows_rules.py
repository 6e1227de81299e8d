"""The failure rules as data (``migrator/engine/flows/``): every case has exactly one rule,
and what a failed Finish means is judged once, from the destination's probe."""

from __future__ import annotations

import itertools

import pytest

from migrator.drivers.base import DomainState, ProbeResult
from migrator.engine.flows import ABORTABLE, FLOWS, flow_for, v2, v3
from migrator.engine.flows.base import FinishVerdict, Then, judge_finish
from migrator.engine.flows.v1 import V1Flow
from migrator.engine.flows.v2 import V2Flow
from migrator.states import OWN_STATES, State


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


def test_each_protocol_has_its_flow_and_aborts_only_its_own_states() -> None:
    assert {v: flow.protocol for v, flow in FLOWS.items()} == {1: 1, 2: 2, 3: 3}
    assert isinstance(flow_for(1), V1Flow) and type(flow_for(2)) is V2Flow
    for version, flow in FLOWS.items():
        assert flow.abortable <= OWN_STATES[version] | {State.NEW}
    assert frozenset().union(*(f.abortable for f in FLOWS.values())) == ABORTABLE


def test_v1_declares_only_its_differences_from_v2() -> None:
    """v1 is v2's flow with its own data and two rules: no description, no cancel."""
    own = {name for name in vars(V1Flow) if not name.startswith("__")}
    rules = {"description", "after_prepare_failed", "back"}
    assert own - rules <= {name for name, value in vars(V2Flow).items() if not callable(value)}
    assert rules <= own
