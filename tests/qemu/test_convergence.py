"""A guest that never converges, on real QEMU over QMP: the project's busy kernel
(``tests/qemu/busyguest/busy.S``, built here with binutils) rewrites 46 MiB for ever, and the
bandwidth is capped at 16 MiB/s, so pre-copy alone never ends. Its convergence policy's
budget (2 s for a 64 MiB guest) runs out: ``abort`` leaves the source running, ``pause``
completes the migration with the downtime reported and the guest's memory whole."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from migrator.convergence.policy import Action, Policy
from migrator.drivers.qmp import Monitor
from migrator.engine.coordinator import Coordinator
from migrator.flags import MigrateFlags
from migrator.inspect import show
from migrator.journal.store import Journal
from migrator.records import EventKind
from migrator.states import State
from tests import busyguest
from tests.busyguest import COUNTER, REGION
from tests.conftest import ROOT, run_cli
from tests.qemu.conftest import REQUIRE_QEMU
from tests.qemu.rig import QemuRig


@pytest.fixture(scope="module")
def busy_kernel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return busyguest.build(tmp_path_factory.mktemp("busy"), required=REQUIRE_QEMU)


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal.open(f"sqlite:///{tmp_path / 'journal.db'}") as j:
        yield j


def counter(rig: QemuRig, host: object, name: str) -> int:
    return int.from_bytes(rig.src.read_memory(name, COUNTER, 4) if host is rig.src
                          else rig.dst.read_memory(name, COUNTER, 4), "little")  # fmt: skip


def advancing(rig: QemuRig, host: object, name: str) -> bool:
    first = counter(rig, host, name)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if counter(rig, host, name) > first:
            return True
        time.sleep(0.05)
    return False


def start_busy(rig: QemuRig, kernel: Path) -> None:
    rig.src.define("busy", memory_mib=64, kernel=str(kernel))
    assert advancing(rig, rig.src, "busy"), "the busy guest does not run"


def migrate(journal: Journal, rig: QemuRig, action: Action) -> dict[str, object]:
    c = Coordinator(journal, step_timeout=120)
    try:
        m = c.migrate(
            "busy", src=rig.src, dst=rig.dst, flags=MigrateFlags.LIVE, bandwidth=16,
            policy=Policy(budget_s_per_gib=32.0, action=action),
        )  # fmt: skip
    finally:
        c.close()
    return show(journal, m.id)


def test_abort_leaves_the_source_running(rig: QemuRig, busy_kernel: Path, journal: Journal) -> None:
    start_busy(rig, busy_kernel)
    m = migrate(journal, rig, Action.ABORT)
    assert m["state"] == State.ROLLED_BACK, m["reason"]
    kinds = [e["kind"] for e in m["events"]]  # type: ignore[attr-defined]
    assert EventKind.OVER_BUDGET in kinds and EventKind.ACTION in kinds
    assert "the convergence policy aborted Perform (over_budget)" in str(m["reason"])
    rig.check_one_copy(m)
    assert advancing(rig, rig.src, "busy")


def test_pause_completes_with_the_downtime_reported(
    rig: QemuRig, busy_kernel: Path, journal: Journal
) -> None:
    start_busy(rig, busy_kernel)
    m = migrate(journal, rig, Action.PAUSE)
    assert m["state"] == State.CONFIRMED, m["reason"]
    events = m["events"]
    action = next(e for e in events if e["kind"] == EventKind.ACTION)  # type: ignore[union-attr]
    assert (action["detail"]["action"], action["detail"]["outcome"]) == ("pause", "applied")
    transfer = m["stats"]["transfer"]  # type: ignore[index]
    assert transfer["paused"] is True and transfer["downtime_ms"] > 0
    assert transfer["paused_ms"] > transfer["downtime_ms"]  # stopped before the last pass
    assert transfer["passes"] >= 1
    rig.check_one_copy(m)
    assert advancing(rig, rig.dst, "busy"), "the guest does not run on the destination"
    with Monitor(rig.dst.rundir("busy")) as mon:
        mon.run("stop")  # one still snapshot: the sweep in progress, or just finished
    region = rig.dst.read_memory("busy", REGION[0], REGION[1] - REGION[0])
    assert busyguest.one_sweep_edge(region), "a page was lost: the sweep is not one edge"


def test_a_stall_seen_at_qemu_s_iteration_boundaries_takes_the_action(
    rig: QemuRig, busy_kernel: Path, journal: Journal
) -> None:
    """The downtime ramp is set live (``downtime-limit``), and the stall is judged on
    ``dirty-sync-count``: two passes without the remaining bytes going down."""
    start_busy(rig, busy_kernel)
    c = Coordinator(journal, step_timeout=120)
    try:
        policy = Policy(
            stall_iterations=2, max_downtime_ms=300, downtime_steps=2, downtime_delay=1.0
        )
        done = c.migrate(
            "busy", src=rig.src, dst=rig.dst, flags=MigrateFlags.LIVE, bandwidth=32, policy=policy
        )
    finally:
        c.close()
    m = show(journal, done.id)
    assert m["state"] == State.ROLLED_BACK, m["reason"]
    notes = [(e["kind"], e["detail"]) for e in m["events"] if e["kind"] in ("tuned", "stalled")]  # type: ignore[attr-defined]
    assert [(k, d.get("value"), d.get("outcome")) for k, d in notes[:2]] == [
        ("tuned", 150, "applied"), ("tuned", 300, "applied")
    ]  # fmt: skip
    kind, stalled = notes[2]
    assert kind == "stalled" and stalled["iterations"] == 2
    assert stalled["remaining"] >= stalled["least"] > 40 * 1024 * 1024  # the 46 MiB, again
    rig.check_one_copy(m)


def test_a_request_left_by_a_killed_coordinator_is_stamped_and_one_copy_runs(
    rig: QemuRig, busy_kernel: Path, tmp_path: Path
) -> None:
    """SIGKILLed in Perform (QEMU goes on sending), a ``set-speed`` journaled meanwhile;
    ``recover`` rolls the migration back (the transfer never completed), the source runs,
    and the request says it was never applied."""
    start_busy(rig, busy_kernel)
    db = f"sqlite:///{tmp_path / 'journal.db'}"
    argv = [sys.executable, "-m", "migrator", "--db", db, "migrate", "busy", "--live",
            "--src", rig.src.uri, "--dst", rig.dst.uri, "--bandwidth", "16",
            "--stall-iterations", "1000"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline and proc.poll() is None, "never in Perform"
            with Journal.open(db) as journal:
                found = journal.list(limit=1)
            if found and found[0].state is State.PERFORMING:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    mid = found[0].id
    asked = run_cli("set-speed", mid, "64", db=db)
    assert asked.returncode == 0, asked.stderr
    recovered = run_cli("recover", "--json", db=db, timeout=120)
    assert [r["result"] for r in json.loads(recovered.stdout)] == ["ROLLED_BACK"], recovered.stderr
    m = json.loads(run_cli("show", mid, "--json", db=db).stdout)
    [request] = m["requests"]
    assert request["outcome"] == "not applied: Perform had ended (the migration ended ROLLED_BACK)"
    rig.check_one_copy(m)
    assert advancing(rig, rig.src, "busy")
