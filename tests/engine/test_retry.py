"""The one retry policy (``migrator/engine/retry.py``): attempts, pauses, deadline."""

from __future__ import annotations

from migrator.engine.retry import RetryPolicy


def _run(policy: RetryPolicy, first: int = 1, at: int | None = None) -> list[int]:
    tries, seen = policy.start(first, at=at), []
    while True:
        seen.append(tries.number)
        if tries.last:
            return seen
        tries.next()


def test_attempts_are_numbered_from_first_and_bounded_by_the_count() -> None:
    slept: list[float] = []
    policy = RetryPolicy(attempts=4, backoff=0.5, sleep=slept.append)
    assert _run(policy) == [1, 2, 3, 4]
    assert _run(policy, first=3) == [3, 4, 5, 6]
    assert slept == [0.5, 1.0, 2.0] * 2  # doubled each time, counted from the first try


def test_a_resumed_count_keeps_the_window_of_its_first_attempt() -> None:
    slept: list[float] = []
    policy = RetryPolicy(attempts=5, backoff=0.2, sleep=slept.append)
    assert _run(policy, first=1, at=3) == [3, 4, 5]
    assert slept == [0.8, 1.6]


def test_pauses_are_capped() -> None:
    policy = RetryPolicy(attempts=10, backoff=1.0)
    assert [policy.pause(n) for n in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_at_least_one_attempt() -> None:
    assert _run(RetryPolicy(attempts=0, sleep=lambda _s: None)) == [1]


def test_the_deadline_ends_the_attempts_before_the_count_does() -> None:
    slept: list[float] = []
    policy = RetryPolicy(attempts=10, backoff=1.0, deadline=2.5, sleep=slept.append)
    # Pauses of 1 and 2 s would pass 2.5 s after the second try: it is the last.
    tries = policy.start()
    assert not tries.last
    tries.next()
    assert tries.number == 2
    assert not tries.last  # 0 s waited (sleep is recorded, not slept) + 2 s pause < 2.5 s
    tries.next()
    assert tries.last  # 0 s + a 4 s pause > 2.5 s
    assert slept == [1.0, 2.0]
