"""The machine that runs every migration: the ``transitions`` machine built from the one
state table (``states.TRANSITIONS``).

The engine fires a trigger on a migration's model for every state change, and the
machine's callback commits it (``write``, the write-ahead rule) before the state changes;
an illegal trigger raises :class:`IllegalTransition` from the machine before any callback.
Recovery plans, replay and the diagram read the same machine (``next_state``, ``allowed``,
``Machine.table``).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from migrator.errors import IllegalTransition
from migrator.states import STATE_OF, TRANSITIONS, State, Transition, Trigger

T = TypeVar("T")


class MachineModel:
    """A migration as the machine sees it: its ``state``, and the engine it is driven by.

    For every trigger the machine calls the model's ``write`` (``send_event``: one
    ``EventData`` with the trigger's arguments and the transition) before the state
    changes: the engine's write-ahead commit. If it raises, the state stays where it was.
    After the state changed it calls ``call``: the work the trigger was fired with (its
    ``call`` argument), which is how a step's intent calls the step's driver hook.
    A model with no ``engine`` (a plan, a test) changes state and writes nothing.
    """

    state: str
    engine: Any = None
    run: Any = None

    def write(self, event: Any) -> None:
        if self.engine is not None:
            self.engine.write(self.run, event)

    def call(self, event: Any) -> None:
        work = event.kwargs.get("call")
        if work is not None:
            work()


def _lean_classes() -> tuple[type, type]:
    """``transitions``' Event and Transition for this table, which declares no conditions,
    no callbacks of its own and no queue: a trigger runs the machine's
    ``before_state_change`` (the model's ``write``), then changes the state, in the order
    the library's ``execute`` has, without its empty callback lists, condition checks,
    enter/exit dispatch, debug logging and queue hand-off (most of a trigger's cost).
    ``Machine.__init__`` checks that the table declares nothing these would skip."""
    from transitions import Event, EventData, Transition

    class LeanEvent(Event):
        def trigger(self, model: Any, *args: Any, **kwargs: Any) -> bool:
            # The library's ``_trigger`` less what this table never uses (finalize and
            # exception callbacks, debug logging): its validity check, then the one
            # transition of the source state (no conditions to choose between several).
            moves = self.transitions.get(model.state)
            if moves is None:  # the library's MachineError (invalid triggers are not ignored)
                return bool(self._is_valid_source(self.machine.get_state(model.state)))
            data = EventData(None, self, self.machine, model, args, kwargs)
            data.transition = moves[0]
            data.result = moves[0].execute(data)
            return True

    class LeanTransition(Transition):
        def execute(self, event_data: Any) -> bool:
            model = event_data.model
            machine = event_data.machine
            for name in machine.before_state_change:  # ["write"], by name
                getattr(model, name)(event_data)
            model.state = self.dest
            for name in machine.after_state_change:  # ["call"]
                getattr(model, name)(event_data)
            return True

    return LeanEvent, LeanTransition


class _Write:
    """The engine of a one-trigger model (``Machine.do``): its write callback is a function
    of the transition's destination."""

    def __init__(self, write: Callable[[State], Any]) -> None:
        self.do = write
        self.result: Any = None

    def write(self, run: object, event: Any) -> None:
        self.result = self.do(STATE_OF[event.transition.dest])


class Machine:
    """The ``transitions`` machine built from a table, with the models it drives.

    One machine holds every model (``add_model``); a model costs ~0.1 ms to attach and
    ~1 us to reuse, so released models are pooled. ``fire`` is the only way a migration's
    state changes (docs/architecture.md, "The machine"); ``next_state`` and ``allowed``
    read the same machine for plans, replay and the diagram.
    """

    _POOL_MAX = 64

    def __init__(self, table: tuple[Transition, ...]) -> None:
        from transitions import Machine as _Machine
        from transitions import MachineError

        class _Lean(_Machine):
            event_cls, transition_cls = _lean_classes()

        self._refused = MachineError

        self.table = table
        self.machine = _Lean(
            model=None,
            states=[str(s) for s in State],
            transitions=[
                {"trigger": str(t.trigger), "source": str(t.source), "dest": str(t.dest)}
                for t in table
            ],
            initial=None,
            auto_transitions=False,
            model_attribute="state",
            send_event=True,
            before_state_change="write",
            after_state_change="call",
        )
        # The lean classes skip what this table does not declare: make sure it does not.
        for event in self.machine.events.values():
            for moves in event.transitions.values():
                assert len(moves) == 1 and not (moves[0].prepare or moves[0].conditions)
                assert not (moves[0].before or moves[0].after)
        self._next = {
            (State(source), Trigger(name)): State(str(moves[0].dest))
            for name, event in self.machine.events.items()
            for source, moves in event.transitions.items()
        }
        self._free: list[MachineModel] = []
        self._lock = threading.Lock()

    def acquire(self, initial: State, *, engine: Any = None, run: Any = None) -> MachineModel:
        """A model at ``initial`` (no callback fires), driven by ``engine`` for ``run``."""
        with self._lock:
            model = self._free.pop() if self._free else None
        if model is None:
            model = MachineModel()
            self.machine.add_model(model, initial=str(initial))
        else:
            self.machine.set_state(str(initial), model)
        model.engine, model.run = engine, run
        return model

    def release(self, model: MachineModel) -> None:
        model.engine = model.run = None
        with self._lock:
            if len(self._free) < self._POOL_MAX:
                self._free.append(model)
                return
        self.machine.remove_model(model)

    def fire(self, model: MachineModel, trigger: Trigger, **kwargs: Any) -> State:
        """Fire ``trigger``: the machine checks it (IllegalTransition, before any callback),
        calls the model's ``write``, changes the state, then runs the ``call`` argument if
        given (a step's hook); returns the state the model is in after all of it."""
        event = self.machine.events.get(trigger)
        if event is None:  # a trigger the table does not have at all
            raise IllegalTransition(state=model.state, trigger=str(trigger))
        try:
            event.trigger(model, **kwargs)
        except self._refused:
            raise IllegalTransition(state=model.state, trigger=str(trigger)) from None
        return STATE_OF[model.state]

    def do(self, state: State, trigger: Trigger, write: Callable[[State], T]) -> T:
        """Fire ``trigger`` on a model at ``state`` whose write callback is ``write(dest)``
        (a queue's write, a claim): IllegalTransition before ``write`` if the table has no
        such move; what ``write`` returned."""
        engine = _Write(write)
        model = self.acquire(state, engine=engine)
        try:
            self.fire(model, trigger)
        finally:
            self.release(model)
        result: T = engine.result
        return result

    def next_state(self, state: State, trigger: Trigger) -> State:
        """The state ``trigger`` leads to from ``state``; raise IllegalTransition if none."""
        try:
            return self._next[(state, trigger)]
        except KeyError:
            raise IllegalTransition(state=state, trigger=trigger) from None

    def allowed(self, state: State) -> list[Trigger]:
        return [trigger for (source, trigger) in self._next if source == state]


@functools.cache
def machine(table: tuple[Transition, ...] = TRANSITIONS) -> Machine:
    """The machine of ``table`` (by default the one every migration runs on)."""
    return Machine(table)


def next_state(state: State, trigger: Trigger) -> State:
    """The state ``trigger`` leads to from ``state`` on the machine; IllegalTransition if none."""
    return machine().next_state(state, trigger)


def allowed(state: State) -> list[Trigger]:
    """The triggers the machine accepts in ``state``."""
    return machine().allowed(state)


def acquire_model(initial: State) -> MachineModel:
    """A model of the machine at ``initial`` that writes nothing (plans, tests)."""
    return machine().acquire(initial)


def release_model(model: MachineModel) -> None:
    machine().release(model)


def fire(model: MachineModel, trigger: Trigger, **kwargs: Any) -> State:
    """Fire ``trigger`` on a model of the machine; see :meth:`Machine.fire`."""
    return machine().fire(model, trigger, **kwargs)
