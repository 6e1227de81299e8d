"""Parallel connections (multifd) between two real libvirt daemons: a policy's
``parallel_connections`` is ``VIR_MIGRATE_PARALLEL`` with the typed parameter
``parallel.connections`` on Begin3, Prepare3 and Perform3. The busy guest, which never
converges alone at 16 MiB/s, completes by the ``pause`` action over three connections (the
source's QEMU holds 1 + 3 TCP connections while it sends), its memory whole."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from tests import busyguest
from tests.crash.forkserver import SERVER
from tests.libvirt import guests
from tests.libvirt.rig import LibvirtRig
from tests.libvirt.test_convergence import busy_rig as busy_rig  # the fixture

CHANNELS = 3


def qemu_pids(name: str) -> list[int]:
    """The QEMU processes running guest ``name`` (the source's, and the destination's)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if f"guest={name},".encode() in cmdline and b"qemu" in cmdline:
            pids.append(int(proc.name))
    return pids


def running(pid: int) -> bool:
    """Whether process ``pid`` still runs (not exited, nor a zombie left to reap)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def connections(pid: int) -> int:
    """The established TCP connections of process ``pid``."""
    out = subprocess.run(
        ["ss", "-Htnp", "state", "established"], capture_output=True, text=True, check=True
    ).stdout
    return sum(f"pid={pid}," in line for line in out.splitlines())


def test_a_migration_over_parallel_connections_completes_with_memory_intact(
    busy_rig: LibvirtRig,
) -> None:
    policy = ("--budget", "32", "--on-stall", "pause", "--parallel-connections", str(CHANNELS))
    child = busy_rig.spawn("--bandwidth", "16", *policy)
    most, deadline = 0, time.monotonic() + 120
    try:
        while running(child.pid):
            assert time.monotonic() < deadline, "the migration did not end"
            most = max([most, *(connections(pid) for pid in qemu_pids(busy_rig.name))])
            time.sleep(0.05)
        done = SERVER.wait(child, 120)
    except BaseException:
        SERVER.kill(child)
        SERVER.wait(child, 30)
        raise
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["state"] == "CONFIRMED", outcome
    assert most == 1 + CHANNELS, "not sent over the main channel and three multifd channels"
    history = busy_rig.history(outcome["id"])
    tuned = [e.detail for e in history if e.kind == "tuned"]
    assert {"setting": "parallel", "value": 3, "by": "parallel", "outcome": "applied"} in tuned
    assert busy_rig.states() == ("absent", "running")
    busy_rig.pair.dst.virsh("suspend", busy_rig.name)  # one still snapshot
    start, end = busyguest.REGION
    region = guests.read_memory(busy_rig.pair.dst, busy_rig.name, start, end - start)
    assert busyguest.one_sweep_edge(region), "a page was lost: the sweep is not one edge"
