"""A coordinator killed during a network cut, then ``migrator recover``: the hosts are left
clean, so the next migration of the same guest succeeds (namespaced hosts, ``netns.py``,
over ``qemu+tcp://``, ``qemu+tls://`` and ``qemu+ssh://``).

The destination's link goes down while Perform3 sends the guest; the coordinator is
SIGKILLed during the cut; ``recover`` runs while the link is still down (the destination
cannot be reached: the cleanup of its side fails, the source is the only copy; the cut
lasts 20 s, or until ``recover`` ended if that is later). The
source's daemon still runs the dead client's outgoing migration job (its Perform3 waits on
QEMU's stalled stream), which would refuse the next migration of the domain for minutes:
recovery aborts it and says so in the timeline. Once the link is back, a new migration of
the same guest ends CONFIRMED.
"""

from __future__ import annotations

import time

from migrator.drivers import payload
from migrator.states import State, Step
from tests.crash.forkserver import SERVER
from tests.libvirt import guests
from tests.libvirt.nsrig import NsRig

CUT_S = 20.0
DEADLINE = 60.0


def wait_for(what: object, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not what():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not within {timeout} s"
        time.sleep(0.1)


def test_recover_after_a_kill_during_a_cut_leaves_no_job_and_the_next_migration_succeeds(
    ns_rig: NsRig,
) -> None:
    rig, pair = ns_rig, ns_rig.pair
    guests.destroy(pair.a, rig.name)  # a guest whose memory takes a while at 1 MiB/s
    pattern = payload.Pattern(touch_mib=24, seed=0x63757421)
    guests.create_pattern_guest(pair.a, pair.root, rig.name, pattern, 64)  # type: ignore[arg-type]
    child = rig.spawn("--bandwidth", "1", "--timeout", "120")
    try:
        wait_for(lambda: [m for m in rig.migrations() if m.state is State.PERFORMING])
        time.sleep(1.0)  # the guest's memory is on its way
        cut_at = time.monotonic()
        pair.cut(pair.b)
        time.sleep(2.0)
        SERVER.kill(child)
        assert SERVER.wait(child, DEADLINE).returncode == -9
        code, rows = rig.recover("--timeout", "1.5")  # the destination stays cut off
        assert pair.a.virsh("domjobinfo", rig.name).split()[2] == "None", "a job is left"
        time.sleep(max(0.0, CUT_S - (time.monotonic() - cut_at)))  # a cut of 20 s at least
    finally:
        SERVER.kill(child)
        pair.cut(pair.b, up=True)
    assert code == 0, rows
    [row] = rows
    assert row["result"] == "ROLLED_BACK", row
    [old] = rig.migrations()
    confirm = [e for e in rig.history(old.id) if e.step is Step.CONFIRM and e.kind == "ok"]
    assert "outgoing migration job of a client gone was aborted" in str(confirm[-1].detail)
    assert rig.states() == ("running", "absent")

    code, outcome = rig.migrate()

    assert (code, outcome["state"]) == (0, "CONFIRMED"), outcome
    assert rig.states() == ("absent", "running")
