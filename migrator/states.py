"""The migration state machine, declared once, as data.

``TRANSITIONS`` is the single source of truth: the coordinator fires its triggers,
recovery and replay read it, and ``diagram`` draws it. ``build_machine`` turns it into a
``transitions`` machine whose illegal triggers raise :class:`IllegalTransition`.

Intent states (``…ING``) are entered when the intent of a step is committed, before the
driver hook runs; outcome states when its result is committed.
"""

from __future__ import annotations

import enum
import functools
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from migrator.errors import IllegalTransition


class State(enum.StrEnum):
    NEW = "NEW"
    BEGINNING = "BEGINNING"
    BEGUN = "BEGUN"
    PREPARING = "PREPARING"
    PREPARED = "PREPARED"
    PREPARE_FAILED = "PREPARE_FAILED"
    PERFORMING = "PERFORMING"
    PERFORMED = "PERFORMED"
    PERFORM_FAILED = "PERFORM_FAILED"
    FINISHING = "FINISHING"
    FINISHED = "FINISHED"
    FINISH_FAILED = "FINISH_FAILED"
    CONFIRMING = "CONFIRMING"
    CONFIRMED = "CONFIRMED"
    ROLLED_BACK = "ROLLED_BACK"
    FAILED = "FAILED"
    IN_DOUBT = "IN_DOUBT"


class Step(enum.StrEnum):
    BEGIN = "begin"
    PREPARE = "prepare"
    PERFORM = "perform"
    FINISH = "finish"
    CONFIRM = "confirm"
    PROBE = "probe"


class Trigger(enum.StrEnum):
    START_BEGIN = "start_begin"
    BEGIN_OK = "begin_ok"
    BEGIN_FAILED = "begin_failed"
    START_PREPARE = "start_prepare"
    PREPARE_OK = "prepare_ok"
    PREPARE_FAILED = "prepare_failed"
    START_PERFORM = "start_perform"
    PERFORM_OK = "perform_ok"
    PERFORM_FAILED = "perform_failed"
    START_FINISH = "start_finish"
    FINISH_OK = "finish_ok"
    FINISH_FAILED = "finish_failed"
    START_CONFIRM = "start_confirm"
    CONFIRM_FAILED = "confirm_failed"
    CONFIRMED = "confirmed"
    ROLLED_BACK = "rolled_back"
    ABANDON = "abandon"
    GIVE_UP = "give_up"
    RESOLVE = "resolve"


@dataclass(frozen=True, slots=True)
class Transition:
    trigger: Trigger
    source: State
    dest: State


S, T = State, Trigger

TERMINAL: frozenset[State] = frozenset({S.CONFIRMED, S.ROLLED_BACK, S.FAILED})
"""States no trigger leaves. IN_DOUBT is not among them: an operator resolves it."""

INTENT_STATES: dict[State, Step] = {
    S.BEGINNING: Step.BEGIN,
    S.PREPARING: Step.PREPARE,
    S.PERFORMING: Step.PERFORM,
    S.FINISHING: Step.FINISH,
    S.CONFIRMING: Step.CONFIRM,
}

START: dict[Step, Trigger] = {
    Step.BEGIN: Trigger.START_BEGIN,
    Step.PREPARE: Trigger.START_PREPARE,
    Step.PERFORM: Trigger.START_PERFORM,
    Step.FINISH: Trigger.START_FINISH,
    Step.CONFIRM: Trigger.START_CONFIRM,
}
"""The trigger that commits each step's intent."""

# (trigger, sources, dest). The happy path of protocol v3 first, then each failure rule
# of DESIGN §2, then the recovery moves of DESIGN §6.
_TABLE: tuple[tuple[Trigger, tuple[State, ...], State], ...] = (
    (T.START_BEGIN, (S.NEW,), S.BEGINNING),
    (T.BEGIN_OK, (S.BEGINNING,), S.BEGUN),
    (T.START_PREPARE, (S.BEGUN,), S.PREPARING),
    (T.PREPARE_OK, (S.PREPARING,), S.PREPARED),
    (T.START_PERFORM, (S.PREPARED,), S.PERFORMING),
    (T.PERFORM_OK, (S.PERFORMING,), S.PERFORMED),
    # Finish(cancelled=0) after Perform; Finish(cancelled=1) to clean the destination
    # after a failure, or when recovery cancels a migration that never performed.
    (
        T.START_FINISH,
        (
            S.PERFORMED,
            S.PERFORM_FAILED,
            S.PREPARE_FAILED,
            S.PREPARING,
            S.PREPARED,
            S.FINISH_FAILED,
            S.IN_DOUBT,  # an operator resolved it to the source: clean the destination
        ),
        S.FINISHING,
    ),
    (T.FINISH_OK, (S.FINISHING,), S.FINISHED),
    # Confirm(cancelled = dst does not run the domain); from BEGUN/BEGINNING only to cancel.
    (
        T.START_CONFIRM,
        (S.FINISHED, S.FINISH_FAILED, S.BEGINNING, S.BEGUN),
        S.CONFIRMING,
    ),
    (T.CONFIRMED, (S.CONFIRMING,), S.CONFIRMED),
    (T.ROLLED_BACK, (S.CONFIRMING,), S.ROLLED_BACK),
    (T.BEGIN_FAILED, (S.BEGINNING,), S.FAILED),
    (T.PREPARE_FAILED, (S.PREPARING,), S.PREPARE_FAILED),
    (T.PERFORM_FAILED, (S.PERFORMING,), S.PERFORM_FAILED),
    (T.FINISH_FAILED, (S.FINISHING,), S.FINISH_FAILED),
    (T.CONFIRM_FAILED, (S.CONFIRMING,), S.CONFIRMING),
    (T.ABANDON, (S.NEW,), S.FAILED),
    (T.GIVE_UP, (S.PERFORMING, S.FINISHING, S.FINISHED, S.FINISH_FAILED), S.IN_DOUBT),
    (T.RESOLVE, (S.IN_DOUBT,), S.CONFIRMING),
)

