"""The probe's patience as a policy: how long it asks again, and the command line's default."""

from __future__ import annotations

from migrator.cli.options import PROBE_PATIENCE_DEFAULT
from migrator.engine.steps import PROBE_PATIENCE, patience


def test_the_command_line_default_is_the_engines() -> None:
    assert PROBE_PATIENCE_DEFAULT == PROBE_PATIENCE


def test_no_patience_asks_once() -> None:
    assert patience(0).start().last


def test_the_pauses_double_up_to_two_seconds() -> None:
    policy = patience(20.0)
    assert [policy.pause(i) for i in range(7)] == [0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
    assert policy.deadline == 20.0


def test_a_retry_that_would_start_past_the_patience_is_not_made() -> None:
    tries = patience(0.3).start()
    assert not tries.last  # 0.2 s of pause fits in 0.3 s
    tries.next()
    assert tries.last  # 0.2 s waited + 0.4 s of pause would not
