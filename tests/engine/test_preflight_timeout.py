"""A pre-flight check's timeout, whichever bound fires first (``Preflight._bounded``).

A libvirt driver bounds its own calls by the migration's timeout (``bound_calls``), so its
"no reply in time" and the hook runner's ``StepTimeout`` race for the same instant. The
request must fail as a timeout either way: a probe's driver failure counts as "cannot
tell" and lets the migration go on, which is right for a host that refused, not for one
that did not answer in time (``tests/drivers/libvirt/test_misbehaving.py`` met both ends of
the race on a loaded machine: one line on stderr, or a migration started and rolled back).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from migrator.engine.hookrunner import HookRunner
from migrator.engine.preflight import Preflight
from migrator.errors import HostUnreachable, StepTimeout

TIMEOUT = 0.05


class DriverBoundWins(HookRunner):
    """The runner's side of the race lost: the hook's own failure comes back first."""

    def call(self, fn: Callable[[], Any], **_: Any) -> Any:
        return fn()


class Host:
    blocking = True
    uri = "qemu+tcp://10.77.0.1/system"

    def __init__(self, after: float) -> None:
        self.after = after

    def probe(self, domain: str) -> Any:
        time.sleep(self.after)
        raise HostUnreachable("libvirt daemon: no reply in time")


def preflight() -> Preflight:
    return Preflight(DriverBoundWins, TIMEOUT)


def test_a_failure_once_the_timeout_passed_is_the_timeout() -> None:
    with pytest.raises(StepTimeout, match=r"pre-flight probe of qemu\+tcp://10\.77\.0\.1/system"):
        preflight()._best_effort_probe(Host(after=TIMEOUT * 2), "vm")  # type: ignore[arg-type]


def test_a_failure_within_the_timeout_leaves_the_host_to_the_steps() -> None:
    assert preflight()._best_effort_probe(Host(after=0.0), "vm") is None  # type: ignore[arg-type]
