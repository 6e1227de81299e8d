"""Post-copy between two real system-mode libvirt daemons (``ns_pair``), with the busy
guest that never converges (``postcopy_rig.py``): the switch completes it, a network cut
and a restart of the destination's daemon during post-copy are ridden out, a crash at each
post-copy point is recovered forward, a session-mode daemon and an abort after the switch
are refused; a restart of the source's daemon during post-copy completes by itself.

Transports, each set here: the short tests (the switch by failpoint or by the stall
policy, the abort refused, set-speed after the switch) over each of tcp, tls and ssh; each
long one on one (the 20 s cut: tcp, the destination's daemon restarted: tls, the source's
daemon restarted: ssh); the crash points and the random kills over tcp, tls and
ssh in turn; the session-mode refusal on the session pair (UNIX sockets), since it is
about session mode."""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrator import failpoints
from migrator.states import State, Step
from tests.conftest import assert_replays_consistently
from tests.crash.forkserver import SERVER, Child
from tests.libvirt.netns import NsHost
from tests.libvirt.nsrig import NsRig, on, one_network_each
from tests.libvirt.postcopy_rig import CAP, LATER, SLOW, SWITCH, whole_and_advancing
from tests.libvirt.postcopy_rig import busy as busy  # the fixture
from tests.libvirt.rig import LibvirtRig

POSTCOPY_STATES = ("POSTCOPY_SWITCHING", "POSTCOPY_ACTIVE")
CUT_S = 20.0


def states_of(rig: NsRig, migration_id: str) -> list[str]:
    return [str(e.state) for e in rig.history(migration_id)]


def test_the_switch_completes_a_migration_that_never_converges(busy: NsRig) -> None:
    code, outcome = busy.migrate(
        "--bandwidth", CAP, "--flag", "postcopy", env={"MIGRATOR_FAILPOINTS": SWITCH}
    )
    assert (code, outcome.get("state")) == (0, "CONFIRMED"), outcome
    seen = states_of(busy, outcome["id"])
    for state in POSTCOPY_STATES:
        assert state in seen, seen
    assert seen.index("POSTCOPY_ACTIVE") < seen.index("PERFORMED") < seen.index("FINISHED")
    whole_and_advancing(busy)
    assert_replays_consistently(busy.db)


def test_the_stall_policy_switches_to_postcopy(busy: NsRig) -> None:
    code, outcome = busy.migrate(
        "--bandwidth", CAP, "--flag", "postcopy", "--budget", "4", "--on-stall", "postcopy"
    )
    assert (code, outcome.get("state")) == (0, "CONFIRMED"), outcome
    history = busy.history(outcome["id"])
    [intent] = [e for e in history if e.step == "postcopy" and e.kind == "intent"]
    assert intent.detail is not None and "reason" in intent.detail
    whole_and_advancing(busy)


def test_an_abort_after_the_switch_is_refused(busy: NsRig) -> None:
    child = busy.spawn(
        "--bandwidth", CAP, "--flag", "postcopy", "--postcopy-bandwidth", SLOW, *LATER
    )
    try:
        mid = _wait_state(busy, State.POSTCOPY_ACTIVE)
        refused = busy.cli("abort", mid)
        fast = busy.cli("set-speed", mid, "512", "--wait", "30")  # no need to wait at 2 MiB/s
        done = _wait_child(child)
    finally:
        SERVER.kill(child)
    assert fast.returncode == 0, fast.stdout + fast.stderr
    assert refused.returncode == 2, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "it switched to post-copy" in refused.stderr
    assert done["state"] == "CONFIRMED", done
    whole_and_advancing(busy)


def test_set_speed_after_the_switch_is_the_post_copy_bandwidth(busy: NsRig) -> None:
    """An operator's ``set-speed`` in POSTCOPY_ACTIVE reaches the source as its post-copy
    bandwidth (virDomainMigrateSetMaxSpeed with the POSTCOPY flag) while Finish3 carries
    the last pages: 1 MiB/s is what the source reports, then 512 lets it complete."""
    from migrator.inspect import show
    from migrator.journal.store import Journal

    child = busy.spawn(
        "--bandwidth", CAP, "--flag", "postcopy", "--postcopy-bandwidth", SLOW, *LATER
    )
    try:
        mid = _wait_state(busy, State.POSTCOPY_ACTIVE)
        slow = busy.cli("set-speed", mid, "1", "--wait", "30")
        assert slow.returncode == 0, slow.stdout + slow.stderr
        speed = busy.pair.a.virsh("migrate-getspeed", "--postcopy", busy.name).strip()
        fast = busy.cli("set-speed", mid, "512", "--wait", "30")
        assert fast.returncode == 0, fast.stdout + fast.stderr
        done = _wait_child(child)
    finally:
        SERVER.kill(child)
    assert speed == "1", speed
    assert done["state"] == "CONFIRMED", done
    with Journal.open(busy.db) as journal:
        m = show(journal, mid)
    notes = [e for e in m["events"] if e["kind"] == "request"]
    assert [(e["detail"]["setting"], e["detail"]["value"]) for e in notes] == [
        ("postcopy-speed", 1), ("postcopy-speed", 512)
    ]  # fmt: skip
    assert [r["outcome"] for r in m["requests"]] == ["applied", "applied"]
    whole_and_advancing(busy)