TRANSITIONS: tuple[Transition, ...] = tuple(
    Transition(trigger, source, dest) for trigger, sources, dest in _TABLE for source in sources
)

_NEXT: dict[tuple[State, Trigger], State] = {(t.source, t.trigger): t.dest for t in TRANSITIONS}


def next_state(state: State, trigger: Trigger) -> State:
    """The state ``trigger`` leads to from ``state``; raise IllegalTransition if none."""
    try:
        return _NEXT[(state, trigger)]
    except KeyError:
        raise IllegalTransition(state=state, trigger=trigger) from None


def allowed(state: State) -> list[Trigger]:
    return [t.trigger for t in TRANSITIONS if t.source == state]


class Model(Protocol):
    state: Any

    def trigger(self, name: str) -> bool: ...


class MachineModel:
    """A minimal model for ``build_machine``; the machine adds ``state`` and ``trigger``."""


@functools.cache
def _machine() -> Any:
    """One machine for every model: building one costs a millisecond, adding a model less."""
    from transitions import Machine

    return Machine(
        model=None,
        states=list(State),
        transitions=[
            {"trigger": str(t.trigger), "source": str(t.source), "dest": str(t.dest)}
            for t in TRANSITIONS
        ],
        initial=None,
        auto_transitions=False,
        model_attribute="state",
    )


_POOL_MAX = 64


class _Pool:
    """Models already attached to the shared machine: adding one costs ~0.1 ms, reuse ~1 us."""

    def __init__(self) -> None:
        self.free: list[MachineModel] = []
        self.lock = threading.Lock()


@functools.cache
def _pool() -> _Pool:
    return _Pool()


def build_machine(model: object, initial: State) -> Any:
    """Attach the machine to ``model`` at ``initial`` (no callbacks fire) and return it.

    Call ``release_machine(model)`` when done, or the shared machine keeps the model alive.
    """
    machine = _machine()
    machine.add_model(model, initial=str(initial))
    return machine


def acquire_model(initial: State) -> MachineModel:
    """A model attached to the machine and set to ``initial`` (no callbacks fire)."""
    pool = _pool()
    with pool.lock:
        model = pool.free.pop() if pool.free else None
    if model is None:
        model = MachineModel()
        build_machine(model, initial)
    else:
        _machine().set_state(str(initial), model)
    return model


def release_model(model: MachineModel) -> None:
    pool = _pool()
    with pool.lock:
        if len(pool.free) < _POOL_MAX:
            pool.free.append(model)
            return
    release_machine(model)


def release_machine(model: object) -> None:
    _machine().remove_model(model)


def fire(model: Model, trigger: Trigger) -> State:
    """Fire ``trigger`` on a model built by ``build_machine``; MachineError becomes ours."""
    from transitions import MachineError

    before = model.state
    try:
        model.trigger(str(trigger))
    except MachineError:
        raise IllegalTransition(state=str(before), trigger=str(trigger)) from None
    return State(model.state)


def mermaid(path: list[State] | None = None) -> str:
    """The machine as a Mermaid state diagram; states on ``path`` are highlighted."""
    lines = ["stateDiagram-v2", f"    [*] --> {S.NEW}"]
    lines += [f"    {t.source} --> {t.dest}: {t.trigger}" for t in TRANSITIONS]
    lines += [f"    {state} --> [*]" for state in sorted(TERMINAL)]
    if path:
        lines.append("    classDef taken fill:#cfe8ff,stroke:#1565c0,stroke-width:2px")
        lines += [f"    class {state} taken" for state in dict.fromkeys(path)]
    return "\n".join(lines) + "\n"
