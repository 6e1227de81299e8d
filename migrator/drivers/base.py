"""The driver seam under its first name: re-exports of ``api``, ``registry`` and ``uri``.

New code imports from those modules; this one keeps ``from migrator.drivers.base import
...`` working. It imports no concrete driver.
"""

from __future__ import annotations

from migrator.drivers.api import (
    COOKIE_MAX,
    BeginResult,
    ConfirmResult,
    DomainState,
    Driver,
    DriverFactory,
    Feature,
    FinishResult,
    ForgettingDriver,
    MigrationParams,
    OlderDriver,
    PerformResult,
    PrepareResult,
    ProbeResult,
    TunnelledDriver,
    TunnelResult,
    TunnelStream,
    forget,
    is_blocking,
)
from migrator.drivers.flagcheck import refuse_unhonoured
from migrator.drivers.registry import ENTRY_POINT_GROUP, connect, schemes
from migrator.drivers.uri import redact_uri
from migrator.records import StepContext

__all__ = [
    "COOKIE_MAX",
    "ENTRY_POINT_GROUP",
    "BeginResult",
    "ConfirmResult",
    "DomainState",
    "Driver",
    "DriverFactory",
    "Feature",
    "FinishResult",
    "ForgettingDriver",
    "MigrationParams",
    "OlderDriver",
    "PerformResult",
    "PrepareResult",
    "ProbeResult",
    "StepContext",
    "TunnelResult",
    "TunnelStream",
    "TunnelledDriver",
    "connect",
    "forget",
    "is_blocking",
    "redact_uri",
    "refuse_unhonoured",
    "schemes",
]