def test_a_session_mode_daemon_is_refused_before_begin(rig: LibvirtRig) -> None:
    """Its QEMU cannot open userfaultfd: one line, exit 2, nothing journaled, the guest
    where it was."""
    proc = rig.cli(*rig.argv("--flag", "postcopy"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        f"migrator: error: flag postcopy is refused: host {rig.pair.src.uri} is a session-mode"
        " daemon: its QEMU runs unprivileged and cannot open userfaultfd"
        " (vm.unprivileged_userfaultfd = 0); migrate without it"
    ]
    assert rig.states()[0] == "running"
    assert rig.migrations() == [], "nothing is journaled"


def _wait_state(
    rig: NsRig, state: State, timeout: float = 120.0, within: tuple[State, ...] = ()
) -> str:
    """The migration's id once it is in ``state`` (or one of ``within``)."""
    deadline = time.monotonic() + timeout
    while True:
        found = rig.migrations()
        if found and (found[0].state is state or found[0].state in within):
            return found[0].id
        assert time.monotonic() < deadline, f"never {state}: {found}"
        time.sleep(0.05)


def _wait_child(child: Child) -> dict[str, Any]:
    done = SERVER.wait(child, 180)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@on("tcp")
def test_a_network_cut_during_postcopy_is_resumed_without_an_operator(busy: NsRig) -> None:
    """The destination's link down for 20 s while post-copy runs: both sides pause, and
    the same process resumes it once the link is back."""
    child = busy.spawn(
        "--bandwidth", CAP, "--flag", "postcopy", "--postcopy-bandwidth", SLOW, *LATER,
        "--timeout", "120",
    )  # fmt: skip
    try:
        _wait_state(busy, State.POSTCOPY_ACTIVE)
        time.sleep(1.0)  # pages on their way
        busy.pair.cut(busy.pair.b)
        time.sleep(CUT_S)
        busy.pair.cut(busy.pair.b, up=True)
        done = _wait_child(child)
    finally:
        busy.pair.cut(busy.pair.b, up=True)
        SERVER.kill(child)
    assert done["state"] == "CONFIRMED", done
    seen = states_of(busy, done["id"])
    assert "POSTCOPY_PAUSED" in seen and "POSTCOPY_RESUMING" in seen, seen
    whole_and_advancing(busy)
    assert_replays_consistently(busy.db)


RESTART_DOWN_S = 3.0


def _restarted_during_postcopy(busy: NsRig, host: NsHost) -> dict[str, Any]:
    """Migrate, switched by the policy; 1 s into post-copy stop ``host``'s libvirtd (as a
    service restart does), start it again ``RESTART_DOWN_S`` later; the outcome."""
    child = busy.spawn(
        "--bandwidth", CAP, "--flag", "postcopy", "--postcopy-bandwidth", SLOW, *LATER,
        "--timeout", "120",
    )  # fmt: skip
    try:
        _wait_state(busy, State.POSTCOPY_ACTIVE)
        time.sleep(1.0)  # pages on their way
        host.stop_libvirtd()
        try:
            time.sleep(RESTART_DOWN_S)
        finally:
            host.start_libvirtd()
        return _wait_child(child)
    finally:
        SERVER.kill(child)


@pytest.mark.timeout(150)
@on("tls")
def test_a_destination_daemon_restarted_during_postcopy_is_resumed(busy: NsRig) -> None:
    """The destination's libvirtd stopped (as a service restart does) while post-copy runs,
    started again 3 s later: Finish3's connection is lost, the migration pauses instead of
    losing the guest (the restarted daemon finds its QEMU still "running (post-copy)"), and
    the same process pauses post-copy and resumes it with VIR_MIGRATE_POSTCOPY_RESUME once
    the daemon answers again: CONFIRMED without an operator."""
    done = _restarted_during_postcopy(busy, busy.pair.b)
    assert done["state"] == "CONFIRMED", done
    seen = states_of(busy, done["id"])
    assert "POSTCOPY_PAUSED" in seen, seen
    assert seen.index("POSTCOPY_PAUSED") < seen.index("POSTCOPY_RESUMING"), seen
    assert seen[-1] == "CONFIRMED", seen
    [resumed] = [
        e for e in busy.history(done["id"]) if e.step is Step.POSTCOPY_RESUME and e.kind == "ok"
    ]
    assert resumed.detail is not None and resumed.detail.get("resumed") is True, resumed.detail
    whole_and_advancing(busy)
    assert_replays_consistently(busy.db)


@pytest.mark.timeout(150)
@on("ssh")
def test_a_source_daemon_restarted_during_postcopy_completes_by_itself(busy: NsRig) -> None:
    """The source's libvirtd stopped while post-copy runs, started again 3 s later: its
    QEMU sends the pages on without it, the destination's Finish3 returns once they are
    all there, and the migration is CONFIRMED by the same process with no pause and no
    resumption (the source's statistics are missed while its daemon is down; Confirm3's
    connection is gone, so Confirm is settled from what the source holds)."""
    done = _restarted_during_postcopy(busy, busy.pair.a)
    assert done["state"] == "CONFIRMED", done
    seen = states_of(busy, done["id"])
    assert "POSTCOPY_PAUSED" not in seen and "POSTCOPY_RESUMING" not in seen, seen
    whole_and_advancing(busy)
    assert busy.recover() == (0, [])
    assert_replays_consistently(busy.db)


CI_POINTS = ("postcopy.intent", "postcopy.called", "postcopy.recorded", "postcopy.underway",
             "perform.called")  # fmt: skip
"""The points where libvirt's post-copy differs from the other drivers' (12-14 s each)."""
MORE_POINTS = ("perform.recorded", "finish.intent", "finish.called", "finish.recorded",
               "confirm.intent", "confirm.called")  # fmt: skip
ALL_POINTS = os.environ.get("MIGRATOR_POSTCOPY_LIBVIRT_ALL") == "1"
OUT_VAR = "MIGRATOR_POSTCOPY_LIBVIRT_OUT"
RESULTS: list[dict[str, Any]] = []


@pytest.fixture(scope="module", autouse=True)
def _write_results() -> Iterator[None]:
    yield
    out = os.environ.get(OUT_VAR)
    if out:
        Path(out).write_text(json.dumps(RESULTS, indent=1) + "\n")


@pytest.mark.parametrize(("point", "transport"), one_network_each(CI_POINTS + MORE_POINTS))
def test_a_coordinator_killed_in_post_copy_is_recovered_forward(
    busy: NsRig, point: str, transport: str
) -> None:
    """Killed at ``point`` (the last six with MIGRATOR_POSTCOPY_LIBVIRT_ALL=1), then
    ``recover`` in a new process: the guest runs on the destination only, whole. The points
    go over tcp, tls and ssh in turn."""
    if point in MORE_POINTS and not ALL_POINTS:
        pytest.skip("MIGRATOR_POSTCOPY_LIBVIRT_ALL=1 runs every post-copy point")
    env = {"MIGRATOR_FAILPOINTS": f"{point}=crash"}
    code, _ = busy.migrate(
        "--bandwidth", CAP, "--flag", "postcopy", "--postcopy-bandwidth", CAP, *LATER, env=env
    )
    assert code == failpoints.CRASH_EXIT_CODE
    [crashed] = busy.migrations()
    code, rows = busy.recover()
    assert code == 0, rows
    [m] = busy.migrations()
    assert str(m.state) == "CONFIRMED", (m.state, m.reason)
    whole_and_advancing(busy)
    assert busy.recover() == (0, [])
    assert_replays_consistently(busy.db)
    RESULTS.append(
        {"point": point, "backend": "libvirt", "transport": transport,
         "crashed": str(crashed.state), "action": rows[0]["action_code"],
         "plan": rows[0]["action"], "end": str(m.state)}
    )  # fmt: skip


SOAK_KILLS = int(os.environ.get("MIGRATOR_POSTCOPY_LIBVIRT_SOAK", "3"))


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("kill", "transport"), one_network_each(range(SOAK_KILLS), prefix="kill"))
def test_sigkill_at_a_random_instant_of_post_copy_is_recovered_forward(
    busy: NsRig, kill: int, transport: str
) -> None:
    """SIGKILL at a seeded random instant of the first 6 s after the switch's intent
    (``MIGRATOR_POSTCOPY_LIBVIRT_SOAK=N`` cases, over tcp, tls and ssh in turn), then
    ``recover``: CONFIRMED, the guest on the destination only, whole and advancing."""
    seed = int(os.environ.get("MIGRATOR_SOAK_SEED", "0")) or random.randrange(1 << 32)
    delay = random.Random(seed + kill).uniform(0.0, 6.0)
    print(f"MIGRATOR_SOAK_SEED={seed} delay={delay:.2f}")
    child = busy.spawn(
        "--bandwidth", CAP, "--flag", "postcopy", "--postcopy-bandwidth", CAP, *LATER
    )  # fmt: skip
    try:
        _wait_state(busy, State.POSTCOPY_SWITCHING, within=(State.POSTCOPY_ACTIVE,))
        time.sleep(delay)
    finally:
        SERVER.kill(child)
        SERVER.wait(child, 60)
    code, rows = busy.recover()
    assert code == 0, rows
    [m] = busy.migrations()
    assert str(m.state) == "CONFIRMED", (seed, delay, m.state, m.reason)
    whole_and_advancing(busy)
    assert_replays_consistently(busy.db)
