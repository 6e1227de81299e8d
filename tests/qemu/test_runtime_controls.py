"""Runtime controls and parallel connections between real QEMU processes.

- ``set-speed`` after the switch to post-copy is QEMU's ``max-postcopy-bandwidth``, set
  live by the process driving the migration, and by ``recover`` when it resumes a paused
  post-copy (the request was journaled while paused);
- a policy's ``parallel_connections`` is QEMU's ``multifd`` with ``multifd-channels`` on
  both sides, before ``migrate-incoming`` and ``migrate``: the busy guest (which never
  converges alone) completes by the ``pause`` action, its memory whole.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrator.convergence.policy import Action, Policy
from migrator.drivers.qmp import Monitor
from migrator.engine.coordinator import Coordinator
from migrator.flags import MigrateFlags
from migrator.inspect import show
from migrator.journal.store import Journal
from migrator.states import State
from tests import busyguest
from tests.busyguest import REGION
from tests.conftest import run_cli
from tests.qemu import test_postcopy
from tests.qemu.rig import QemuRig
from tests.qemu.test_convergence import advancing, start_busy
from tests.qemu.test_convergence import busy_kernel as busy_kernel  # the fixture
from tests.qemu.test_crash import cli, only, view
from tests.qemu.test_postcopy import (
    SWITCH,
    _all,
    check_landed,
    define_busy,
    killed_after_the_switch_then_cut,
)
from tests.qemu.test_postcopy import db as db  # the fixture: skips without userfaultfd

MIB = 1024 * 1024
postcopy_kernel = test_postcopy.busy_kernel  # the fixture: ``busyguest/busy.S``, 32 MiB


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal.open(f"sqlite:///{tmp_path / 'journal.db'}") as j:
        yield j


def parameter(rundir: Path, name: str) -> Any:
    with Monitor(rundir) as mon:
        return mon.run("query-migrate-parameters").get(name)


def test_a_migration_over_parallel_connections_completes_with_memory_intact(
    rig: QemuRig, busy_kernel: Path, journal: Journal
) -> None:
    start_busy(rig, busy_kernel)
    c = Coordinator(journal, step_timeout=120)
    try:
        done = c.migrate(
            "busy", src=rig.src, dst=rig.dst, flags=MigrateFlags.LIVE, bandwidth=16,
            policy=Policy(parallel_connections=3, budget_s_per_gib=32.0, action=Action.PAUSE),
        )  # fmt: skip
    finally:
        c.close()
    m = show(journal, done.id)
    assert m["state"] == State.CONFIRMED, m["reason"]
    transfer = m["stats"]["transfer"]  # type: ignore[index]
    assert transfer["multifd_channels"] == 3  # as the source's QEMU reported it
    assert "parallel=3" in transfer["controls"]
    dst = rig.dst.rundir("busy")
    assert parameter(dst, "multifd-channels") == 3
    with Monitor(dst) as mon:
        caps = {c["capability"]: c["state"] for c in mon.run("query-migrate-capabilities")}
    assert caps["multifd"] is True
    rig.check_one_copy(m)
    assert advancing(rig, rig.dst, "busy"), "the guest does not run on the destination"
    with Monitor(dst) as mon:
        mon.run("stop")  # one still snapshot
    region = rig.dst.read_memory("busy", REGION[0], REGION[1] - REGION[0])
    assert busyguest.one_sweep_edge(region), "a page was lost: the sweep is not one edge"


def _wait_for(db: str, state: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while not (_all(db) and _all(db)[0].state.value == state):
        assert time.monotonic() < deadline, f"never {state}"
        time.sleep(0.02)
    return str(_all(db)[0].id)


def test_set_speed_in_post_copy_is_qemu_s_post_copy_bandwidth(
    rig: QemuRig, db: str, postcopy_kernel: Path
) -> None:
    """Slowed to 1 MiB/s after the switch (QEMU reports it), then sped up to finish."""
    from tests.crash.forkserver import SERVER
    from tests.crash.harness import CLI_TIMEOUT, ROOT, cli_env

    src_pass = define_busy(rig, postcopy_kernel)
    argv = ["migrate", "vm1", "--src", rig.src.uri, "--dst", rig.dst.uri, "--live", "--json"]
    child = SERVER.spawn(
        [*argv, "--bandwidth", "4", "--flag", "postcopy"],
        env=cli_env(db, {"MIGRATOR_FAILPOINTS": SWITCH}),
        cwd=ROOT,
    )
    mid = _wait_for(db, "POSTCOPY_ACTIVE")
    slow = run_cli("set-speed", mid, "1", "--wait", "30", db=db)
    assert slow.returncode == 0, slow.stdout + slow.stderr
    assert parameter(rig.src.rundir("vm1"), "max-postcopy-bandwidth") == MIB
    fast = run_cli("set-speed", mid, "512", "--wait", "30", db=db)
    assert fast.returncode == 0, fast.stdout + fast.stderr
    done = SERVER.wait(child, CLI_TIMEOUT)
    assert done.returncode == 0, done.stderr
    m = view(db, mid)
    check_landed(rig, m, src_pass)
    notes = [e for e in m["events"] if e["kind"] == "request"]
    assert [(e["detail"]["setting"], e["detail"]["value"]) for e in notes] == [
        ("postcopy-speed", 1), ("postcopy-speed", 512)
    ]  # fmt: skip
    assert all(e["state"] == "POSTCOPY_ACTIVE" for e in notes)
    assert [r["outcome"] for r in m["requests"]] == ["applied", "applied"]


def test_set_speed_journaled_while_post_copy_is_paused_is_applied_by_recover(
    rig: QemuRig, db: str, postcopy_kernel: Path
) -> None:
    src_pass = define_busy(rig, postcopy_kernel)
    killed_after_the_switch_then_cut(rig, db)  # at 8 MiB/s, as before
    mid = only(db).id
    asked = run_cli("set-speed", mid, "256", db=db)
    assert asked.returncode == 0, asked.stderr
    code, rows = cli(db, "recover", "--json")
    assert code == 0, rows
    m = view(db, mid)
    check_landed(rig, m, src_pass)
    [request] = m["requests"]
    assert request["outcome"] == "applied", request
    [note] = [e for e in m["events"] if e["kind"] == "request"]  # QEMU took it
    assert (note["step"], note["detail"]["setting"]) == ("postcopy_resume", "postcopy-speed")
    assert note["detail"]["outcome"] == "applied"


def test_after_the_switch_the_policy_notes_nothing(
    rig: QemuRig, db: str, postcopy_kernel: Path
) -> None:
    """A budget of 0.25 s (8 s per GiB of 32 MiB) runs out while post-copy still sends at
    4 MiB/s: nothing is noted, no action taken; the migration completes."""
    src_pass = define_busy(rig, postcopy_kernel)
    argv = ["migrate", "vm1", "--src", rig.src.uri, "--dst", rig.dst.uri, "--live", "--json"]
    policy = ("--budget", "8", "--stall-iterations", "1")
    env = {"MIGRATOR_FAILPOINTS": SWITCH}
    code, _ = cli(db, *argv, "--bandwidth", "4", "--flag", "postcopy", *policy, env=env)
    assert code == 0
    m = view(db, only(db).id)
    check_landed(rig, m, src_pass)
    kinds = [e["kind"] for e in m["events"]]
    assert not {"over_budget", "stalled", "action"} & set(kinds), kinds
