"""Protocol v3's recovery plans (docs/recovery.md): from the journal alone, what recovery
does with a migration whose coordinator died; ``flows/v3.py`` carries them out.

Back before the point of no return, forward after it; where an intent has no outcome, the
step is replayed with its journaled inputs (the next attempt), or the hosts are probed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from migrator.engine.flows.base import (
    ABANDONED,
    Action,
    Plan,
    flag,
    last_event,
    waits_for_operator,
)
from migrator.engine.run import switched
from migrator.records import Event, EventKind, Migration
from migrator.states import State, Step

FORWARD_POSTCOPY = (
    "post-copy, forward only: resume it (recover on the destination, resume on the source)"
    " until every page is sent, then Finish(cancelled=0) and Confirm(cancelled=0)"
)

CLEANUP = Plan(
    Action.CANCEL_WITH_CLEANUP,
    "Finish(cancelled=1) on the destination, then Confirm(cancelled=1) on the source",
    True,
)
SIMPLE: dict[State, Plan] = {
    State.NEW: ABANDONED,
    State.BEGINNING: Plan(Action.CANCEL, "Confirm(cancelled=1) on the source", True),
    State.BEGUN: Plan(Action.CANCEL, "Confirm(cancelled=1) on the source", True),
    State.PREPARING: CLEANUP,
    State.PREPARED: CLEANUP,
    State.PREPARE_FAILED: CLEANUP,
    State.PERFORM_FAILED: CLEANUP,
    State.PERFORMED: Plan(
        Action.FINISH, "Finish(cancelled=0), then Confirm as its outcome says", False
    ),
}
"""The states whose plan needs nothing but the state."""


def plan(migration: Migration, history: Sequence[Event]) -> Plan:
    """The recovery action for a v3 ``migration`` as the journal leaves it."""
    state = migration.state
    aborted = migration.abort_requested and not switched(history)  # after the switch: no
    if aborted and state in (State.PERFORMING, State.PERFORMED):
        return Plan(
            Action.CANCEL_WITH_CLEANUP,
            "aborted: Finish(cancelled=1) on the destination, then Confirm(cancelled=1)",
            True,
        )
    simple = SIMPLE.get(state)
    if simple is not None:
        return simple
    planner = _PLANNERS.get(state)
    return waits_for_operator(state) if planner is None else planner(history)


def _performing(history: Sequence[Event]) -> Plan:
    intent = last_event(history, Step.PERFORM, EventKind.INTENT)
    return Plan(
        Action.PROBE_PERFORM,
        "probe the source: if the transfer completed replay Perform for its cookie and go on"
        " as PERFORMED, else cancel",
        attempt=(intent.attempt if intent else 1) + 1,
    )


def _finishing(history: Sequence[Event]) -> Plan:
    intent = last_event(history, Step.FINISH, EventKind.INTENT)
    cancelled = bool(intent and intent.cancelled)
    attempt = (intent.attempt if intent else 1) + 1
    text = f"replay Finish(cancelled={flag(cancelled)}), then Confirm as its outcome says"
    return Plan(Action.REPLAY_FINISH, text, cancelled, attempt)


def _finish_failed(history: Sequence[Event]) -> Plan:
    failed = last_event(history, Step.FINISH)
    cancelled = bool(failed and failed.cancelled)
    text = (
        f"probe the destination after Finish(cancelled={flag(cancelled)}) failed:"
        " forward if it runs the domain, else cancel"
    )
    return Plan(Action.AFTER_FINISH_FAILED, text, cancelled, failed.attempt if failed else 1)


def _finished(history: Sequence[Event]) -> Plan:
    ok = last_event(history, Step.FINISH, EventKind.OK)
    running = bool(ok and ok.detail and ok.detail.get("running"))
    if ok is not None and ok.cancelled and running:
        return Plan(Action.GIVE_UP, "IN_DOUBT: Finish(cancelled=1) reported the domain running")
    if ok is not None and not ok.cancelled and not running and switched(history):
        return Plan(
            Action.GIVE_UP,
            "IN_DOUBT: Finish after post-copy reported the domain not running on the"
            " destination; find where the guest's state is, then `migrator resolve`",
        )
    return Plan(Action.CONFIRM, f"Confirm(cancelled={flag(not running)})", not running)


def _confirming(history: Sequence[Event]) -> Plan:
    intent = last_event(history, Step.CONFIRM, EventKind.INTENT)
    last = last_event(history, Step.CONFIRM)
    cancelled = bool(intent and intent.cancelled)
    cause = (intent.detail or {}).get("reason") if intent else None
    return Plan(
        Action.REPLAY_CONFIRM,
        f"replay Confirm(cancelled={flag(cancelled)})",
        cancelled,
        (last.attempt if last else 1) + 1,
        str(cause) if cause else None,
    )


def _postcopy(history: Sequence[Event]) -> Plan:
    last = last_event(history, Step.POSTCOPY_RESUME)
    return Plan(Action.POSTCOPY_RESUME, FORWARD_POSTCOPY, False, (last.attempt if last else 0) + 1)


def _postcopy_resuming(history: Sequence[Event]) -> Plan:
    intent = last_event(history, Step.POSTCOPY_RESUME, EventKind.INTENT)
    text = "replay the post-copy resumption, then " + FORWARD_POSTCOPY.partition(": ")[2]
    return Plan(Action.POSTCOPY_REPLAY_RESUME, text, False, (intent.attempt if intent else 1) + 1)


_PLANNERS: dict[State, Callable[[Sequence[Event]], Plan]] = {
    State.POSTCOPY_SWITCHING: _postcopy,
    State.POSTCOPY_ACTIVE: _postcopy,
    State.POSTCOPY_PAUSED: _postcopy,
    State.POSTCOPY_RESUMING: _postcopy_resuming,
    State.PERFORMING: _performing,
    State.FINISHING: _finishing,
    State.FINISH_FAILED: _finish_failed,
    State.FINISHED: _finished,
    State.CONFIRMING: _confirming,
}
