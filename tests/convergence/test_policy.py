"""The convergence policy, its tracker and the policy file: pure logic, no host."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from migrator.convergence import policyfile
from migrator.convergence.policy import Action, Policy, Setting, from_dict
from migrator.convergence.tracker import GIB, Kind, Tracker, budget_seconds, ramp_value
from migrator.errors import UsageError
from migrator.records import Progress

MIB = 1024 * 1024


def sample(remaining: int, passes: int, total: int = 64 * MIB) -> Progress:
    return Progress(total, total - remaining, remaining, passes=passes)


# -- Policy ------------------------------------------------------------------------------


def test_a_default_policy_needs_nothing_of_a_driver_and_never_acts() -> None:
    assert Policy().settings() == []
    assert not Policy().watches and not Policy().gives_up
    assert Policy().as_dict() == {}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_downtime_ms": 0}, "max_downtime_ms must be >= 1"),
        ({"max_downtime_ms": 10**9}, "max_downtime_ms must be <= 3600000"),
        ({"downtime_steps": 3}, "downtime_steps needs max_downtime_ms"),
        ({"downtime_delay": -1.0}, "downtime_delay must be at least 0"),
        ({"budget_s_per_gib": float("nan")}, "budget_s_per_gib must be more than 0"),
        ({"stall_iterations": 0}, "stall_iterations must be >= 1"),
        ({"parallel_connections": 256}, "parallel_connections must be <= 255"),
        ({"auto_converge": "yes"}, "auto_converge must be true or false"),
        ({"bandwidth_mib": True}, "bandwidth_mib must be a whole number"),
    ],
)
def test_a_policy_out_of_bounds_is_refused_in_one_line(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        Policy(**fields)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)


def test_each_setting_names_what_it_needs_of_the_source_driver() -> None:
    policy = Policy(
        max_downtime_ms=500, postcopy_bandwidth_mib=10, stall_iterations=3,
        action=Action.PAUSE, auto_converge=True, parallel_connections=4,
    )  # fmt: skip
    assert policy.settings() == [
        Setting.DOWNTIME, Setting.POSTCOPY_BANDWIDTH, Setting.JOB_STATS, Setting.PAUSE,
        Setting.AUTO_CONVERGE, Setting.PARALLEL,
    ]  # fmt: skip
    assert Setting.PAUSE not in Policy(action=Action.PAUSE).settings()  # never taken


def test_options_override_a_base_policy_field_by_field() -> None:
    base = Policy(max_downtime_ms=500, stall_iterations=5, action=Action.PAUSE)
    merged = Policy(max_downtime_ms=900).over(base)
    assert merged == Policy(max_downtime_ms=900, stall_iterations=5, action=Action.PAUSE)
    assert from_dict(merged.as_dict()) == merged


def test_from_dict_names_an_unknown_key_and_a_bad_action() -> None:
    with pytest.raises(UsageError, match="here: unknown setting 'max_downtime'"):
        from_dict({"max_downtime": 5}, where="here")
    with pytest.raises(UsageError, match="action must be one of abort, postcopy, pause"):
        from_dict({"action": "force"})


# -- Tracker -----------------------------------------------------------------------------


def test_the_ramp_raises_the_downtime_in_equal_steps_one_per_delay() -> None:
    policy = Policy(max_downtime_ms=900, downtime_steps=3, downtime_delay=10.0)
    assert [ramp_value(policy, k) for k in range(3)] == [300, 600, 900]
    tracker = Tracker(policy)
    assert [(d.kind, d.value) for d in tracker.decide(0.0, None)] == [(Kind.DOWNTIME, 300)]
    assert tracker.decide(9.9, None) == []
    assert [d.value for d in tracker.decide(25.0, None)] == [600, 900]  # late: both due
    assert tracker.decide(100.0, None) == []


def test_a_stall_is_seen_at_iteration_boundaries_not_between_them() -> None:
    tracker = Tracker(Policy(stall_iterations=2))
    assert tracker.decide(0.1, sample(40 * MIB, 1)) == []  # the least so far
    assert tracker.decide(0.2, sample(50 * MIB, 1)) == []  # same pass: not a boundary
    assert tracker.decide(0.3, sample(45 * MIB, 2)) == []  # flat 1
    decided = tracker.decide(0.4, sample(40 * MIB, 3))  # flat 2: not below the least
    assert [d.kind for d in decided] == [Kind.STALLED, Kind.ACT]
    assert decided[0].detail == {"iterations": 2, "remaining": 40 * MIB, "least": 40 * MIB}
    assert decided[1].detail == {"action": "abort", "why": "stalled"}
    assert tracker.decide(0.5, sample(40 * MIB, 4)) == []  # the action is taken once


def test_remaining_bytes_that_shrink_are_no_stall() -> None:
    tracker = Tracker(Policy(stall_iterations=2))
    for passes, left in enumerate([60, 50, 55, 40, 45, 30, 35], start=1):
        assert tracker.decide(float(passes), sample(left * MIB, passes)) == []


def test_the_budget_is_seconds_per_gib_of_guest_memory() -> None:
    policy = Policy(budget_s_per_gib=30.0, action=Action.PAUSE)
    assert budget_seconds(policy, 2 * GIB) == 60.0
    tracker = Tracker(policy)
    assert tracker.decide(59.0, sample(GIB, 1, total=2 * GIB)) == []
    decided = tracker.decide(61.0, sample(GIB, 1, total=2 * GIB))
    assert [d.kind for d in decided] == [Kind.OVER_BUDGET, Kind.ACT]
    assert decided[1].detail == {"action": "pause", "why": "over_budget"}


def test_a_finished_transfer_never_stalls_nor_overruns() -> None:
    tracker = Tracker(Policy(budget_s_per_gib=0.001, stall_iterations=1))
    assert tracker.decide(100.0, sample(0, 9)) == []


# -- the policy file ------------------------------------------------------------------------


def test_the_first_matching_table_wins_over_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "policies.toml"
    path.write_text(
        "[defaults]\nmax_downtime_ms = 500\nstall_iterations = 9\n\n"
        '[policy.db]\ndomain = "db-*"\nsrc = "qemu+tcp://rack1-*"\naction = "pause"\n'
        "stall_iterations = 3\n\n"
        '[policy.any-db]\ndomain = "db-*"\naction = "abort"\n'
    )
    found = policyfile.load(path)
    name, policy = found.lookup(domain="db-1", src="qemu+tcp://rack1-a/system", dst="x")
    assert name == "db"
    assert policy == Policy(max_downtime_ms=500, stall_iterations=3, action=Action.PAUSE)
    name, policy = found.lookup(domain="db-1", src="qemu+tcp://rack2-a/system", dst="x")
    assert (name, policy.action) == ("any-db", Action.ABORT)
    assert found.lookup(domain="web", src="a", dst="b") == (
        None,
        Policy(max_downtime_ms=500, stall_iterations=9),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[defaults\n", "not TOML"),
        ("[other]\n", "unknown table 'other'"),
        ("[policy.x]\ndomain = 3\n", r"\[policy.x\]: domain must be a non-empty glob"),
        ("[policy.x]\nmax_downtime_ms = -1\n", r"\[policy.x\]: max_downtime_ms must be >= 1"),
        ("[defaults]\nspeed = 1\n", "unknown setting 'speed'"),
    ],
)
def test_a_bad_policy_file_is_refused_in_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message) as caught:
        policyfile.load(path)
    assert "\n" not in str(caught.value)


def test_a_policy_file_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "p.toml"
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match="not a regular file"):
        policyfile.load(fifo)
