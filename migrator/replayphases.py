"""Where a replayed migration's runs start and stop: its history cut into phases.

Each phase is one coordinator's run: the first ``migrate``, then each recovery (from its
claim) or operator's resolve. A phase that a later one follows stopped by a crash, and
the replay crashes at the same point: at a failpoint (``<step>.intent`` or
``<step>.recorded``, counted within the phase), or, for a recovery that died right after
journaling its claim, once that claim commits (docs/post-mortem.md, "Replay").
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from migrator.failpoints import Failpoints
from migrator.records import CONVERGENCE, OUTCOMES, Event, EventKind
from migrator.states import Step


class NthHit(Mapping[str, str]):
    """A failpoint map that arms ``name`` for its ``n``-th hit only.

    A crash after the third Confirm attempt must not be replayed as one after the first,
    and an ordinary failpoint fires at every hit.
    """

    def __init__(self, name: str, n: int) -> None:
        self.name, self.n, self.hits = name, n, 0

    def get(self, key: str, default: Any = None) -> Any:
        if key != self.name:
            return default
        self.hits += 1
        return "raise" if self.hits == self.n else default

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return str(value)

    def __iter__(self) -> Iterator[str]:
        return iter([self.name])

    def __len__(self) -> int:
        return 1


StopPoint = tuple[str, int]
"""Where a run stopped: a failpoint name and which hit of it, within that run."""

CLAIMED: StopPoint = ("claimed", 1)
"""A recovery that crashed right after journaling its claim, before any other event."""


NOTES = (EventKind.RECOVERY, EventKind.OK, EventKind.ERROR)
"""Kinds of the notes a phase may end with when its coordinator died right after one."""


def is_claim(event: Event) -> bool:
    """A recovery's first event: the claim, which names the state it found."""
    return event.kind == EventKind.RECOVERY and "from_state" in (event.detail or {})


def starts_phase(event: Event, previous: Event | None) -> bool:
    """A resolve, a claim, or (journals whose claims name no state) the first of a run of
    recovery events: the flows' own recovery notes (abandon, cancel) follow a claim."""
    if event.kind == EventKind.RESOLVE or is_claim(event):
        return True
    return event.kind == EventKind.RECOVERY and (
        previous is None or previous.kind != EventKind.RECOVERY
    )


def phases(history: Sequence[Event]) -> list[list[Event]]:
    """The history cut where a new coordinator took over: each recovery or resolve."""
    cut: list[list[Event]] = [[]]
    previous = None
    for event in history:
        if starts_phase(event, previous):
            cut.append([])
        cut[-1].append(event)
        previous = event
    return cut


def stop_point(phase: list[Event], *, first: bool) -> StopPoint | None:
    """Where a phase that a later one follows stopped: a crash, or None if it ended by itself.

    ``<step>.intent`` or ``<step>.recorded`` as the failpoints name them, counted within
    the phase; ``created`` for a migration that died before its first step.
    """
    if not phase:
        return ("created", 1) if first else None
    last = phase[-1]
    if len(phase) == 1 and is_claim(last):
        return CLAIMED  # the recovery itself died before it journaled anything more
    if last.kind in NOTES and (last.step is None or last.step is Step.PROBE):
        # Killed after a note (a probe, say) and before its next step.
        key = str(last.step or last.kind)
        return (f"{key}.noted", sum(1 for e in phase if str(e.step or e.kind) == key))
    if last.step is None or last.step is Step.PROBE:
        return None  # it stopped on its own (IN_DOUBT, say); no crash to replay
    intent = last.kind == EventKind.INTENT
    name = f"{last.step.value}.{'intent' if intent else 'recorded'}"
    kinds = (EventKind.INTENT,) if intent else tuple(OUTCOMES)
    return (name, sum(1 for e in phase if e.step is last.step and e.kind in kinds))


def armed(point: StopPoint | None, *, switch: bool = False) -> Failpoints:
    """The failpoints that stop a replayed phase where ``point`` says; ``CLAIMED``: once
    the recovery's claim is committed (alone, as the original recovery's was). ``switch``:
    Perform's progress asks for post-copy, as it was asked in the original."""
    if point == CLAIMED:
        hits = NthHit("recovery.noted", 1)
    else:
        hits = NthHit(*point) if point is not None else NthHit("", 0)
    return Failpoints(Switching(hits) if switch else hits if point is not None else None)


class Switching(NthHit):
    """``hits``, and ``perform.underway`` armed with ``postcopy``."""

    def __init__(self, hits: NthHit) -> None:
        super().__init__(hits.name, hits.n)

    def get(self, key: str, default: Any = None) -> Any:
        return "postcopy" if key == "perform.underway" else super().get(key, default)


def driven(history: Sequence[Event]) -> list[Event]:
    """The events replay compares: the engine's decisions. Not the queue's own events (a
    claim, a hand-back, an abort while queued; docs/workers.md), nor the notes journaled
    beside Perform (``CONVERGENCE``: timed by the job, docs/convergence.md)."""
    return [e for e in history if not _queue_only(e) and e.kind not in CONVERGENCE]


def _queue_only(event: Event) -> bool:
    queued_abort = event.kind == EventKind.ABORT and (event.detail or {}).get("queued")
    return event.kind == EventKind.QUEUE or bool(queued_abort)


def moved(history: Sequence[Event], role: str) -> set[str]:
    """Where recovery reached the ``role`` host instead (``recover --host-map``)."""
    found = set()
    for e in history:
        maps = (e.detail or {}).get("host_map") if e.kind == EventKind.RECOVERY else None
        if isinstance(maps, dict) and isinstance(maps.get(role), str):
            found.add(maps[role].partition(" -> ")[2])
    return found
