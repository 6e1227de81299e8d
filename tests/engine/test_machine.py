"""The ``transitions`` machine runs every migration: each state change is a trigger fired
on it, and a transition missing from the table stops the migration before anything of
that transition is written or called."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from migrator.drivers.registry import connect
from migrator.engine.coordinator import Coordinator
from migrator.errors import IllegalTransition
from migrator.journal.store import Journal
from migrator.machine import Machine, machine
from migrator.records import StepContext
from migrator.states import TRANSITIONS, State, Trigger

HOOKS = ("begin", "prepare", "perform", "finish", "confirm")


class _Recording:
    """A driver whose five step hooks record their calls."""

    def __init__(self, driver: Any, calls: list[str]) -> None:
        self._driver, self._calls = driver, calls

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._driver, name)
        if name not in HOOKS:
            return attr

        def hook(ctx: StepContext, *args: Any) -> Any:
            self._calls.append(name)
            return attr(ctx, *args)

        return hook


def _without(trigger: Trigger, source: State) -> Machine:
    table = tuple(t for t in TRANSITIONS if (t.trigger, t.source) != (trigger, source))
    assert len(table) == len(TRANSITIONS) - 1
    return machine(table)


def _migrate(journal: Journal, states: Machine | None, calls: list[str]) -> Any:
    src, dst = connect(f"null://{uuid.uuid4()}"), connect(f"null://{uuid.uuid4()}")
    src.define("vm1")  # type: ignore[attr-defined]
    coordinator = Coordinator(journal)
    if states is not None:
        coordinator.engine.writes.machine = states
    try:
        result = coordinator.migrate(
            "vm1",
            src=_Recording(src, calls),  # type: ignore[arg-type]
            dst=_Recording(dst, calls),  # type: ignore[arg-type]
        )
    finally:
        coordinator.close()
    return result


def test_a_migration_fires_every_state_change_on_the_machine(journal: Journal) -> None:
    fired: list[tuple[str, str]] = []
    states = machine()
    fire = states.fire

    def recording(model: Any, trigger: Trigger, **kwargs: Any) -> State:
        # In firing order: a step's failure or Confirm's outcome fires inside its intent's.
        fired.append((model.state, states.next_state(State(model.state), trigger)))
        return fire(model, trigger, **kwargs)

    states.fire = recording  # type: ignore[method-assign]
    calls: list[str] = []
    try:
        migration = _migrate(journal, None, calls)
    finally:
        del states.fire
    assert migration.state is State.CONFIRMED
    assert calls == list(HOOKS)
    path = [e.state for e in journal.history(migration.id)]  # one event a state change here
    assert [after for _, after in fired] == path
    assert fired[0][0] == State.NEW


def test_each_hook_is_called_by_the_machine_once_its_intent_committed(journal: Journal) -> None:
    states = machine()
    fire = states.fire
    firing: list[Trigger] = []

    class _Under(list[Any]):
        """Each hook call with the trigger being fired when it was made."""

        def append(self, name: Any) -> None:
            super().append((name, firing[-1] if firing else None))

    def recording(model: Any, trigger: Trigger, **kwargs: Any) -> State:
        firing.append(trigger)
        try:
            return fire(model, trigger, **kwargs)
        finally:
            firing.pop()

    states.fire = recording  # type: ignore[method-assign]
    calls = _Under()
    try:
        migration = _migrate(journal, None, calls)
    finally:
        del states.fire
    assert migration.state is State.CONFIRMED
    starts = [Trigger.START_BEGIN, Trigger.START_PREPARE, Trigger.START_PERFORM]
    starts += [Trigger.START_FINISH, Trigger.START_CONFIRM]
    assert calls == list(zip(HOOKS, starts, strict=True))


def test_a_missing_first_transition_writes_and_calls_nothing(journal: Journal) -> None:
    calls: list[str] = []
    with pytest.raises(IllegalTransition, match="start_begin"):
        _migrate(journal, _without(Trigger.START_BEGIN, State.NEW), calls)
    assert calls == []
    assert journal.list() == []  # the migration's row is written with its first intent


def test_a_missing_transition_mid_way_stops_before_its_hook_and_its_write(
    journal: Journal,
) -> None:
    calls: list[str] = []
    with pytest.raises(IllegalTransition, match="start_perform"):
        _migrate(journal, _without(Trigger.START_PERFORM, State.PREPARED), calls)
    assert calls == ["begin", "prepare"]
    (migration,) = journal.list()
    assert "perform" not in [str(e.step) for e in journal.history(migration.id)]
    assert migration.state is State.PREPARING  # Prepare's outcome was to commit with it


def test_an_illegal_trigger_leaves_the_model_where_it_was() -> None:
    states = machine()
    model = states.acquire(State.PREPARED)
    try:
        with pytest.raises(IllegalTransition):
            states.fire(model, Trigger.START_CONFIRM)
        assert model.state == State.PREPARED
    finally:
        states.release(model)
