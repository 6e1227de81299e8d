"""Coordinators killed mid-migration between two real libvirt daemons, then ``migrator recover``.

The hosts are the namespaced system daemons (``netns.py``): at the failpoints, in the soak
and around a daemon restart over ``qemu+tcp://``. A kill while the daemon runs a step is
placed by RPC taps in front of both hosts (``nettap.py``); each case runs over the
daemons' UNIX sockets and over one network transport, ``tcp``, ``tls`` and ``ssh`` in turn.

The daemons drop their half of a migration when the coordinator's connection closes: an
incoming guest not yet finished is destroyed, a source paused for the switch-over stays
paused. Recovery must then resume that source when the destination has nothing, and
destroy it only when the destination was seen running. After it: exactly one copy of the
guest runs (or ``IN_DOUBT`` with the source paused), no QEMU runs without a domain, and
``migrator replay`` agrees with the journal (``LibvirtRig.settled``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest

from migrator import failpoints
from migrator.journal.store import Journal
from tests.crash.forkserver import SERVER, Child
from tests.libvirt import guests
from tests.libvirt.netns import NsPair
from tests.libvirt.nsrig import CLI_TIMEOUT, NsRig, unix_and_one_network
from tests.libvirt.rpctap import Gate

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


IN_FLIGHT = {"prepare": (303, {"ROLLED_BACK"}),
             "perform": (305, {"ROLLED_BACK", "CONFIRMED"}),
             "finish": (306, {"CONFIRMED", "ROLLED_BACK"})}  # fmt: skip
"""The step's procedure, and the safe ends: a transfer or a Finish the daemon completed on
its own after the coordinator died may go either way, as long as one copy runs."""


IN_FLIGHT_CASES = [(step, delay) for step in IN_FLIGHT for delay in (0.0, 0.2)]


@pytest.mark.parametrize(("step", "delay", "transport"), unix_and_one_network(IN_FLIGHT_CASES))
def test_a_coordinator_killed_while_the_daemon_runs_a_step_is_recovered_at_once(
    ns_rig: NsRig, step: str, delay: float
) -> None:
    """Killed ``delay`` s after the call left, recovered before the daemons cleaned up."""
    rig = ns_rig
    proc, expected = IN_FLIGHT[step]
    gate = Gate()
    children: list[Child] = []
    gate.after_call(proc, lambda: threading.Timer(delay, SERVER.kill, [children[0]]).start())
    with rig.tapped(gate) as (src, dst):
        children.append(rig.spawn(src=src, dst=dst))
        assert SERVER.wait(children[0], CLI_TIMEOUT).returncode == -signal.SIGKILL
        code, rows = rig.recover()
    assert code == 0, rows
    assert str(rig.settled().state) in expected


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


@pytest.mark.parametrize(
    ("failpoint", "daemon", "expected"),
    [
        ("perform.called", "src", "ROLLED_BACK"),
        ("finish.called", "dst", "CONFIRMED"),
        ("finish.called", "src", "CONFIRMED"),
    ],
)
def test_a_daemon_restarted_after_the_crash_is_reconciled_too(
    ns_rig: NsRig, failpoint: str, daemon: str, expected: str
) -> None:
    """The coordinator died, then a daemon restarted before recovery asked it anything."""
    rig = ns_rig
    code, _ = rig.migrate(env={failpoints.ENV_VAR: f"{failpoint}=crash"})
    assert code == failpoints.CRASH_EXIT_CODE
    host = rig.pair.a if daemon == "src" else rig.pair.b
    host.stop_libvirtd()
    host.start_libvirtd()

    code, rows = rig.recover()

    assert code == 0, rows
    [m] = rig.migrations()
    rig.settled(m)
    assert str(m.state) == expected
