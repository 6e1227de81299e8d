"""``migrator migrate`` between two qmp:/// hosts: real QEMU processes, memory checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from migrator import Coordinator, MigrateFlags, Progress, State
from migrator.drivers import payload
from migrator.drivers.qmphost import pattern_of
from migrator.journal.store import Journal
from migrator.states import Step
from tests.conftest import ROOT, assert_replays_consistently, run_cli
from tests.crash.harness import sqlite_url
from tests.qemu.rig import QemuRig, qemu_processes

MIB = 1024 * 1024
MEMORY, TOUCH = 128, 96


def migrate(rig: QemuRig, db: str, *extra: str) -> dict[str, object]:
    proc = run_cli(
        "migrate", "vm1", "--src", rig.src.uri, "--dst", rig.dst.uri, "--live", "--json", *extra,
        db=db,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    outcome: dict[str, object] = json.loads(proc.stdout)
    return outcome


def perform_stats(db: str, migration_id: str) -> dict[str, Any]:
    with Journal.open(db) as journal:
        events = journal.history(migration_id)
    [ok] = [e for e in events if e.step is Step.PERFORM and e.kind == "ok"]
    assert ok.detail is not None
    return ok.detail


def check_migrated(rig: QemuRig, db: str, bandwidth: int) -> dict[str, Any]:
    """Define vm1 (128 MiB, 96 touched), migrate it with the CLI, check where it runs, that
    the destination's memory equals the source's and what the journal kept; the stats."""
    rig.src.define("vm1", memory_mib=MEMORY, touch_mib=TOUCH)
    src_pid = rig.src.pid_of("vm1")
    before = rig.region(rig.src, "vm1")
    pattern = pattern_of(rig.src.config("vm1"))
    assert len(before) == TOUCH * MIB
    assert payload.check_region(before, pattern) == 0  # the guest wrote every page

    outcome = migrate(rig, db, "--bandwidth", str(bandwidth))

    assert outcome["state"] == "CONFIRMED"
    assert rig.states("vm1") == ("absent", "running")
    assert set(qemu_processes(rig.root)) == {rig.dst.pid_of("vm1")}  # no orphan QEMU
    assert src_pid is not None and not rig.src.pid_of("vm1")
    after = rig.region(rig.dst, "vm1")
    assert after == before, "the destination's guest memory differs from the source's"

    stats = perform_stats(db, str(outcome["id"]))
    assert int(stats["transferred_bytes"]) >= TOUCH * MIB
    assert int(stats["total_time_ms"]) > 0
    with Journal.open(db) as journal:
        progress = journal.get(str(outcome["id"])).progress
    assert progress is not None
    assert progress["remaining"] == 0 and progress["transferred"] >= TOUCH * MIB
    return stats


def test_migrate_moves_a_128_mib_guest_with_96_mib_touched_memory_intact(
    rig: QemuRig, db_url: str
) -> None:
    check_migrated(rig, db_url, bandwidth=0)


def test_migrate_with_a_bandwidth_cap_keeps_to_it_memory_intact(
    rig: QemuRig, tmp_path: Path
) -> None:
    db = sqlite_url(tmp_path / "journal")
    stats = check_migrated(rig, db, bandwidth=64)
    # 96 MiB at 64 MiB/s cannot take less than 1.5 s; QEMU's own clock says so too.
    assert int(stats["total_time_ms"]) >= 1400
    assert_replays_consistently(db)


def test_perform_reports_qemu_progress_to_the_coordinator_and_the_journal(
    rig: QemuRig, tmp_path: Path
) -> None:
    rig.src.define("vm1", memory_mib=64, touch_mib=32)
    samples: list[Progress] = []
    with Journal.open(sqlite_url(tmp_path / "journal")) as journal:
        coordinator = Coordinator(journal, on_progress=lambda _m, p: samples.append(p))
        m = coordinator.migrate(
            "vm1", src=rig.src, dst=rig.dst, flags=MigrateFlags.LIVE, bandwidth=32
        )
        coordinator.close()
        kept = journal.get(m.id).progress
    assert m.state is State.CONFIRMED
    assert len(samples) >= 10  # 32 MiB at 32 MiB/s, sampled every 50 ms
    sent = [p.transferred for p in samples]
    assert sent == sorted(sent) and sent[0] < 16 * MIB < sent[-1]
    assert all(p.total == samples[0].total >= 64 * MIB for p in samples)
    assert samples[-1].remaining == 0 and samples[-1].passes >= 2
    assert kept == samples[-1].as_dict()


def test_two_guests_migrate_at_once_between_the_same_hosts(rig: QemuRig, tmp_path: Path) -> None:
    """Each migration gets its own incoming port and QMP sockets; the host files, one lock."""
    for name in ("vm1", "vm2"):
        rig.src.define(name, memory_mib=64, touch_mib=32)
    before = {name: rig.region(rig.src, name) for name in ("vm1", "vm2")}
    db = sqlite_url(tmp_path / "journal")
    procs = [spawn_migrate(db, rig, name) for name in ("vm1", "vm2")]
    outcomes = [proc.communicate(timeout=60) for proc in procs]
    assert [p.returncode for p in procs] == [0, 0], outcomes
    uris = {json.loads(out)["id"]: perform_uri(db, json.loads(out)["id"]) for out, _ in outcomes}
    assert len(set(uris.values())) == 2
    for name in ("vm1", "vm2"):
        assert rig.states(name) == ("absent", "running")
        assert rig.region(rig.dst, name) == before[name]
    assert len(qemu_processes(rig.root)) == 2
    assert_replays_consistently(db)


def spawn_migrate(db: str, rig: QemuRig, name: str) -> subprocess.Popen[str]:
    argv = ["migrate", name, "--src", rig.src.uri, "--dst", rig.dst.uri, "--live"]
    return subprocess.Popen(
        [sys.executable, "-m", "migrator", "--db", db, *argv, "--bandwidth", "64", "--json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def perform_uri(db: str, migration_id: str) -> str:
    with Journal.open(db) as journal:
        [intent] = [
            e for e in journal.history(migration_id)
            if e.step is Step.PERFORM and e.kind == "intent"
        ]  # fmt: skip
    assert intent.uri is not None
    return intent.uri
