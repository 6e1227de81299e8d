"""Observers of a coordinator's migrations (``hooks`` of a Coordinator): what they are told.

A hook is any callable taking a :class:`HookEvent`. It observes, it never steers: it is
called only after the event is committed, never by the engine: the coordinator's delivery
thread reads the committed events from the journal and calls the hooks (``delivery.py``),
so a slow hook delays no step. What a hook raises is logged and forgotten, so no hook can
change a migration; hooks are called one after another, each migration's events in order.

Which hook events one journal event gives (``names_for``), in this order:

- ``migration_started``: the first intent of a migration (seq 1);
- ``step_started``: any intent; ``step_finished``: any outcome (``ok`` or ``error``) of a
  step, probes included (they have no intent);
- ``recovered``: recovery took the migration over after a crash (the event holds the
  state it found, the previous owner and the plan);
- ``migration_finished``: the migration reached an end state (``CONFIRMED``,
  ``ROLLED_BACK``, ``FAILED``, or ``IN_DOUBT`` until an operator resolves it).
"""

from __future__ import annotations

import enum
import logging
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from migrator.jsonform import event_dict, migration_dict
from migrator.records import CONVERGENCE, OUTCOMES, Event, EventKind, Migration
from migrator.states import TERMINAL, State

log = logging.getLogger("migrator.hooks")  # the name embedders and the CLI configure


class HookName(enum.StrEnum):
    MIGRATION_STARTED = "migration_started"
    STEP_STARTED = "step_started"
    STEP_FINISHED = "step_finished"
    RECOVERED = "recovered"
    MIGRATION_FINISHED = "migration_finished"
    CONVERGENCE = "convergence"
    """A note journaled beside Perform: a policy tuned, saw a stall or an overrun budget,
    took its action, or a runtime request was applied (docs/convergence.md)."""


ENDS: frozenset[State] = TERMINAL | {State.IN_DOUBT}


@dataclass(frozen=True, slots=True)
class HookEvent:
    """What a hook is told: its name, the migration as of the event (``delivery.as_of``),
    and the event as the journal holds it."""

    name: HookName
    migration: Migration
    event: Event

    def as_dict(self) -> dict[str, Any]:
        """JSON-able, as ``show --json`` writes a migration and an event."""
        return {
            "hook": str(self.name),
            "migration": migration_dict(self.migration),
            "event": event_dict(self.event),
        }


Hook = Callable[[HookEvent], None]


def names_for(event: Event, previous: State | str) -> list[HookName]:
    """The hook events ``event`` gives, ``previous`` being the state before it."""
    names = []
    if event.kind == EventKind.INTENT:
        if event.seq == 1:
            names.append(HookName.MIGRATION_STARTED)
        names.append(HookName.STEP_STARTED)
    elif event.kind in OUTCOMES and event.step is not None:
        names.append(HookName.STEP_FINISHED)
    elif event.kind == EventKind.RECOVERY and event.detail and "from_state" in event.detail:
        names.append(HookName.RECOVERED)
    elif event.kind in CONVERGENCE:
        names.append(HookName.CONVERGENCE)
    if event.state != previous and event.state in ENDS:
        names.append(HookName.MIGRATION_FINISHED)
    return names


class Hooks:
    """The coordinator's hooks; ``call`` calls each, and survives each."""

    def __init__(self, hooks: Iterable[Hook] = ()) -> None:
        self.hooks = list(hooks)

    def __bool__(self) -> bool:
        return bool(self.hooks)

    def call(self, hook_event: HookEvent) -> None:
        for hook in self.hooks:
            try:
                hook(hook_event)
            except Exception:  # a hook observes: its failure is only logged
                log.warning(
                    "hook %r failed on %s of migration %s: %s",
                    hook,
                    hook_event.name,
                    hook_event.migration.id,
                    sys.exc_info()[1],
                )
                log.debug("the hook's traceback", exc_info=True)
