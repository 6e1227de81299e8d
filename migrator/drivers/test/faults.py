"""Injected faults of the test driver: their modes, checks, and what they do to a hook."""

from __future__ import annotations

import enum
import time
from typing import Any

from migrator.drivers.api import (
    MigrationParams,
)
from migrator.drivers.test.transfer import NAP
from migrator.errors import DriverError
from migrator.flags import MigrateFlags
from migrator.states import Step

HANG_GRACE = 1.0

FINISH_STEPS = (Step.FINISH, Step.FINISH2, Step.FINISH1)
PERFORM_STEPS = (Step.PERFORM, Step.PERFORM2, Step.PERFORM1)


class FaultMode(enum.StrEnum):
    ERROR = "error"
    LOST_REPLY = "lost-reply"
    NO_DOMAIN = "no-domain"
    IO_ERROR = "io-error"
    HANG = "hang"
    SLOW = "slow"
    UNREACHABLE = "unreachable"


def check_fault(step: str, mode: str, seconds: float | None, count: int | None) -> None:
    steps = [str(s) for s in Step]
    modes = [str(m) for m in FaultMode]
    if step not in steps:
        raise ValueError(f"unknown step {step!r}; valid steps: {', '.join(steps)}")
    if mode not in modes:
        raise ValueError(f"unknown fault mode {mode!r}; valid modes: {', '.join(modes)}")
    if mode == FaultMode.NO_DOMAIN and step not in FINISH_STEPS:
        raise ValueError(f"fault mode no-domain applies only to finish steps, not {step}")
    if mode == FaultMode.IO_ERROR and step not in PERFORM_STEPS:
        raise ValueError(f"fault mode io-error applies only to perform steps, not {step}")
    if seconds is not None and seconds < 0:
        raise ValueError(f"fault seconds must be >= 0, not {seconds}")
    if count is not None and count < 1:
        raise ValueError(f"fault count must be >= 1, not {count}")


def hang(step: str, deadline: float | None) -> None:
    while deadline is None or time.monotonic() < deadline + HANG_GRACE:
        time.sleep(NAP)
    raise DriverError(f"hung: injected hang in {step} gave up after its deadline")


def injected_io_errors(fault: dict[str, Any] | None, params: MigrationParams) -> int:
    """An injected I/O error during Perform: fatal with ABORT_ON_ERROR, else counted."""
    if fault is None or fault["mode"] != FaultMode.IO_ERROR:
        return 0
    if params.flags & MigrateFlags.ABORT_ON_ERROR:
        raise DriverError(
            fault["message"] or "I/O error during migration: aborted (abort-on-error)"
        )
    return 1
