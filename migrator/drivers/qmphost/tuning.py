"""A QMP source's convergence controls and job statistics (docs/convergence.md).

Before ``migrate``: capabilities (``auto-converge``) and parameters (``downtime-limit``,
``max-bandwidth``, ``max-postcopy-bandwidth``) from the controls the engine queued. While
the data goes, each poll makes the controls waiting (``migrate-set-parameters``, or
``stop`` for ``PAUSE``) in the same QMP session that reads ``query-migrate``, and turns its
``ram`` statistics into a ``Progress``. Parallel connections (``multifd``, with
``multifd-channels``) are set on both sides before the data goes: the destination's
Prepare, before ``migrate-incoming``, from ``MigrationParams.connections``, and the source
before ``migrate`` (``capabilities``, ``source.py``); the ``PARALLEL`` control says the same.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from migrator.convergence.policy import Setting
from migrator.drivers.qmp import Monitor
from migrator.drivers.qmphost.config import MIB
from migrator.errors import DriverError
from migrator.records import Control, ControlKind, Progress

HONOURED: frozenset[Setting] = frozenset(
    {
        Setting.DOWNTIME,
        Setting.SPEED,
        Setting.POSTCOPY_BANDWIDTH,
        Setting.JOB_STATS,
        Setting.PAUSE,
        Setting.AUTO_CONVERGE,
        Setting.PARALLEL,
    }
)
_PARAMETER = {
    ControlKind.DOWNTIME: ("downtime-limit", 1),
    ControlKind.SPEED: ("max-bandwidth", MIB),
    ControlKind.POSTCOPY_SPEED: ("max-postcopy-bandwidth", MIB),
    ControlKind.PARALLEL: ("multifd-channels", 1),
}
"""Each control that is a migration parameter: its name and the unit of its value."""


@dataclass
class Tuning:
    """What the controls set, for the final statistics."""

    downtime_limit_ms: int
    paused_at: float | None = None
    """``time.monotonic()`` when ``PAUSE`` stopped the guest: its downtime starts there."""
    auto_converge: bool = False
    applied: list[str] = field(default_factory=list)

    def before_migrate(
        self, controls: list[Control]
    ) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """The capabilities and parameters to set before ``migrate``; each control is done."""
        capabilities: list[dict[str, Any]] = [{"capability": "events", "state": True}]
        parameters: dict[str, int] = {}
        for control in controls:
            if control.kind is ControlKind.AUTO_CONVERGE:
                self.auto_converge = bool(control.value)
                capabilities.append({"capability": "auto-converge", "state": self.auto_converge})
            elif control.kind is ControlKind.PARALLEL:  # the destination set the same count
                capabilities.append({"capability": "multifd", "state": True})
                parameters["multifd-channels"] = control.value
                self._note(control)
            elif control.kind in _PARAMETER:
                name, unit = _PARAMETER[control.kind]
                parameters[name] = control.value * unit
                self._note(control)
            else:
                control.done(f"QMP hosts do not honour {control.kind} before migrate")
                continue
            control.done(None)
        return capabilities, parameters

    def during(self, mon: Monitor, controls: list[Control]) -> None:
        """Make each control in flight; one QEMU refuses is done with its error."""
        for control in controls:
            try:
                self._make(mon, control)
            except DriverError as exc:
                control.done(f"refused by QEMU: {exc}")
            else:
                control.done(None)

    def _make(self, mon: Monitor, control: Control) -> None:
        if control.kind is ControlKind.PAUSE:
            mon.run("stop")
            self.paused_at = time.monotonic()
        elif control.kind in _PARAMETER and control.kind is not ControlKind.PARALLEL:
            name, unit = _PARAMETER[control.kind]
            mon.run("migrate-set-parameters", {name: control.value * unit})
            self._note(control)
        else:
            raise DriverError(f"{control.kind} can only be set before the data goes")

    def paused_ms(self) -> int | None:
        """How long the guest has been stopped by ``PAUSE`` (None: it was not)."""
        return None if self.paused_at is None else int((time.monotonic() - self.paused_at) * 1000)

    def _note(self, control: Control) -> None:
        if control.kind is ControlKind.DOWNTIME:
            self.downtime_limit_ms = control.value
        self.applied.append(f"{control.kind}={control.value}")


def progress(info: dict[str, Any], *, final: bool = False) -> Progress:
    """A progress sample from ``query-migrate``: bytes, the iteration (QEMU's
    ``dirty-sync-count``) and the job statistics a policy decides on."""
    ram = info.get("ram") or {}
    total = int(ram.get("total", 0))
    transferred = int(ram.get("transferred", 0))
    remaining = 0 if final else int(ram.get("remaining", 0))
    page = int(ram.get("page-size", 4096) or 4096)
    throttle = info.get("cpu-throttle-percentage")
    return Progress(
        total,
        transferred,
        remaining,
        passes=max(1, int(ram.get("dirty-sync-count", 1))),
        dirty_rate=int(ram.get("dirty-pages-rate", 0)) * page,
        expected_downtime_ms=_int(info.get("expected-downtime")),
        throttle_pct=_int(throttle) if throttle is not None else 0,
        postcopy_requests=_int(ram.get("postcopy-requests")),
    )


def _int(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) else None
