"""``migrator qmp-host define|list|destroy`` with real QEMU processes."""

from __future__ import annotations

import json
import os
import signal

from tests.conftest import run_cli
from tests.qemu.rig import QemuRig, qemu_processes


def test_define_list_destroy_starts_reports_and_stops_a_real_qemu(rig: QemuRig) -> None:
    uri = rig.src.uri
    proc = run_cli("qmp-host", "define", uri, "vm1", "--memory", "64", "--busy")
    assert proc.returncode == 0, proc.stderr
    assert "defined vm1 (running" in proc.stdout

    proc = run_cli("qmp-host", "list", uri, "--json")
    [row] = json.loads(proc.stdout)
    assert (row["name"], row["state"], row["busy"]) == ("vm1", "running", True)
    assert row["memory_mib"] == 64
    assert set(qemu_processes(rig.root)) == {row["pid"]}

    proc = run_cli("qmp-host", "set-downtime", uri, "vm1", "1500")
    assert proc.returncode == 0 and "now and for later migrations" in proc.stdout
    assert rig.src.config("vm1")["downtime_limit_ms"] == 1500

    again = run_cli("qmp-host", "define", uri, "vm1")
    assert again.returncode == 2 and "already exists" in again.stderr

    proc = run_cli("qmp-host", "destroy", uri, "vm1")
    assert proc.returncode == 0, proc.stderr
    assert qemu_processes(rig.root) == {}
    assert json.loads(run_cli("qmp-host", "list", uri, "--json").stdout) == []


def test_a_domain_whose_qemu_died_is_listed_shutoff_and_cannot_be_migrated(
    rig: QemuRig,
) -> None:
    rig.src.define("vm1", memory_mib=32, touch_mib=4)
    pid = rig.src.pid_of("vm1")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert rig.state(rig.src, "vm1") == "shutoff"
    proc = run_cli(
        "migrate",
        "vm1",
        "--src",
        rig.src.uri,
        "--dst",
        rig.dst.uri,
        db=f"sqlite:///{rig.root}/j.db",
    )
    assert proc.returncode == 2 and "domain 'vm1' not found" in proc.stderr
    assert rig.state(rig.dst, "vm1") == "absent"
