"""Coordinators killed while a daemon works, then ``migrator recover``: killed while a
daemon runs Prepare3, Perform3 or Finish3, killed before a daemon restarted, and killed
before the source's daemon, restarted, resumed the guest the destination runs.

A kill while the daemon runs a step is placed by RPC taps in front of both namespaced hosts
(``nettap.py``): once the step's call has left for the daemon, the coordinator is SIGKILLed
at once or 0.2 s later, and recovered before the daemons cleaned up. Each case runs over the
daemons' UNIX sockets, ``qemu+tcp://``, ``qemu+tls://`` and ``qemu+ssh://``; the daemon
restarts over the three network transports. After recovery, exactly one copy of the guest
runs, no QEMU runs without a domain, and ``migrator replay`` agrees with the journal
(``NsRig.settled``)."""

from __future__ import annotations

import json
import signal
import threading

import pytest

from migrator import failpoints
from migrator.drivers.libvirt.procedures import Proc
from migrator.records import EventKind
from migrator.states import Step
from tests.crash.forkserver import SERVER, Child
from tests.libvirt.nettap import ALL_TRANSPORTS
from tests.libvirt.nsrig import CLI_TIMEOUT, NsRig, restart_resuming, signal_qemus, wait_until
from tests.libvirt.rpctap import Gate

IN_FLIGHT = {"prepare": (303, {"ROLLED_BACK"}),
             "perform": (305, {"ROLLED_BACK", "CONFIRMED"}),
             "finish": (306, {"CONFIRMED", "ROLLED_BACK"})}  # fmt: skip
"""The step's procedure, and the safe ends: a transfer or a Finish the daemon completed on
its own after the coordinator died may go either way, as long as one copy runs."""


IN_FLIGHT_CASES = [(step, delay) for step in IN_FLIGHT for delay in (0.0, 0.2)]


@pytest.mark.parametrize("transport", ALL_TRANSPORTS)
@pytest.mark.parametrize(("step", "delay"), IN_FLIGHT_CASES)
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

    assert code == 0, json.dumps(rows)
    [m] = rig.migrations()
    rig.settled(m)
    assert str(m.state) == expected


def test_a_source_its_daemon_resumed_after_the_crash_is_destroyed(ns_rig: NsRig) -> None:
    """libvirt 9.0 resumes the source of a finished transfer if its daemon is killed while
    it cleans up after the lost client (the job then reads ``confirm3_cancelled``, as if
    Finish3 had failed): two copies run. Recovery keeps the destination's, which Finish3
    started, and destroys the source's. The source's QEMU is stopped so the cleanup hangs in
    the monitor; in the wild a slow QEMU and a service restart do the same, now and then."""
    rig, src = ns_rig, ns_rig.pair.a
    gate, stopped = Gate(), []  # stopped before the coordinator dies: its cleanup will hang
    gate.before_call(
        Proc.DOMAIN_MIGRATE_FINISH3_PARAMS,
        lambda: stopped.extend(signal_qemus(src, rig.name, signal.SIGSTOP)),
    )
    with rig.tapped(gate) as (s, d):
        code, _ = rig.migrate(src=s, dst=d, env={failpoints.ENV_VAR: "finish.called=crash"})
        assert code == failpoints.CRASH_EXIT_CODE
        assert stopped
        closed = f"{CLOSED} {rig.name} was closed"
        wait_until(lambda: closed in (src.home / "libvirtd.log").read_text(), "the cleanup")
        restart_resuming(src, rig.name)

        code, rows = rig.recover()

    assert code == 0, json.dumps(rows)
    m = rig.settled()
    assert str(m.state) == "CONFIRMED"
    [confirm] = [e for e in rig.history(m.id) if e.step == Step.CONFIRM and e.kind == EventKind.OK]
    assert "resumed it as a cancelled migration" in (confirm.detail or {})["source"]


CLOSED = "The connection which controls migration of domain"
