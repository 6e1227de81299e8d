"""Coordinators killed mid-migration between two real libvirt daemons, then ``migrator recover``.

The hosts are the namespaced system daemons over ``qemu+tcp://`` (``netns.py``): kills at
each failpoint and at random instants (the soak). Kills while a daemon runs a step, and a
daemon restarted after the crash, are in ``test_crash_daemons.py``.

The daemons drop their half of a migration when the coordinator's connection closes: an
incoming guest not yet finished is destroyed, a source paused for the switch-over stays
paused. Recovery must then resume that source when the destination has nothing, and
destroy it only when the destination was seen running. After it: exactly one copy of the
guest runs (or ``IN_DOUBT`` with the source paused), no QEMU runs without a domain, and
``migrator replay`` agrees with the journal (``NsRig.settled``).
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import pytest

from migrator import failpoints
from migrator.journal.store import Journal
from tests.crash.forkserver import SERVER
from tests.libvirt import guests
from tests.libvirt.netns import NsPair
from tests.libvirt.nsrig import CLI_TIMEOUT, NsRig

STEPS = ("begin", "prepare", "perform", "finish", "confirm")
FAILPOINTS = [f"{step}.{point}" for step in STEPS for point in failpoints.POINTS]
SOAK_KILLS = int(os.environ.get("MIGRATOR_LIBVIRT_SOAK", "20"))
SOAK_WINDOW_S = 3.5
"""A migration of the tiny guest takes 2-3 s here, most of it in Confirm: kills land anywhere."""


def expected_end(failpoint: str) -> str:
    """Where recovery takes a migration whose coordinator died at ``failpoint``.

    Until Finish ran, the destination has nothing once the connection closed: back, the
    source resumed if Perform paused it. From Finish on, the destination runs the guest:
    forward, the source destroyed.
    """
    step = failpoint.partition(".")[0]
    if step in ("begin", "prepare", "perform") or failpoint == "finish.intent":
        return "ROLLED_BACK"
    return "CONFIRMED"


@pytest.mark.parametrize("failpoint", FAILPOINTS)
def test_a_coordinator_killed_at_a_failpoint_is_recovered_to_one_copy(
    ns_rig: NsRig, failpoint: str
) -> None:
    rig = ns_rig  # over qemu+tcp://
    env = {failpoints.ENV_VAR: f"{failpoint}=crash"}
    code, _ = rig.migrate(env=env)
    assert code == failpoints.CRASH_EXIT_CODE

    code, rows = rig.recover()

    assert code == 0, rows
    [m] = rig.migrations()
    rig.settled(m)
    assert str(m.state) == expected_end(failpoint)
    src = "absent" if str(m.state) == "CONFIRMED" else "running"
    assert rig.states()[0] == src


@pytest.mark.timeout(60 + 20 * SOAK_KILLS)
def test_sigkill_soak_every_kill_is_recovered_to_one_copy(ns_pair: NsPair, tmp_path: Path) -> None:
    """Over qemu+tcp:// between the namespaced hosts."""
    seed = int(os.environ.get("MIGRATOR_SOAK_SEED", "0")) or random.randrange(1 << 32)
    print(f"MIGRATOR_SOAK_SEED={seed}")
    rng = random.Random(seed)
    ends: dict[str, int] = {}
    for round_ in range(SOAK_KILLS):
        rig = _fresh_rig(ns_pair, tmp_path / f"round-{round_}.db")
        try:
            child = rig.spawn()
            time.sleep(rng.uniform(0.0, SOAK_WINDOW_S))
            SERVER.kill(child)
            SERVER.wait(child, CLI_TIMEOUT)
            code, rows = rig.recover()
            assert code == 0, (seed, round_, rows)
            end = _settled_or_never_started(rig)
        finally:
            for host in ns_pair.hosts():
                guests.destroy(host, rig.name)  # type: ignore[arg-type]
        ends[end] = ends.get(end, 0) + 1
    print(json.dumps(ends))
    assert set(ends) <= {"CONFIRMED", "ROLLED_BACK", "not started"}, ends


def _settled_or_never_started(rig: NsRig) -> str:
    """The end of the round's migration; ``"not started"`` if killed before it was journaled."""
    if migrations := rig.migrations():
        rig.settled(migrations[0])
        return str(migrations[0].state)
    assert rig.states() == ("running", "absent")
    assert rig.pair.stray_qemus() == {}
    return "not started"


def _fresh_rig(pair: NsPair, path: Path) -> NsRig:
    db = f"sqlite:///{path}"
    Journal.open(db, upgrade=True).close()
    name = guests.unique_name("soak")
    guests.create(pair.a, name, guests.domain_xml(name))  # type: ignore[arg-type]
    return NsRig(pair, db, name)
