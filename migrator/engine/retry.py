"""The one retry policy of the engine: how many attempts, how long between, until when.

Every step the engine retries (Confirm, a cancelling Finish in v3, Finish2 and v1's Finish)
goes through :class:`Attempts`, so attempt numbers, pauses and the deadline are the same
everywhere; each failed attempt is journaled by the caller before the pause.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

BACKOFF_CAP = 5.0
"""Seconds: the longest pause between two attempts."""


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries at most, pausing ``backoff`` s, doubled each time (capped), and
    none begun after ``deadline`` s from the first (None: the attempts alone bound it)."""

    attempts: int = 5
    backoff: float = 0.2
    deadline: float | None = None
    cap: float = BACKOFF_CAP
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "attempts", max(1, self.attempts))

    def pause(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the one after the first try)."""
        return min(self.cap, self.backoff * 2.0**retry)

    def start(self, first: int = 1, *, at: int | None = None) -> Attempts:
        """The attempts numbered from ``first``; ``at`` resumes the count (recovery)."""
        return Attempts(self, first, first if at is None else at)


class Attempts:
    """One retried call's attempts: ``number`` is the current one, ``last`` says if it is."""

    def __init__(self, policy: RetryPolicy, first: int, number: int) -> None:
        self.policy, self.first, self.number = policy, first, number
        self._started = time.monotonic()

    @property
    def last(self) -> bool:
        """True when no attempt follows this one, by count or by deadline."""
        policy = self.policy
        if self.number >= self.first + policy.attempts - 1:
            return True
        if policy.deadline is None:
            return False
        waited = time.monotonic() - self._started
        return waited + policy.pause(self.number - self.first) > policy.deadline

    def next(self) -> int:
        """Pause as the policy says and move on to the next attempt; return its number."""
        self.policy.sleep(self.policy.pause(self.number - self.first))
        self.number += 1
        return self.number
