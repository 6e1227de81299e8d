"""Parallel connections (multifd) between the namespaced system-mode libvirt hosts
(``ns_pair``), reached over each network transport: a policy's ``parallel_connections`` is
``VIR_MIGRATE_PARALLEL`` with the typed parameter ``parallel.connections`` on Begin3,
Prepare3 and Perform3. The busy guest (fixture ``busy``), which never converges alone at 16
MiB/s, completes by the ``pause`` action over three connections (the source's QEMU holds 1 +
3 TCP connections while it sends, in its host's namespace), its memory whole."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from tests.crash.forkserver import SERVER
from tests.libvirt.netns import NsHost
from tests.libvirt.nsrig import NsRig
from tests.libvirt.postcopy_rig import busy as busy  # the fixture
from tests.libvirt.postcopy_rig import whole_and_advancing

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


def connections(hosts: list[NsHost]) -> dict[int, int]:
    """The established TCP connections of each process in ``hosts``' namespaces, by pid."""
    count: dict[int, int] = {}
    for host in hosts:
        for line in host.ss("-tnp", "state", "established").splitlines():
            for pid in re.findall(r"pid=(\d+),", line):
                count[int(pid)] = count.get(int(pid), 0) + 1
    return count


def test_a_migration_over_parallel_connections_completes_with_memory_intact(busy: NsRig) -> None:
    policy = ("--budget", "32", "--on-stall", "pause", "--parallel-connections", str(CHANNELS))
    child = busy.spawn("--bandwidth", "16", *policy)
    most, deadline = 0, time.monotonic() + 120
    try:
        while running(child.pid):
            assert time.monotonic() < deadline, "the migration did not end"
            held = connections(busy.pair.hosts())
            most = max([most, *(held.get(pid, 0) for pid in qemu_pids(busy.name))])
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
    history = busy.history(outcome["id"])
    tuned = [e.detail for e in history if e.kind == "tuned"]
    assert {"setting": "parallel", "value": 3, "by": "parallel", "outcome": "applied"} in tuned
    whole_and_advancing(busy)  # on the destination only, no page lost, running
