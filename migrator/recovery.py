"""Recovery plans: what to do with a migration whose coordinator died (docs/recovery.md).

``plan`` is pure: from the journaled state and events it decides the action, so that
``recover --dry-run`` prints exactly what ``recover`` then does. Each protocol's plans live
in its flow (``migrator/engine/flows/``), which carries them out with the same
write-ahead steps it uses for a live migration; this module is their front for the
command line and for tools.

Before the point of no return (Finish reporting the domain running on the destination)
recovery only goes back; after it, only forward. Where the journal leaves a doubt (an
intent with no outcome) it replays the step with the journaled inputs, relying on the
hooks' idempotency, or asks the hosts (``probe``); it never destroys a copy on the
strength of "not found" on the other host.
"""

from __future__ import annotations

from collections.abc import Sequence

from migrator.engine.flows import flow_for
from migrator.engine.flows.base import Plan
from migrator.records import Event, Migration


def plan(migration: Migration, history: Sequence[Event]) -> Plan:
    """The recovery action for ``migration`` as the journal leaves it."""
    return flow_for(migration.protocol).plan(migration, history)
