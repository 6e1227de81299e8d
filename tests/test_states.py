"""The state machine: reachability, terminal states, and refusal of every illegal trigger,
checked against what docs/states.md draws and the protocols' paths written out by hand."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from migrator.diagram import mermaid
from migrator.errors import IllegalTransition
from migrator.machine import acquire_model, allowed, fire, release_model
from migrator.states import INTENT_STATES, TERMINAL, TRANSITIONS, State, Trigger
from tests.conftest import ROOT


def _reachable() -> set[State]:
    seen, todo = {State.NEW}, [State.NEW]
    while todo:
        state = todo.pop()
        for t in TRANSITIONS:
            if t.source == state and t.dest not in seen:
                seen.add(t.dest)
                todo.append(t.dest)
    return seen


def test_every_state_is_reachable_from_new() -> None:
    assert _reachable() == set(State)


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_terminal_states_have_no_exits(state: State) -> None:
    assert allowed(state) == []


def test_every_non_terminal_state_can_reach_a_terminal_one() -> None:
    for start in set(State) - TERMINAL:
        seen, todo = {start}, [start]
        while todo:
            s = todo.pop()
            for t in TRANSITIONS:
                if t.source == s and t.dest not in seen:
                    seen.add(t.dest)
                    todo.append(t.dest)
        assert seen & TERMINAL, start


def test_each_intent_state_is_entered_only_by_a_start_trigger_or_a_retry() -> None:
    for t in TRANSITIONS:
        if t.dest in INTENT_STATES and t.source != t.dest:
            assert t.trigger.value.startswith("start_") or t.trigger is Trigger.RESOLVE, t


def _documented() -> dict[tuple[State, Trigger], State]:
    """The transitions docs/states.md draws (its Mermaid diagram): {(source, trigger): dest}."""
    text = (ROOT / "docs" / "states.md").read_text()
    found = re.findall(r"^    (\w+) --> (\w+): (\w+)$", text, flags=re.M)
    assert len(found) > 50, "docs/states.md no longer draws the transitions"
    return {(State(src), Trigger(trigger)): State(dst) for src, dst, trigger in found}


DOCUMENTED = _documented()


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("trigger", list(Trigger))
def test_the_machine_moves_exactly_as_docs_states_md_draws(state: State, trigger: Trigger) -> None:
    model = acquire_model(state)
    try:
        if (state, trigger) in DOCUMENTED:
            assert fire(model, trigger) is DOCUMENTED[(state, trigger)]
        else:
            with pytest.raises(IllegalTransition):
                fire(model, trigger)
            assert model.state == state, "a refused trigger must not move the machine"
    finally:
        release_model(model)


S, T = State, Trigger
PATHS: dict[str, tuple[State, list[tuple[Trigger, State]]]] = {
    "v3 confirmed": (S.NEW, [
        (T.START_BEGIN, S.BEGINNING), (T.BEGIN_OK, S.BEGUN),
        (T.START_PREPARE, S.PREPARING), (T.PREPARE_OK, S.PREPARED),
        (T.START_PERFORM, S.PERFORMING), (T.PERFORM_OK, S.PERFORMED),
        (T.START_FINISH, S.FINISHING), (T.FINISH_OK, S.FINISHED),
        (T.START_CONFIRM, S.CONFIRMING), (T.CONFIRMED, S.CONFIRMED),
    ]),
    "v3 Begin fails": (S.NEW, [(T.START_BEGIN, S.BEGINNING), (T.BEGIN_FAILED, S.FAILED)]),
    "v3 Prepare fails": (S.BEGUN, [
        (T.START_PREPARE, S.PREPARING), (T.PREPARE_FAILED, S.PREPARE_FAILED),
        (T.START_FINISH, S.FINISHING), (T.FINISH_OK, S.FINISHED),
        (T.START_CONFIRM, S.CONFIRMING), (T.ROLLED_BACK, S.ROLLED_BACK),
    ]),
    "v3 Perform fails": (S.PREPARED, [
        (T.START_PERFORM, S.PERFORMING), (T.PERFORM_FAILED, S.PERFORM_FAILED),
        (T.START_FINISH, S.FINISHING), (T.FINISH_OK, S.FINISHED),
        (T.START_CONFIRM, S.CONFIRMING), (T.ROLLED_BACK, S.ROLLED_BACK),
    ]),
    "v3 Finish fails, the destination runs it": (S.PERFORMED, [
        (T.START_FINISH, S.FINISHING), (T.FINISH_FAILED, S.FINISH_FAILED),
        (T.START_CONFIRM, S.CONFIRMING), (T.CONFIRM_FAILED, S.CONFIRMING),
        (T.CONFIRMED, S.CONFIRMED),
    ]),
    "v3 in doubt, resolved": (S.FINISH_FAILED, [
        (T.GIVE_UP, S.IN_DOUBT), (T.RESOLVE, S.CONFIRMING), (T.CONFIRMED, S.CONFIRMED),
    ]),
    "v3 recovery cancels after Begin": (S.BEGUN, [
        (T.START_CONFIRM, S.CONFIRMING), (T.ROLLED_BACK, S.ROLLED_BACK),
    ]),
    "v2 confirmed": (S.NEW, [
        (T.START_DUMP_XML, S.DUMPING), (T.DUMP_XML_OK, S.DUMPED),
        (T.START_PREPARE2, S.PREPARING2), (T.PREPARE2_OK, S.PREPARED2),
        (T.START_PERFORM2, S.PERFORMING2), (T.PERFORM2_OK, S.PERFORMED2),
        (T.START_FINISH2, S.FINISHING2), (T.FINISH2_FAILED, S.FINISHING2),
        (T.CONFIRMED, S.CONFIRMED),
    ]),
    "v2 Prepare2 fails": (S.DUMPED, [
        (T.START_PREPARE2, S.PREPARING2), (T.PREPARE2_FAILED, S.PREPARING2),
        (T.START_FINISH2, S.FINISHING2), (T.ROLLED_BACK, S.ROLLED_BACK),
    ]),
    "v2 domain lost": (S.PERFORMED2, [
        (T.START_FINISH2, S.FINISHING2), (T.DOMAIN_LOST, S.LOST),
    ]),
    "v1 confirmed": (S.NEW, [
        (T.START_PREPARE1, S.PREPARING1), (T.PREPARE1_OK, S.PREPARED1),
        (T.START_PERFORM1, S.PERFORMING1), (T.PERFORM1_OK, S.PERFORMED1),
        (T.START_FINISH1, S.FINISHING1), (T.CONFIRMED, S.CONFIRMED),
    ]),
    "v1 Prepare fails": (S.NEW, [(T.START_PREPARE1, S.PREPARING1), (T.PREPARE1_FAILED, S.FAILED)]),
    "queued, handed back, aborted": (S.QUEUED, [
        (T.CLAIM, S.NEW), (T.REQUEUE, S.QUEUED), (T.ABANDON, S.FAILED),
    ]),
}  # fmt: skip
"""Each protocol's paths as docs/states.md and docs/protocols.md tell them, written out by
hand: the triggers fired and the state each one must reach."""


@pytest.mark.parametrize("name", list(PATHS))
def test_each_protocol_path_reaches_the_states_the_docs_name(name: str) -> None:
    start, path = PATHS[name]
    model = acquire_model(start)
    try:
        assert [(trigger, fire(model, trigger)) for trigger, _ in path] == path
    finally:
        release_model(model)


@pytest.mark.parametrize(
    ("state", "trigger"),
    [(S.PERFORMED, T.START_CONFIRM), (S.PERFORMED, T.PERFORM_FAILED), (S.CONFIRMED, T.START_FINISH),
     (S.FINISHED, T.START_FINISH), (S.PERFORMED2, T.START_FINISH), (S.PREPARED1, T.START_FINISH1),
     (S.NEW, T.START_PERFORM), (S.QUEUED, T.START_BEGIN)],
    ids=str,
)  # fmt: skip
def test_the_machine_refuses_what_no_protocol_allows(state: State, trigger: Trigger) -> None:
    """Never Confirm after Perform without Finish; no step out of an end; v1 never cancels
    on the destination; nothing starts a queued migration but a claim."""
    model = acquire_model(state)
    try:
        with pytest.raises(IllegalTransition):
            fire(model, trigger)
        assert model.state == state
    finally:
        release_model(model)


def test_a_machine_built_at_a_journaled_state_starts_there() -> None:
    model = acquire_model(State.PERFORMED)
    try:
        assert model.state == State.PERFORMED
        assert fire(model, Trigger.START_FINISH) == State.FINISHING
    finally:
        release_model(model)


@given(st.lists(st.sampled_from(list(Trigger)), max_size=30))
def test_random_trigger_sequences_never_leave_the_table(triggers: list[Trigger]) -> None:
    model = acquire_model(State.NEW)
    try:
        state = State.NEW
        for trigger in triggers:
            try:
                state = fire(model, trigger)
            except IllegalTransition:
                assert trigger not in allowed(state)
            assert model.state == state
            assert state in _reachable()
    finally:
        release_model(model)


def test_mermaid_lists_every_transition_and_highlights_a_path() -> None:
    text = mermaid([State.NEW, State.BEGINNING, State.FAILED])
    assert text.startswith("stateDiagram-v2\n")
    for t in TRANSITIONS:
        assert f"{t.source} --> {t.dest}: {t.trigger}" in text
    assert "class FAILED taken" in text
    assert "class CONFIRMED taken" not in text
