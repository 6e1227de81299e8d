"""The coordinator's public names, where they have always been importable from.

The engine lives in ``migrator/engine/`` (docs/architecture.md); this module is its front
door for embedders (``from migrator import Coordinator`` comes through here).
"""

from __future__ import annotations

from migrator.engine.coordinator import Coordinator, new_coordinator_id
from migrator.engine.flows import ABORTABLE
from migrator.engine.flows.v3 import ABORTED, NOT_STARTED
from migrator.engine.orphans import Recovered
from migrator.engine.run import Outcome, Run

__all__ = [
    "ABORTABLE",
    "ABORTED",
    "NOT_STARTED",
    "Coordinator",
    "Outcome",
    "Recovered",
    "Run",
    "new_coordinator_id",
]
