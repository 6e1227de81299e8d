"""Recovery plans: what to do with a migration whose coordinator died (DESIGN §6).

``plan`` is pure: from the journaled state and events it decides the action, so that
``recover --dry-run`` prints exactly what ``recover`` then does. The coordinator carries
plans out with the same write-ahead steps it uses for a live migration.

Before the point of no return (Finish reporting the domain running on the destination)
recovery only goes back; after it, only forward. Where the journal leaves a doubt (an
intent with no outcome) it replays the step with the journaled inputs, relying on the
hooks' idempotency, or asks the hosts (``probe``); it never destroys a copy on the
strength of "not found" on the other host.
"""

from __future__ import annotations

import enum
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from migrator.records import Event, Migration
from migrator.states import TERMINAL, State, Step


class Action(enum.StrEnum):
    ABANDON = "abandon"
    CANCEL = "cancel"
    CANCEL_WITH_CLEANUP = "cancel-with-cleanup"
    PROBE_PERFORM = "probe-perform"
    FINISH = "finish"
    REPLAY_FINISH = "replay-finish"
    AFTER_FINISH_FAILED = "after-finish-failed"
    AFTER_PERFORM_FAILED = "after-perform-failed"
    CONFIRM = "confirm"
    GIVE_UP = "give-up"
    REPLAY_CONFIRM = "replay-confirm"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Plan:
    action: Action
    text: str
    cancelled: bool | None = None
    attempt: int = 1
    reason: str | None = None
    """For a replayed rollback: the cause the Confirm intent recorded."""


RECOVERABLE: frozenset[State] = frozenset(State) - TERMINAL - {State.IN_DOUBT}
"""States recovery acts on; IN_DOUBT waits for an operator (``migrator resolve``)."""


def _last(history: Sequence[Event], step: Step, kind: str | None = None) -> Event | None:
    for event in reversed(history):
        if event.step is step and (kind is None or event.kind == kind):
            return event
    return None


def _flag(value: bool | None) -> int:
    return int(bool(value))


def plan(migration: Migration, history: Sequence[Event]) -> Plan:
    """The recovery action for ``migration`` as the journal leaves it."""
    state = migration.state
    if migration.protocol in OLDER_STEPS:
        return plan_older(migration, history)
    if migration.abort_requested and state in (State.PERFORMING, State.PERFORMED):
        return Plan(
            Action.CANCEL_WITH_CLEANUP,
            "aborted: Finish(cancelled=1) on the destination, then Confirm(cancelled=1)",
            True,
        )
    simple = _SIMPLE.get(state)
    if simple is not None:
        return simple
    if state is State.FINISHING:
        intent = _last(history, Step.FINISH, "intent")
        cancelled = bool(intent and intent.cancelled)
        attempt = (intent.attempt if intent else 1) + 1
        text = f"replay Finish(cancelled={_flag(cancelled)}), then Confirm as its outcome says"
        return Plan(Action.REPLAY_FINISH, text, cancelled, attempt)
    if state is State.FINISH_FAILED:
        failed = _last(history, Step.FINISH)
        cancelled = bool(failed and failed.cancelled)
        attempt = failed.attempt if failed else 1
        text = (
            f"probe the destination after Finish(cancelled={_flag(cancelled)}) failed:"
            " forward if it runs the domain, else cancel"
        )
        return Plan(Action.AFTER_FINISH_FAILED, text, cancelled, attempt)
    if state is State.FINISHED:
        return _after_finished(history)
    if state is State.CONFIRMING:
        intent = _last(history, Step.CONFIRM, "intent")
        last = _last(history, Step.CONFIRM)
        cancelled = bool(intent and intent.cancelled)
        attempt = (last.attempt if last else 1) + 1
        cause = (intent.detail or {}).get("reason") if intent else None
        return Plan(
            Action.REPLAY_CONFIRM,
            f"replay Confirm(cancelled={_flag(cancelled)})",
            cancelled,
            attempt,
            str(cause) if cause else None,
        )
    return Plan(Action.NONE, f"nothing: {state} waits for an operator (`migrator resolve`)")


def _after_finished(history: Sequence[Event]) -> Plan:
    ok = _last(history, Step.FINISH, "ok")
    running = bool(ok and ok.detail and ok.detail.get("running"))
    if ok is not None and ok.cancelled and running:
        return Plan(Action.GIVE_UP, "IN_DOUBT: Finish(cancelled=1) reported the domain running")
    return Plan(Action.CONFIRM, f"Confirm(cancelled={_flag(not running)})", not running)


