"""Frozen records: what the journal returns and what the engine hands to drivers."""

from __future__ import annotations

import dataclasses
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

from migrator.states import State, Step


class EventKind(enum.StrEnum):
    """What a journal event records; the values are the text the journal stores."""

    INTENT = "intent"
    """A step is about to be called, with every input it will use (write-ahead)."""
    OK = "ok"
    """A step's hook returned; its outputs."""
    ERROR = "error"
    """A step's hook raised; the error as text."""
    RECOVERY = "recovery"
    """Recovery took the migration over, or a note of what it decided."""
    RESOLVE = "resolve"
    """An operator said where the domain runs (``migrator resolve``)."""
    ABORT = "abort"
    """An abort request was honoured."""
    IN_DOUBT = "in_doubt"
    """The engine cannot tell where the domain runs and stopped."""
    DECIDED = "decided"
    """v1/v2: an end decided from a probe or an operator, with no step of its own."""
    QUEUE = "queue"
    """A worker claimed a queued migration, or handed it back to the queue (docs/workers.md)."""
    TUNED = "tuned"
    """A policy changed a setting of Perform in flight (the downtime ramp, docs/convergence.md)."""
    STALLED = "stalled"
    """A policy saw Perform stall: the remaining bytes did not shrink over its passes."""
    OVER_BUDGET = "over_budget"
    """A policy saw Perform overrun its completion budget."""
    ACTION = "action"
    """A policy took its action (abort, pause, postcopy) on a stall or an overrun budget."""
    REQUEST = "request"
    """A runtime request (``set-downtime``, ``set-speed``, ``postcopy``) was applied or refused."""


CONVERGENCE: frozenset[EventKind] = frozenset(
    {EventKind.TUNED, EventKind.STALLED, EventKind.OVER_BUDGET, EventKind.ACTION, EventKind.REQUEST}
)
"""The kinds journaled beside Perform (docs/convergence.md): notes of what a policy or a
request did, timed by the job, not decisions of the engine's flow."""


OUTCOMES: frozenset[EventKind] = frozenset({EventKind.OK, EventKind.ERROR})
"""The kinds that record a step's outcome."""


class Keep(enum.Enum):
    """The sentinel for "leave the migration's reason as it is"."""

    REASON = "keep the reason"


KEEP_REASON: Final = Keep.REASON
Reason = str | None | Literal[Keep.REASON]
"""A new reason for a migration, None to clear it, or ``KEEP_REASON`` to keep it."""


@dataclass(frozen=True, slots=True)
class Progress:
    """One sample of a long step (Perform): bytes, and passes over the guest memory; and,
    from a driver that reads them, the job statistics a convergence policy decides on."""

    total: int
    transferred: int
    remaining: int
    passes: int = 1
    """The iteration: the passes over the guest memory begun so far."""
    dirty_rate: int | None = None
    """Bytes the guest dirties per second."""
    expected_downtime_ms: int | None = None
    throttle_pct: int | None = None
    """How much auto-converge slows the guest's vCPUs down."""
    postcopy_requests: int | None = None
    """Pages the destination asked for after a switch to post-copy."""

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


class ControlKind(enum.StrEnum):
    """A setting of Perform in flight that the engine asks a source driver to change."""

    DOWNTIME = "downtime"
    """The allowed downtime, milliseconds."""
    SPEED = "speed"
    """The pre-copy bandwidth, MiB/s."""
    POSTCOPY_SPEED = "postcopy-speed"
    """The post-copy bandwidth, MiB/s."""
    AUTO_CONVERGE = "auto-converge"
    """Throttle the guest's vCPUs while it does not converge (set before the data goes)."""
    PARALLEL = "parallel"
    """Send over this many connections (multifd; set before the data goes)."""
    PAUSE = "pause"
    """Suspend the source so that the last pass completes."""


def _ignore_result(error: str | None) -> None:
    return None


@dataclass(frozen=True, slots=True)
class Control:
    """One change for a driver to make during Perform; it calls ``done`` with None once
    made, or with why it could not. ``done`` returns at once: whatever it records is
    written by the engine beside the step, never in the driver's loop."""

    kind: ControlKind
    value: int = 0
    done: Callable[[str | None], None] = field(default=_ignore_result, compare=False)


