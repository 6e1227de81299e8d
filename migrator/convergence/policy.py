"""A migration's convergence policy: downtime and its ramp, bandwidths, the completion
budget, stall detection and what to do when either fires (docs/convergence.md)."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from migrator import limits
from migrator.errors import UsageError

MAX_DOWNTIME_MS = 3_600_000
"""The largest downtime a policy may allow: an hour."""
MAX_BANDWIDTH_MIB = 1_048_576
"""The largest bandwidth, MiB/s (1 TiB/s)."""
MAX_STEPS = 100
MAX_CONNECTIONS = 255
"""QEMU's upper bound for ``multifd-channels``."""


class Action(enum.StrEnum):
    """What a policy does when the budget is spent or the migration stalled."""

    ABORT = "abort"
    """Cancel Perform: the source keeps running and the migration is rolled back."""
    POSTCOPY = "postcopy"
    """Switch to post-copy: the destination runs the guest and pulls what is left."""
    PAUSE = "pause"
    """Suspend the source so that the last pass completes; the downtime grows."""


class Setting(enum.StrEnum):
    """What a policy asks of the source host's driver; each is honoured or refused."""

    DOWNTIME = "downtime"
    """The allowed downtime, set before the data goes and changed while it goes."""
    SPEED = "speed"
    """The bandwidth changed while the data goes (``set-speed``); the bandwidth at the
    start is the migration's own (``--bandwidth``), which every driver honours."""
    POSTCOPY_BANDWIDTH = "postcopy-bandwidth"
    JOB_STATS = "job-stats"
    """Remaining bytes and passes at iteration boundaries: stall and budget need them."""
    PAUSE = "pause"
    AUTO_CONVERGE = "auto-converge"
    PARALLEL = "parallel-connections"


@dataclass(frozen=True, slots=True)
class Policy:
    """Every field None (or False) leaves the host's default alone.

    The downtime ramp raises the allowed downtime in ``downtime_steps`` equal steps up to
    ``max_downtime_ms``, one every ``downtime_delay`` seconds of Perform, the first at
    once. The budget is ``budget_s_per_gib`` seconds per GiB of guest memory; a stall is
    ``stall_iterations`` passes over the memory without the remaining bytes going below
    the least seen before them.
    """

    max_downtime_ms: int | None = None
    downtime_steps: int = 1
    downtime_delay: float = 0.0
    bandwidth_mib: int | None = None
    postcopy_bandwidth_mib: int | None = None
    budget_s_per_gib: float | None = None
    stall_iterations: int | None = None
    action: Action = Action.ABORT
    auto_converge: bool = False
    parallel_connections: int | None = None

    def __post_init__(self) -> None:
        check(self)

    @property
    def watches(self) -> bool:
        """Whether the policy acts on its own during Perform (a ramp, a budget, a stall)."""
        return (
            self.budget_s_per_gib is not None
            or self.stall_iterations is not None
            or (self.max_downtime_ms is not None and self.downtime_steps > 1)
        )

    def settings(self) -> list[Setting]:
        """What the policy needs of the source's driver, in a stable order."""
        needs = {
            Setting.DOWNTIME: self.max_downtime_ms is not None,
            Setting.POSTCOPY_BANDWIDTH: self.postcopy_bandwidth_mib is not None,
            Setting.JOB_STATS: self.budget_s_per_gib is not None
            or self.stall_iterations is not None,
            Setting.PAUSE: self.action is Action.PAUSE and self.gives_up,
            Setting.AUTO_CONVERGE: self.auto_converge,
            Setting.PARALLEL: self.parallel_connections is not None,
        }
        return [s for s, needed in needs.items() if needed]

    @property
    def gives_up(self) -> bool:
        """Whether the action can ever be taken (a budget or a stall detection is set)."""
        return self.budget_s_per_gib is not None or self.stall_iterations is not None

    def as_dict(self) -> dict[str, Any]:
        """The fields that differ from the defaults (the journal's and ``show``'s form)."""
        default = Policy()
        return {
            f.name: str(v) if isinstance(v, Action) else v
            for f in dataclasses.fields(self)
            if (v := getattr(self, f.name)) != getattr(default, f.name)
        }

    def over(self, base: Policy) -> Policy:
        """This policy's settings (those that differ from the defaults) over ``base``."""
        return from_dict({**base.as_dict(), **self.as_dict()})


FIELDS = frozenset(f.name for f in dataclasses.fields(Policy))


def from_dict(values: Mapping[str, Any], *, where: str = "policy") -> Policy:
    """A policy from its dict form (a policy file's table, the journal); a UsageError
    names ``where`` and the first bad key or value."""
    unknown = sorted(set(values) - FIELDS)
    if unknown:
        raise UsageError(
            f"{where}: unknown setting {unknown[0]!r}; known: {', '.join(sorted(FIELDS))}"
        )
    fields = dict(values)
    if "action" in fields:
        fields["action"] = action(fields["action"], name=f"{where}: action")
    if "downtime_delay" in fields and isinstance(fields["downtime_delay"], int):
        fields["downtime_delay"] = float(fields["downtime_delay"])
    if "budget_s_per_gib" in fields and isinstance(fields["budget_s_per_gib"], int):
        fields["budget_s_per_gib"] = float(fields["budget_s_per_gib"])
    try:
        return Policy(**fields)
    except UsageError as exc:
        raise UsageError(f"{where}: {exc}") from None


def action(value: object, *, name: str = "action") -> Action:
    try:
        return Action(str(value))
    except ValueError:
        choices = ", ".join(a.value for a in Action)
        raise UsageError(f"{name} must be one of {choices}, not {value!r}") from None


def check(policy: Policy) -> None:
    """Every bound of ``policy``; a one-line UsageError for the first one broken."""
    _optional_int(policy.max_downtime_ms, "max_downtime_ms", 1, MAX_DOWNTIME_MS)
    limits.integer(policy.downtime_steps, name="downtime_steps", low=1, high=MAX_STEPS)
    limits.seconds(policy.downtime_delay, name="downtime_delay", zero=True)
    _optional_int(policy.bandwidth_mib, "bandwidth_mib", 1, MAX_BANDWIDTH_MIB)
    _optional_int(policy.postcopy_bandwidth_mib, "postcopy_bandwidth_mib", 1, MAX_BANDWIDTH_MIB)
    if policy.budget_s_per_gib is not None:
        limits.seconds(policy.budget_s_per_gib, name="budget_s_per_gib")
    _optional_int(policy.stall_iterations, "stall_iterations", 1, 1000)
    if not isinstance(policy.action, Action):
        raise UsageError(f"action must be an Action, not {policy.action!r}")
    if not isinstance(policy.auto_converge, bool):
        raise UsageError(f"auto_converge must be true or false, not {policy.auto_converge!r}")
    _optional_int(policy.parallel_connections, "parallel_connections", 1, MAX_CONNECTIONS)
    if policy.downtime_steps > 1 and policy.max_downtime_ms is None:
        raise UsageError("downtime_steps needs max_downtime_ms: the ramp ends at it")


def _optional_int(value: object, name: str, low: int, high: int) -> None:
    if value is not None:
        limits.integer(value, name=name, low=low, high=high)