_SIMPLE: dict[State, Plan] = {
    State.NEW: Plan(Action.ABANDON, "FAILED: abandoned before Begin"),
    State.BEGINNING: Plan(Action.CANCEL, "Confirm(cancelled=1) on the source", True),
    State.BEGUN: Plan(Action.CANCEL, "Confirm(cancelled=1) on the source", True),
    **{
        s: Plan(
            Action.CANCEL_WITH_CLEANUP,
            "Finish(cancelled=1) on the destination, then Confirm(cancelled=1) on the source",
            True,
        )
        for s in (State.PREPARING, State.PREPARED, State.PREPARE_FAILED, State.PERFORM_FAILED)
    },
    State.PERFORMING: Plan(
        Action.PROBE_PERFORM,
        "probe the source: if the transfer completed go on as PERFORMED, else cancel",
    ),
    State.PERFORMED: Plan(
        Action.FINISH, "Finish(cancelled=0), then Confirm as its outcome says", False
    ),
}


# -- protocols v2 and v1 (see older.py) ----------------------------------------------------

OLDER_STEPS: dict[int, tuple[Step, Step]] = {
    2: (Step.PERFORM2, Step.FINISH2),
    1: (Step.PERFORM1, Step.FINISH1),
}
"""Per older protocol, its Perform and Finish steps."""


def plan_older(migration: Migration, history: Sequence[Event]) -> Plan:
    """Recovery for v2 and v1: back before Perform, judge Perform by the source, forward
    after it. v1 cannot cancel on the destination, so its way back ends FAILED."""
    state, v = migration.state, migration.protocol
    perform, finish = OLDER_STEPS[v]
    if state is State.NEW:
        return _SIMPLE[State.NEW]
    if state in (State.DUMPING, State.DUMPED):
        return Plan(Action.ABANDON, "FAILED: DumpXML changed nothing on the source")
    if state in (State.PREPARING2, State.PREPARED2):
        return Plan(
            Action.CANCEL_WITH_CLEANUP,
            "Finish2(cancelled=1) on the destination; the source never stopped",
            True,
        )
    if state in (State.PREPARING1, State.PREPARED1):
        return Plan(
            Action.CANCEL_WITH_CLEANUP,
            "FAILED: the source never stopped; v1 cannot cancel on the destination",
            True,
        )
    if state in (State.PERFORMING2, State.PERFORMING1):
        last = _last(history, perform)
        attempt = last.attempt if last else 1
        back = "Finish2(cancelled=1)" if v == 2 else "FAILED"
        if last is not None and last.kind == "error":
            return Plan(
                Action.AFTER_PERFORM_FAILED,
                f"probe the source after Perform failed: forward with Finish if it is gone,"
                f" else {back}",
                attempt=attempt,
            )
        return Plan(
            Action.PROBE_PERFORM,
            "probe the source: forward with Finish if it sent the domain or is gone,"
            f" else replay Perform ({back} if an abort was asked)",
            attempt=attempt,
        )
    name = "Finish2(cancelled=0)" if v == 2 else "Finish (v1)"
    if state in (State.PERFORMED2, State.PERFORMED1):
        return Plan(Action.FINISH, f"{name}: its outcome ends the migration", False)
    if state in (State.FINISHING2, State.FINISHING1):
        intent = _last(history, finish, "intent")
        last = _last(history, finish)
        cancelled = bool(intent and intent.cancelled)
        attempt = (last.attempt if last else 1) + 1
        if cancelled:
            name = "Finish2(cancelled=1)"
        return Plan(Action.REPLAY_FINISH, f"replay {name}", cancelled, attempt)
    return Plan(Action.NONE, f"nothing: {state} waits for an operator (`migrator resolve`)")


# -- ownership -----------------------------------------------------------------------------


def owner_is_dead(owner: str | None, *, hostname: str | None = None) -> bool:
    """True only when the owner provably died: it ran on this host and its process is gone."""
    if not owner:
        return True
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != (hostname or socket.gethostname()) or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def claimable(
    migration: Migration, *, steal: bool = False, now: datetime | None = None
) -> str | None:
    """Why ``migration`` may be claimed now ("lease lapsed", ...), or None if it may not."""
    if migration.state not in RECOVERABLE:
        return None
    if steal:
        return "stolen (--steal)"
    if owner_is_dead(migration.owner):
        return "owner process is gone"
    expires = migration.lease_expires_at
    if expires is None or expires <= (now or datetime.now(UTC)):
        return "lease lapsed"
    return None
