"""The blackout a hook could lengthen, measured from the journal's event timestamps.

Between Perform's outcome and the Finish call the guest runs nowhere (paused on the
source, not yet resumed on the destination). Hooks used to be called there, on the
coordinator's thread, once for Perform's ``step_finished`` and once for Finish's
``step_started``. The hook command here sleeps ``seconds`` on exactly those two events.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from migrator.journal.store import Journal
from migrator.records import Event, EventKind
from migrator.states import Step

HOOK_SECONDS = 5.0


@dataclass(frozen=True)
class Gap:
    outcome_to_intent: float
    """Seconds from Perform's outcome to Finish's intent (the events' ``at``)."""
    outcome_to_call: float
    """Seconds from Perform's outcome to the start of the Finish call (Finish's outcome
    ``at`` less its ``duration``)."""


def gap(journal: Journal, migration_id: str) -> Gap:
    history = journal.history(migration_id)
    performed = _one(history, Step.PERFORM, EventKind.OK)
    intent = _one(history, Step.FINISH, EventKind.INTENT)
    finished = _one(history, Step.FINISH, EventKind.OK)
    assert finished.duration is not None
    called = finished.at.timestamp() - finished.duration
    return Gap((intent.at - performed.at).total_seconds(), called - performed.at.timestamp())


def _one(history: list[Event], step: Step, kind: EventKind) -> Event:
    [found] = [e for e in history if e.step is step and e.kind == kind]
    return found


def slow_hook(tmp_path: Path, seconds: float = HOOK_SECONDS) -> str:
    """A hook command sleeping ``seconds`` on the two hook events of the blackout."""
    script = tmp_path / "slow_hook.py"
    script.write_text(
        "import json, sys, time\n"
        "e = json.load(sys.stdin)\n"
        "blackout = [('step_finished', 'perform'), ('step_started', 'finish')]\n"
        "if (sys.argv[1], e['event']['step']) in blackout:\n"
        f"    time.sleep({seconds})\n"
    )
    return f"{sys.executable} {script}"
