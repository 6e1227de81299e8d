"""What every protocol's flow shares: the engine it drives with, the shape of a flow,
recovery plans, and what a failed Finish means (docs/states.md, docs/recovery.md).

A flow is one protocol's steps, failure rules and recovery plans. The coordinator picks
one per migration (``flows/__init__.py``) and never asks which protocol it speaks again.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from migrator.drivers.api import ProbeResult
from migrator.engine.retry import RetryPolicy
from migrator.engine.run import Run
from migrator.engine.steps import Steps
from migrator.engine.writeahead import WriteAhead
from migrator.records import Event, EventDraft, EventKind, Migration
from migrator.states import TERMINAL, State, Step


@dataclass(frozen=True)
class Engine:
    """What a flow drives a migration with: the journal writes, the hook calls, the retries."""

    writes: WriteAhead
    steps: Steps
    retry: RetryPolicy


class Action(enum.StrEnum):
    """What recovery does with a migration (the ``action`` of ``recover --dry-run``)."""

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
    POSTCOPY_RESUME = "postcopy-resume"
    POSTCOPY_REPLAY_RESUME = "postcopy-replay-resume"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Plan:
    action: Action
    text: str
    cancelled: bool | None = None
    attempt: int = 1
    reason: str | None = None
    """For a replayed rollback: the cause the Confirm intent recorded."""


RECOVERABLE: frozenset[State] = frozenset(State) - TERMINAL - {State.IN_DOUBT, State.QUEUED}
"""States recovery acts on; IN_DOUBT waits for an operator (``migrator resolve``), QUEUED
for a worker (docs/workers.md)."""

ABANDONED = Plan(Action.ABANDON, "FAILED: abandoned before Begin")


def waits_for_operator(state: State) -> Plan:
    return Plan(Action.NONE, f"nothing: {state} waits for an operator (`migrator resolve`)")


class Flow(Protocol):
    """One protocol, as the coordinator drives it."""

    @property
    def protocol(self) -> int:
        """The protocol version journaled with the migration."""

    @property
    def abortable(self) -> frozenset[State]:
        """States an abort can still turn back: until Perform's outcome is committed."""

    def drive(self, engine: Engine, run: Run) -> None:
        """Run a new migration, journaled as created, to an end state."""

    def plan(self, migration: Migration, history: Sequence[Event]) -> Plan:
        """Recovery's action for ``migration`` as the journal leaves it (pure)."""

    def carry_out(self, engine: Engine, run: Run, plan: Plan) -> None:
        """Do what ``plan`` says, with the same write-ahead steps as a live migration."""

    def resolve(self, engine: Engine, run: Run, running_on: str) -> None:
        """An operator's decision for an IN_DOUBT migration (the note is journaled)."""


def last_event(history: Sequence[Event], step: Step, kind: EventKind | None = None) -> Event | None:
    """The newest event of ``step`` (of ``kind``, if given)."""
    for event in reversed(history):
        if event.step is step and (kind is None or event.kind == kind):
            return event
    return None


def flag(value: bool | None) -> int:
    return int(bool(value))


class FinishVerdict(enum.StrEnum):
    """What a failed Finish means, from a probe of the destination: written once."""

    RUNS = "the destination runs the domain"
    CANNOT_TELL = "the destination cannot be probed"
    ABSENT = "the destination does not run the domain"


def judge_finish(probe: ProbeResult | None) -> FinishVerdict:
    """Finish raised, so its effect is unknown: never guess, ask the destination."""
    if probe is None:
        return FinishVerdict.CANNOT_TELL
    return FinishVerdict.RUNS if probe.state.active else FinishVerdict.ABSENT


class Then(enum.Enum):
    """A failure rule's consequence; each flow maps it to its own steps."""

    FORWARD = "forward"
    """The domain runs on the destination: complete the migration."""
    BACK = "back"
    """The destination surely runs no copy: back to the source, cleaning the destination as
    the protocol can (v3 retries its cancelling Finish; v2 had retried Finish2 already)."""
    GIVE_UP = "give up"
    """Nobody can tell where the domain is: IN_DOUBT, for an operator."""
    LOST = "lost"
    """v1/v2: the source ended itself and the destination did not start it."""


def crash_reason(run: Run) -> str:
    return run.migration.reason or f"cancelled by recovery after a crash in {run.state}"


def set_reason_if_none(engine: Engine, run: Run) -> None:
    """Recovery cancels: say why, unless the journal already does."""
    if run.migration.reason is None:
        draft = EventDraft(kind=EventKind.RECOVERY, detail={"cancel": True})
        engine.writes.note(run, draft, reason=crash_reason(run))
