"""The state table: reachability, terminal states, and refusal of every illegal trigger."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from migrator.diagram import mermaid
from migrator.errors import IllegalTransition
from migrator.states import (
    INTENT_STATES,
    TERMINAL,
    TRANSITIONS,
    State,
    Trigger,
    acquire_model,
    allowed,
    fire,
    next_state,
    release_model,
)


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


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("trigger", list(Trigger))
def test_machine_agrees_with_the_table_for_every_pair(state: State, trigger: Trigger) -> None:
    model = acquire_model(state)
    try:
        legal = trigger in allowed(state)
        if legal:
            assert fire(model, trigger) == next_state(state, trigger)
        else:
            with pytest.raises(IllegalTransition):
                fire(model, trigger)
            assert model.state == state, "a refused trigger must not move the machine"
            with pytest.raises(IllegalTransition):
                next_state(state, trigger)
    finally:
        release_model(model)


def test_a_machine_built_at_a_journaled_state_starts_there() -> None:
    model = acquire_model(State.PERFORMED)
    try:
        assert model.state == State.PERFORMED
        assert fire(model, Trigger.START_FINISH) == State.FINISHING
    finally:
        release_model(model)


def test_happy_path_of_v3_goes_through_five_intents_to_confirmed() -> None:
    path = [
        Trigger.START_BEGIN,
        Trigger.BEGIN_OK,
        Trigger.START_PREPARE,
        Trigger.PREPARE_OK,
        Trigger.START_PERFORM,
        Trigger.PERFORM_OK,
        Trigger.START_FINISH,
        Trigger.FINISH_OK,
        Trigger.START_CONFIRM,
        Trigger.CONFIRMED,
    ]
    state = State.NEW
    for trigger in path:
        state = next_state(state, trigger)
    assert state is State.CONFIRMED


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
