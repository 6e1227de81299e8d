"""What a policy decides from Perform's job statistics, as pure logic: no clock, no I/O.

The engine's applier (``engine/applier.py``) feeds a ``Tracker`` the samples a driver
reports and the time, and carries out the decisions it returns. A stall is judged at
iteration boundaries only (a sample whose ``passes`` grew), from the remaining bytes the
driver reported there: ``stall_iterations`` boundaries in a row without going below the
least remaining seen at an earlier boundary.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from migrator.convergence.policy import Policy
from migrator.records import Progress

GIB = 1024**3


class Kind(enum.StrEnum):
    DOWNTIME = "downtime"
    """Raise the allowed downtime to ``value`` ms (a step of the ramp)."""
    STALLED = "stalled"
    OVER_BUDGET = "over_budget"
    ACT = "act"
    """Take the policy's action (``detail["action"]``), once."""


@dataclass(frozen=True, slots=True)
class Decision:
    kind: Kind
    value: int = 0
    detail: dict[str, Any] = field(default_factory=dict)


def ramp_value(policy: Policy, step: int) -> int:
    """The downtime of step ``step`` (0-based) of the ramp, in ms."""
    assert policy.max_downtime_ms is not None
    return max(1, policy.max_downtime_ms * (step + 1) // policy.downtime_steps)


def budget_seconds(policy: Policy, total_bytes: int) -> float | None:
    """The completion budget for a guest of ``total_bytes`` memory (at least one GiB's)."""
    if policy.budget_s_per_gib is None or total_bytes <= 0:
        return None
    return policy.budget_s_per_gib * max(total_bytes / GIB, 1 / 1024)


class Tracker:
    """One Perform's policy state; ``decide`` is called with each new sample, or none."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.steps_taken = 0
        self.acted = False
        self._pass = 0
        self._least: int | None = None
        self._flat = 0
        self._stalled = False
        self._over = False

    def decide(self, elapsed: float, sample: Progress | None) -> list[Decision]:
        """The decisions due ``elapsed`` seconds into Perform, given the latest sample."""
        out = self._ramp(elapsed)
        if sample is not None and sample.remaining > 0:
            out += self._stall(sample) + self._budget(elapsed, sample)
        if (self._stalled or self._over) and not self.acted:
            self.acted = True
            why = "stalled" if self._stalled else "over_budget"
            out.append(Decision(Kind.ACT, detail={"action": str(self.policy.action), "why": why}))
        return out

    def _ramp(self, elapsed: float) -> list[Decision]:
        policy, out = self.policy, list[Decision]()
        if policy.max_downtime_ms is None:
            return out
        while self.steps_taken < policy.downtime_steps and (
            elapsed >= self.steps_taken * policy.downtime_delay
        ):
            value = ramp_value(policy, self.steps_taken)
            detail = {"step": self.steps_taken + 1, "of": policy.downtime_steps}
            out.append(Decision(Kind.DOWNTIME, value, detail))
            self.steps_taken += 1
        return out

    def _stall(self, sample: Progress) -> list[Decision]:
        n = self.policy.stall_iterations
        if n is None or sample.passes <= self._pass:
            return []
        self._pass = sample.passes
        if self._least is None or sample.remaining < self._least:
            self._least, self._flat = sample.remaining, 0
            return []
        self._flat += 1
        if self._flat < n or self._stalled:
            return []
        self._stalled = True
        detail = {"iterations": self._flat, "remaining": sample.remaining, "least": self._least}
        return [Decision(Kind.STALLED, sample.passes, detail)]

    def _budget(self, elapsed: float, sample: Progress) -> list[Decision]:
        budget = budget_seconds(self.policy, sample.total)
        if budget is None or elapsed <= budget or self._over:
            return []
        self._over = True
        detail = {"budget_s": round(budget, 3), "elapsed_s": round(elapsed, 3)}
        return [Decision(Kind.OVER_BUDGET, int(elapsed), detail)]
