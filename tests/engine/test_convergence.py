"""Convergence policies and runtime requests on test hosts whose domain dirties its memory
faster than the link carries it (``precopy.py``): pre-copy alone never ends."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from migrator.convergence.policy import Action, Policy, Setting
from migrator.drivers.test import TestDriver
from migrator.engine.coordinator import Coordinator
from migrator.engine.observers import HookName
from migrator.errors import PostcopyUnavailable, SettingNotHonoured, UsageError
from migrator.flags import MigrateFlags
from migrator.journal.store import Journal
from migrator.records import Event, EventKind, Migration
from migrator.states import State
from tests.conftest import Hosts, state_of

BANDWIDTH = 8
"""MiB/s: a 4 MiB domain takes 0.5 s a pass, over the default 300 ms downtime."""


@pytest.fixture
def busy(tmp_path: Path) -> Hosts:
    """``vm1`` (4 MiB) dirties 16 MiB/s, twice the bandwidth: it never converges alone."""
    src = TestDriver(f"test://{tmp_path / 'host-a'}")
    dst = TestDriver(f"test://{tmp_path / 'host-b'}")
    src.define("vm1", memory_mib=4, dirty_mib_s=16)
    return Hosts(src, dst)


@pytest.fixture
def coordinator(journal: Journal) -> Iterator[Coordinator]:
    c = Coordinator(journal, step_timeout=60)
    yield c
    c.close()


def migrate(c: Coordinator, hosts: Hosts, policy: Policy | None = None) -> Migration:
    return c.migrate(
        "vm1", src=hosts.src, dst=hosts.dst, flags=MigrateFlags.LIVE, bandwidth=BANDWIDTH,
        policy=policy,
    )  # fmt: skip


def of_kind(history: list[Event], kind: EventKind) -> list[Event]:
    return [e for e in history if e.kind is kind]


def test_a_stall_aborts_perform_and_the_source_keeps_running(
    coordinator: Coordinator, journal: Journal, busy: Hosts
) -> None:
    m = migrate(coordinator, busy, Policy(stall_iterations=2, action=Action.ABORT))
    assert m.state is State.ROLLED_BACK
    assert m.reason is not None and "the convergence policy aborted Perform (stalled)" in m.reason
    history = journal.history(m.id)
    [stalled] = of_kind(history, EventKind.STALLED)
    assert stalled.detail is not None and stalled.detail["iterations"] == 2
    assert stalled.state is State.PERFORMING
    [action] = of_kind(history, EventKind.ACTION)
    assert action.detail == {"action": "abort", "why": "stalled"}
    assert action.seq < next(e.seq for e in history if e.kind is EventKind.ERROR)
    assert busy.states("vm1") == ("running", "absent")


def test_pause_on_stall_completes_with_the_downtime_reported(
    coordinator: Coordinator, journal: Journal, busy: Hosts
) -> None:
    m = migrate(coordinator, busy, Policy(stall_iterations=2, action=Action.PAUSE))
    assert m.state is State.CONFIRMED
    history = journal.history(m.id)
    [action] = of_kind(history, EventKind.ACTION)
    assert action.detail is not None
    assert (action.detail["action"], action.detail["outcome"]) == ("pause", "applied")
    performed = next(e for e in history if e.kind is EventKind.OK and e.step == "perform")
    assert performed.detail is not None and performed.detail["paused"] is True
    assert performed.detail["downtime_ms"] > 0 and performed.detail["passes"] >= 3
    assert busy.states("vm1") == ("absent", "running")


def test_the_downtime_ramp_is_journaled_step_by_step_until_it_converges(
    coordinator: Coordinator, journal: Journal, busy: Hosts
) -> None:
    policy = Policy(max_downtime_ms=900, downtime_steps=3, downtime_delay=0.3)
    m = migrate(coordinator, busy, policy)
    assert m.state is State.CONFIRMED  # 600 ms fits a 500 ms pass: no stall, no action
    tuned = of_kind(journal.history(m.id), EventKind.TUNED)
    assert [(e.detail or {}).get("value") for e in tuned][:2] == [300, 600]
    assert all((e.detail or {})["outcome"] == "applied" for e in tuned)
    assert [(e.detail or {})["step"] for e in tuned][:2] == [1, 2]
    assert journal.policy(m.id) == policy.as_dict()


def test_an_overrun_budget_takes_the_action(
    coordinator: Coordinator, journal: Journal, busy: Hosts
) -> None:
    m = migrate(coordinator, busy, Policy(budget_s_per_gib=200.0))  # 4 MiB: 0.78 s
    assert m.state is State.ROLLED_BACK
    [over] = of_kind(journal.history(m.id), EventKind.OVER_BUDGET)
    assert over.detail is not None and over.detail["budget_s"] == pytest.approx(0.781, abs=0.001)
    assert busy.states("vm1") == ("running", "absent")


def test_the_postcopy_action_calls_the_one_entry_point(journal: Journal, busy: Hosts) -> None:
    called: list[str] = []
    holder: dict[str, Coordinator] = {}

    def start(run: object) -> object:
        def start_postcopy(reason: str) -> None:  # stands in for the post-copy switch
            called.append(reason)
            holder["c"].set_downtime(run.migration.id, 100_000)  # type: ignore[attr-defined]

        return start_postcopy

    c = holder["c"] = Coordinator(journal, step_timeout=60, postcopy=start)  # type: ignore[arg-type]
    try:
        m = c.migrate(
            "vm1", src=busy.src, dst=busy.dst, flags=MigrateFlags.LIVE | MigrateFlags.POSTCOPY,
            bandwidth=BANDWIDTH, policy=Policy(stall_iterations=2, action=Action.POSTCOPY),
        )  # fmt: skip
    finally:
        c.close()
    assert m.state is State.CONFIRMED
    assert called == ["the convergence policy: Perform stalled"]
    [action] = of_kind(journal.history(m.id), EventKind.ACTION)
    assert action.detail == {"action": "postcopy", "why": "stalled", "outcome": "post-copy started"}


class NoPostcopyBandwidth(TestDriver):
    """A test host that declares it does not act on a post-copy bandwidth."""

    honoured_settings = frozenset(Setting) - {Setting.POSTCOPY_BANDWIDTH}


def test_settings_a_driver_does_not_honour_are_refused_before_begin(
    coordinator: Coordinator, journal: Journal, busy: Hosts
) -> None:
    narrow = Hosts(NoPostcopyBandwidth(busy.src.uri), busy.dst)
    with pytest.raises(SettingNotHonoured, match="postcopy-bandwidth is refused: the test driver"):
        migrate(coordinator, narrow, Policy(postcopy_bandwidth_mib=10))
    with pytest.raises(PostcopyUnavailable, match="post-copy is not available"):
        migrate(coordinator, busy, Policy(stall_iterations=3, action=Action.POSTCOPY))
    assert journal.list() == []
    assert state_of(busy.src, "vm1") == "running"


def _in_perform(journal: Journal, done: threading.Event) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not done.is_set():
        found = journal.list(limit=1)
        if found and found[0].state is State.PERFORMING:
            return found[0].id
        time.sleep(0.02)
    pytest.fail("the migration never reached PERFORMING")


def test_requests_are_applied_during_perform_and_stamped(
    coordinator: Coordinator, journal: Journal, busy: Hosts
) -> None:
    ended: list[Migration] = []
    done = threading.Event()

    def drive() -> None:
        try:
            ended.append(migrate(coordinator, busy))
        finally:
            done.set()

    thread = threading.Thread(target=drive)
    thread.start()
    mid = _in_perform(journal, done)
    first = coordinator.set_speed(mid[:8], 4)
    second = coordinator.set_downtime(mid, 100_000)
    thread.join(60)
    assert [m.state for m in ended] == [State.CONFIRMED]
    requests = journal.requests(mid)
    assert [(r.id, r.kind, r.value) for r in requests] == [
        (first.id, "speed", 4), (second.id, "downtime", 100_000)
    ]  # fmt: skip
    assert all(r.outcome == "applied" and r.applied_at is not None for r in requests)
    assert all(r.applied_at >= r.requested_at for r in requests if r.applied_at)
    applied = of_kind(journal.history(mid), EventKind.REQUEST)
    assert sorted((e.detail or {})["request"] for e in applied) == [first.id, second.id]
    with pytest.raises(UsageError, match="is CONFIRMED, not in Perform"):
        coordinator.set_downtime(mid, 5)


def test_hooks_are_given_the_notes_beside_perform(journal: Journal, busy: Hosts) -> None:
    seen: list[tuple[HookName, EventKind]] = []
    c = Coordinator(journal, step_timeout=60, hooks=[lambda h: seen.append((h.name, h.event.kind))])
    try:
        m = migrate(c, busy, Policy(stall_iterations=2))
    finally:
        c.close()  # once the hooks were given what it committed
    assert m.state is State.ROLLED_BACK
    notes = [kind for name, kind in seen if name is HookName.CONVERGENCE]
    assert notes == [EventKind.STALLED, EventKind.ACTION]


def test_the_postcopy_action_switches_a_stalled_migration_that_ends_confirmed(
    coordinator: Coordinator, journal: Journal, busy: Hosts
) -> None:
    """The default entry point is the write-ahead switch (``flows/postcopy.py``)."""
    m = coordinator.migrate(
        "vm1", src=busy.src, dst=busy.dst, flags=MigrateFlags.LIVE | MigrateFlags.POSTCOPY,
        bandwidth=BANDWIDTH, policy=Policy(stall_iterations=2, action=Action.POSTCOPY),
    )  # fmt: skip
    assert m.state is State.CONFIRMED
    history = journal.history(m.id)
    [switch] = [e for e in history if e.step is not None and e.step.value == "postcopy"][:1]
    assert switch.kind is EventKind.INTENT
    assert switch.detail == {"reason": "the convergence policy: Perform stalled"}
    [stalled] = of_kind(history, EventKind.STALLED)  # what led to the switch, journaled before it
    assert stalled.state is State.PERFORMING and stalled.seq < switch.seq
    assert of_kind(history, EventKind.ERROR) == []  # Perform ended once the guest moved
    [action] = of_kind(history, EventKind.ACTION)
    assert action.detail is not None and action.detail["outcome"] == "post-copy started"
    assert busy.states("vm1") == ("absent", "running")


def test_the_postcopy_action_without_the_flag_is_refused_before_begin(
    coordinator: Coordinator, journal: Journal, busy: Hosts
) -> None:
    with pytest.raises(PostcopyUnavailable):
        migrate(coordinator, busy, Policy(stall_iterations=2, action=Action.POSTCOPY))
    assert journal.list() == []
