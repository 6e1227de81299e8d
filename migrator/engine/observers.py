"""Observers the engine calls after each journal commit (``hooks`` of a Coordinator).

A hook is any callable taking a :class:`HookEvent`. It observes, it never steers: it is
called only after the event is committed, and what it raises is logged and forgotten, so
no hook can change a migration. Hooks run on the coordinator's thread, in order; a slow
hook delays the migration (``CommandHook`` has a timeout for that reason).

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
from dataclasses import dataclass, fields
from typing import Any

from migrator.jsonform import event_dict, migration_dict
from migrator.records import OUTCOMES, Event, EventDraft, EventKind, Migration
from migrator.states import TERMINAL, State

log = logging.getLogger("migrator.hooks")  # the name embedders and the CLI configure


class HookName(enum.StrEnum):
    MIGRATION_STARTED = "migration_started"
    STEP_STARTED = "step_started"
    STEP_FINISHED = "step_finished"
    RECOVERED = "recovered"
    MIGRATION_FINISHED = "migration_finished"


ENDS: frozenset[State] = TERMINAL | {State.IN_DOUBT}


@dataclass(frozen=True, slots=True)
class HookEvent:
    """What a hook is told: its name, the migration as committed, and the journal event."""

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


_DRAFT_FIELDS = tuple(f.name for f in fields(EventDraft))


def committed_event(migration: Migration, draft: EventDraft, coordinator: str | None) -> Event:
    """The event ``Journal.record`` just committed, rebuilt from its draft and result."""
    values = {name: getattr(draft, name) for name in _DRAFT_FIELDS}
    return Event(
        migration_id=migration.id,
        seq=migration.last_seq,
        state=migration.state,
        at=migration.updated_at,
        coordinator=coordinator,
        **values,
    )


def names_for(event: Event, previous: State | str) -> list[HookName]:
    names = []
    if event.kind == EventKind.INTENT:
        if event.seq == 1:
            names.append(HookName.MIGRATION_STARTED)
        names.append(HookName.STEP_STARTED)
    elif event.kind in OUTCOMES and event.step is not None:
        names.append(HookName.STEP_FINISHED)
    elif event.kind == EventKind.RECOVERY and event.detail and "from_state" in event.detail:
        names.append(HookName.RECOVERED)
    if event.state != previous and event.state in ENDS:
        names.append(HookName.MIGRATION_FINISHED)
    return names


class Hooks:
    """The coordinator's hooks; ``after_commit`` calls each, and survives each."""

    def __init__(self, hooks: Iterable[Hook] = ()) -> None:
        self.hooks = list(hooks)

    def __bool__(self) -> bool:
        return bool(self.hooks)

    def after_commit(
        self,
        migration: Migration,
        draft: EventDraft,
        previous: State | str,
        coordinator: str | None,
    ) -> None:
        """Call the hooks for the event ``draft`` just committed, which moved ``migration``
        from the state ``previous``."""
        if not self.hooks:
            return
        event = committed_event(migration, draft, coordinator)
        for name in names_for(event, previous):
            self.call(HookEvent(name, migration, event))

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