class RequestKind(enum.StrEnum):
    """A runtime request an operator journals for a migration in Perform."""

    DOWNTIME = "downtime"
    """``set-downtime``: the allowed downtime, ms."""
    SPEED = "speed"
    """``set-speed``: the bandwidth, MiB/s."""
    POSTCOPY = "postcopy"
    """``postcopy``: switch to post-copy now (force-complete)."""


@dataclass(frozen=True, slots=True)
class Request:
    """A runtime request as the journal holds it; ``applied_at`` None while pending."""

    id: int
    migration_id: str
    kind: RequestKind
    value: int | None
    requested_at: datetime
    applied_at: datetime | None = None
    outcome: str | None = None

    @property
    def pending(self) -> bool:
        return self.applied_at is None


@dataclass(frozen=True, slots=True)
class Migration:
    id: str
    domain: str
    dname: str | None
    src: str
    dst: str
    protocol: int
    flags: int
    bandwidth: int
    state: State
    reason: str | None
    owner: str | None
    lease_expires_at: datetime | None
    fence: int
    last_seq: int
    abort_requested: bool
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    progress: dict[str, Any] | None
    trace_id: str | None = None
    """The W3C trace id of the migration's trace (32 hex digits, docs/tracing.md)."""

    @property
    def dest_name(self) -> str:
        return self.dname or self.domain


@dataclass(frozen=True, slots=True)
class Event:
    migration_id: str
    seq: int
    step: Step | None
    kind: EventKind
    state: State
    at: datetime
    cancelled: bool | None = None
    cookie_in: bytes | None = None
    cookie_out: bytes | None = None
    uri: str | None = None
    description: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    detail: dict[str, Any] | None = None
    coordinator: str | None = None
    attempt: int = 1
    duration: float | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    """An event as the journal's log gives it (``Journal.events_after``): its journal-wide
    position, which a reader resumes from, and the migration's reason as of the event
    (None on events journaled before schema revision 0005)."""

    position: int
    event: Event
    reason: str | None


def _no_progress(progress: Progress) -> None:
    return None


def _never() -> bool:
    return False


def _no_controls() -> list[Control]:
    return []


@dataclass(frozen=True, slots=True)
class StepContext:
    """What the engine tells a driver hook about the call it is making.

    A hook is idempotent per ``(migration_id, step)`` (for Finish and Confirm, per
    ``(migration_id, step, cancelled)``): called again with the same key it returns the same
    result, or a harmless equivalent, and changes nothing more.
    ``fence`` grows whenever another coordinator takes the migration over; a host may refuse
    a call with a lower fence than one it has seen. A long hook reports ``progress`` and
    gives up (raising) when ``aborted()`` turns true or ``deadline`` (``time.monotonic``)
    passes; a hook that gave up must not take effect later. ``stopped()`` turns true once
    the engine stopped waiting for the call (its timeout, or the migration taken over):
    the hook must then change nothing more on a host (docs/workers.md, "Fencing"). A
    Perform hook that honours controls (``drivers/api.py``: ``honoured_controls``) takes
    ``controls()`` at each of its polls, and before the data goes, and makes each one
    (docs/convergence.md).
    """

    migration_id: str
    step: Step
    attempt: int = 1
    fence: int = 0
    deadline: float | None = None
    progress: Callable[[Progress], None] = field(default=_no_progress, compare=False)
    aborted: Callable[[], bool] = field(default=_never, compare=False)
    stopped: Callable[[], bool] = field(default=_never, compare=False)
    controls: Callable[[], list[Control]] = field(default=_no_controls, compare=False)

    def time_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()


@dataclass(frozen=True, slots=True)
class EventDraft:
    """An event before the journal gives it a seq, a time and the state it leads to."""

    kind: EventKind
    step: Step | None = None
    cancelled: bool | None = None
    cookie_in: bytes | None = None
    cookie_out: bytes | None = None
    uri: str | None = None
    description: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    detail: dict[str, Any] | None = None
    attempt: int = 1
    duration: float | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """One event to journal and the state it leads to; several commit as one transaction
    (``Journal.record_changes``: a step's outcome with the next step's intent)."""

    draft: EventDraft
    state: State
    reason: Reason = KEEP_REASON
