"""migrator: crash-safe live migration of VMs with libvirt's five-step protocol (v3).

    from migrator import Coordinator, Journal, MigrateFlags, State, connect
    journal = Journal.open("sqlite:///migrator.db")
    coord = Coordinator(journal)
    m = coord.migrate("vm1", src=connect("test:///tmp/a"), dst=connect("test:///tmp/b"),
                      flags=MigrateFlags.LIVE)

Names are imported on first use, so ``import migrator`` (and ``migrator --help``) stays fast.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from migrator.convergence.policy import Action, Policy
    from migrator.drivers.api import COOKIE_MAX, DomainState, Driver, Feature, MigrationParams
    from migrator.drivers.registry import connect
    from migrator.engine.coordinator import Coordinator
    from migrator.engine.observers import HookEvent, HookName
    from migrator.errors import (
        DriverError,
        IllegalTransition,
        JournalError,
        MigratorError,
        SchemaOutOfDate,
        UsageError,
    )
    from migrator.flags import MigrateFlags
    from migrator.hostlimits import HostLimits
    from migrator.journal.store import Journal
    from migrator.records import (
        Control,
        ControlKind,
        Event,
        Migration,
        Progress,
        Request,
        StepContext,
    )
    from migrator.states import State, Step, Trigger
    from migrator.workers import Worker

logging.getLogger(__name__).addHandler(logging.NullHandler())

_HOMES = {
    "Action": "migrator.convergence.policy",
    "COOKIE_MAX": "migrator.drivers.api",
    "Control": "migrator.records",
    "ControlKind": "migrator.records",
    "Coordinator": "migrator.engine.coordinator",
    "DomainState": "migrator.drivers.api",
    "Driver": "migrator.drivers.api",
    "DriverError": "migrator.errors",
    "Event": "migrator.records",
    "Feature": "migrator.drivers.api",
    "HookEvent": "migrator.engine.observers",
    "HookName": "migrator.engine.observers",
    "HostLimits": "migrator.hostlimits",
    "IllegalTransition": "migrator.errors",
    "Journal": "migrator.journal.store",
    "JournalError": "migrator.errors",
    "MigrateFlags": "migrator.flags",
    "Migration": "migrator.records",
    "MigrationParams": "migrator.drivers.api",
    "MigratorError": "migrator.errors",
    "Policy": "migrator.convergence.policy",
    "Progress": "migrator.records",
    "Request": "migrator.records",
    "SchemaOutOfDate": "migrator.errors",
    "State": "migrator.states",
    "Step": "migrator.states",
    "StepContext": "migrator.records",
    "Trigger": "migrator.states",
    "UsageError": "migrator.errors",
    "Worker": "migrator.workers",
    "connect": "migrator.drivers.registry",
}

__all__ = [
    "COOKIE_MAX",
    "Action",
    "Control",
    "ControlKind",
    "Coordinator",
    "DomainState",
    "Driver",
    "DriverError",
    "Event",
    "Feature",
    "HookEvent",
    "HookName",
    "HostLimits",
    "IllegalTransition",
    "Journal",
    "JournalError",
    "MigrateFlags",
    "Migration",
    "MigrationParams",
    "MigratorError",
    "Policy",
    "Progress",
    "Request",
    "SchemaOutOfDate",
    "State",
    "Step",
    "StepContext",
    "Trigger",
    "UsageError",
    "Worker",
    "connect",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'migrator' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
