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
    """One sample of a long step (Perform): bytes, and passes over the guest memory."""

    total: int
    transferred: int
    remaining: int
    passes: int = 1

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


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
    the hook must then change nothing more on a host (docs/workers.md, "Fencing").
    """

    migration_id: str
    step: Step
    attempt: int = 1
    fence: int = 0
    deadline: float | None = None
    progress: Callable[[Progress], None] = field(default=_no_progress, compare=False)
    aborted: Callable[[], bool] = field(default=_never, compare=False)
    stopped: Callable[[], bool] = field(default=_never, compare=False)

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
