"""A test host's pre-copy passes after the image's first one, simulated from a dirty rate.

A domain defined with a dirty rate (``test-host define --dirty-rate MIB``) dirties that
many MiB per second while it runs: after the image went once, each further pass sends what
was dirtied during the one before (at most the whole memory), until the expected downtime
(what is left over the bandwidth) fits the allowed downtime, when the last pass goes with
the domain paused. The passes take real time (they sleep at the bandwidth), so Perform's
controls, abort and deadline act on them as on a real job:

- ``DOWNTIME`` and ``SPEED`` change the allowed downtime and the bandwidth at once;
  ``POSTCOPY_SPEED`` the bandwidth after a switch to post-copy (recorded; the passes
  after a switch have nothing dirtied to send);
- ``AUTO_CONVERGE`` throttles the dirty rate 20 % after a pass that did not converge,
  then 10 % more after each (at most 99 %), as QEMU does;
- ``PARALLEL`` is recorded (the bandwidth is the total over the connections);
- ``PAUSE`` suspends the domain: nothing is dirtied, the next pass is the last one, and
  the downtime runs from the pause.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from migrator.drivers.test.transfer import MIB, NAP
from migrator.errors import DriverError, StepAbandoned
from migrator.records import ControlKind, Progress, StepContext

DOWNTIME_MS = 300
"""The allowed downtime when nobody sets one (QEMU's default)."""
MAX_PASSES = 100_000


class Precopy:
    """The passes of one Perform; ``take`` applies the controls waiting for it."""

    def __init__(self, ctx: StepContext, total: int, dirty_mib_s: float, bandwidth_mib: int):
        self.ctx = ctx
        self.total = total
        self.dirty = dirty_mib_s * MIB
        self.bandwidth = bandwidth_mib
        self.downtime_ms = DOWNTIME_MS
        self.throttle = 0
        self.auto_converge = False
        self.parallel = 1
        self.postcopy_bandwidth: int | None = None
        self.paused_at: float | None = None
        self.passes = 1
        self.transferred = 0
        self.controlled = False
        self.switched: Callable[[], bool] = lambda: False
        """Whether the migration switched to post-copy: the guest then runs on the
        destination and dirties nothing here; the pages left go once, as they are pulled."""

    def take(self) -> None:
        for control in self.ctx.controls():
            self.controlled = True
            if control.kind is ControlKind.DOWNTIME:
                self.downtime_ms = control.value
            elif control.kind is ControlKind.SPEED:
                self.bandwidth = control.value
            elif control.kind is ControlKind.POSTCOPY_SPEED:
                self.postcopy_bandwidth = control.value
            elif control.kind is ControlKind.AUTO_CONVERGE:
                self.auto_converge = bool(control.value)
            elif control.kind is ControlKind.PARALLEL:
                self.parallel = control.value
            elif control.kind is ControlKind.PAUSE and self.paused_at is None:
                self.paused_at = time.monotonic()
            else:
                control.done(f"the test host does not honour {control.kind}")
                continue
            control.done(None)

    def run(self, sent: int, first_pass: float) -> dict[str, Any]:
        """The passes after the first (``sent`` bytes in ``first_pass`` s); their stats
        (none for a domain that dirties nothing and a Perform nobody controlled)."""
        self.transferred = sent
        if self.dirty <= 0:
            self.take()
            return self._controlled() if self.controlled else {}
        remaining = self._dirtied(first_pass)
        while True:
            self.take()
            expected = self._seconds(remaining) * 1000
            self._report(remaining, expected)
            if expected <= self.downtime_ms or self.passes >= MAX_PASSES:
                return self._stats(remaining, expected)
            self._check_stop()
            took = self._send(remaining)
            self.transferred += remaining
            self.passes += 1
            if self.auto_converge:
                self.throttle = 20 if self.throttle == 0 else min(99, self.throttle + 10)
            remaining = self._dirtied(took)

    def _rate(self) -> int:
        """Bytes dirtied per second now: none once paused or switched to post-copy, less
        under a throttle."""
        if self.paused_at is not None or self.switched():
            return 0
        return int(self.dirty * (100 - self.throttle) / 100)

    def _dirtied(self, seconds: float) -> int:
        return min(self.total, int(self._rate() * seconds))

    def _seconds(self, size: int) -> float:
        return 0.0 if self.bandwidth <= 0 else size / (self.bandwidth * MIB)

    def _send(self, size: int) -> float:
        """Sleep as long as ``size`` bytes take, taking controls and heeding abort."""
        start = last = time.monotonic()
        sent = 0.0
        while sent < size:
            time.sleep(NAP)
            now = time.monotonic()
            sent += self.bandwidth * MIB * (now - last)
            last = now
            self.take()
            self._check_stop()
        return time.monotonic() - start

    def _check_stop(self) -> None:
        where = f"in pass {self.passes + 1}, {self.transferred} bytes sent"
        if self.ctx.stopped():  # the engine stopped waiting: change nothing more
            raise StepAbandoned(step=str(self.ctx.step))
        if self.ctx.aborted():
            raise DriverError(f"perform aborted {where}")
        if self.ctx.deadline is not None and time.monotonic() > self.ctx.deadline:
            raise DriverError(f"perform passed its deadline {where}")

    def _report(self, remaining: int, expected: float) -> None:
        self.ctx.progress(
            Progress(
                self.total,
                self.transferred,
                remaining,
                passes=self.passes + 1,
                dirty_rate=self._rate(),
                expected_downtime_ms=int(expected),
                throttle_pct=self.throttle,
            )
        )

    def _stats(self, remaining: int, expected: float) -> dict[str, Any]:
        self.transferred += remaining
        downtime = expected
        if self.paused_at is not None:
            downtime += (time.monotonic() - self.paused_at) * 1000
        self.ctx.progress(Progress(self.total, self.transferred, 0, passes=self.passes + 1))
        return {
            "passes": self.passes + 1,
            "downtime_ms": int(downtime),
            "downtime_limit_ms": self.downtime_ms,
            "throttle_pct": self.throttle,
            "paused": self.paused_at is not None,
            "parallel_connections": self.parallel,
            "sent_bytes": self.transferred,
            **self._controlled(),
        }

    def _controlled(self) -> dict[str, Any]:
        out: dict[str, Any] = {"downtime_limit_ms": self.downtime_ms}
        if self.postcopy_bandwidth is not None:
            out["postcopy_bandwidth_mib"] = self.postcopy_bandwidth
        return out
