"""Each protocol's flow, chosen once per migration by its journaled protocol version.

Adding a protocol is adding a module here with its flow object and one line in ``FLOWS``;
adding a step or a failure rule to a protocol touches that protocol's module alone.
"""

from __future__ import annotations

from migrator.engine.flows.base import Flow
from migrator.engine.flows.v1 import V1Flow
from migrator.engine.flows.v2 import V2Flow
from migrator.engine.flows.v3 import V3Flow
from migrator.states import State

FLOWS: dict[int, Flow] = {3: V3Flow(), 2: V2Flow(), 1: V1Flow()}
"""The flow of each protocol version (tunnelled v3 is v3 with the TUNNELLED flag)."""

ABORTABLE: frozenset[State] = frozenset().union(*(f.abortable for f in FLOWS.values()))
"""States an abort can still turn back, in any protocol: until Perform's outcome is
committed. After that v3 asks Finish(cancelled=0) at once, so a later request could only
race it (and with v1 and v2 the source has already ended itself)."""


def flow_for(protocol: int) -> Flow:
    return FLOWS[protocol]
