"""Coordinators killed mid-migration between real QEMU processes, then ``migrator recover``.

After recovery, exactly one QEMU runs the guest, on the host the journal names; no other
QEMU is left under the hosts; the journal has no gap, its Confirm flags agree with what it
knew of the destination, and it replays consistently.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from migrator.drivers.api import DomainState
from migrator.drivers.qmp import Monitor
from migrator.journal.store import Journal
from migrator.records import Migration
from migrator.states import State
from tests.conftest import ROOT, assert_replays_consistently
from tests.crash.forkserver import SERVER, Child
from tests.crash.harness import CLI_TIMEOUT, cli_env, sqlite_url
from tests.qemu.rig import QemuRig

MEMORY, TOUCH = 64, 32
SLOW_CAP = 16  # MiB/s: 32 MiB take 2 s, time enough to kill something mid-transfer


@pytest.fixture
def db(tmp_path: Path) -> str:
    return sqlite_url(tmp_path / "journal")


def cli(db: str, *argv: str, env: dict[str, str] | None = None) -> tuple[int, Any]:
    proc = SERVER.run(list(argv), env=cli_env(db, env), cwd=ROOT, timeout=CLI_TIMEOUT)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else None


def spawn_migrate(rig: QemuRig, db: str, *extra: str, env: dict[str, str] | None = None) -> Child:
    argv = ["migrate", "vm1", "--src", rig.src.uri, "--dst", rig.dst.uri, "--live", "--json"]
    return SERVER.spawn([*argv, *extra], env=cli_env(db, env), cwd=ROOT)


def migrate_argv(rig: QemuRig) -> list[str]:
    return ["migrate", "vm1", "--src", rig.src.uri, "--dst", rig.dst.uri, "--live"]


def only(db: str) -> Migration:
    with Journal.open(db) as journal:
        [m] = journal.list()
        return m


def view(db: str, migration_id: str) -> dict[str, Any]:
    from migrator.inspect import show

    with Journal.open(db) as journal:
        return show(journal, migration_id)


def wait_for(
    what: str, ready: Callable[[], bool], timeout: float = 30.0, interval: float = 0.02
) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval)


def transferring(db: str) -> Callable[[], bool]:
    """True once Perform runs and QEMU has reported some bytes sent."""

    def check() -> bool:
        with Journal.open(db) as journal:
            ms = journal.list()
        return bool(ms) and ms[0].state is State.PERFORMING and bool(ms[0].progress)

    return check


def passes(rig: QemuRig) -> int:
    ram = rig.src.migration_info("vm1").get("ram") or {}
    return int(ram.get("dirty-sync-count", 0))


def recover_and_check(rig: QemuRig, db: str, expected: str) -> dict[str, Any]:
    code, rows = cli(db, "recover", "--json")
    assert code == 0, rows
    [row] = rows
    m = view(db, row["id"])
    assert m["state"] == expected, (m["state"], m["reason"])
    rig.check_one_copy(m)
    rig.check_journal(m)
    assert cli(db, "recover", "--json") == (0, [])
    assert_replays_consistently(db)
    return m


@pytest.mark.parametrize(
    ("failpoint", "expected"),
    [
        ("prepare.called", "ROLLED_BACK"),  # the incoming QEMU runs: it must not be orphaned
        ("perform.intent", "ROLLED_BACK"),
        ("perform.called", "CONFIRMED"),
        ("perform.recorded", "CONFIRMED"),
        ("finish.intent", "CONFIRMED"),
        ("finish.called", "CONFIRMED"),
        ("finish.recorded", "CONFIRMED"),
        ("confirm.intent", "CONFIRMED"),
        ("confirm.called", "CONFIRMED"),
    ],
)
def test_a_coordinator_dead_at_a_failpoint_is_recovered_to_one_running_qemu(
    rig: QemuRig, db: str, failpoint: str, expected: str
) -> None:
    rig.src.define("vm1", memory_mib=MEMORY, touch_mib=TOUCH)
    before = rig.region(rig.src, "vm1")
    code, _ = cli(db, "migrate", "vm1", "--src", rig.src.uri, "--dst", rig.dst.uri, "--live",
                  env={"MIGRATOR_FAILPOINTS": f"{failpoint}=crash"})  # fmt: skip
    assert code == 137
    assert only(db).state not in (State.CONFIRMED, State.ROLLED_BACK)
    if failpoint.startswith(("prepare.", "perform.", "finish.intent")):
        assert rig.state(rig.dst, "vm1") == "incoming"  # a second QEMU runs until recovery
    m = recover_and_check(rig, db, expected)
    host = rig.dst if m["state"] == "CONFIRMED" else rig.src
    assert rig.region(host, "vm1") == before


def test_sigkill_while_performing_then_recover_during_the_transfer_rolls_back(
    rig: QemuRig, db: str
) -> None:
    rig.src.define("vm1", memory_mib=MEMORY, touch_mib=TOUCH)
    src_pid = rig.src.pid_of("vm1")
    child = spawn_migrate(rig, db, "--bandwidth", str(SLOW_CAP))
    try:
        wait_for("the transfer", transferring(db))
    finally:
        SERVER.kill(child)
        assert SERVER.wait(child, CLI_TIMEOUT).returncode == -signal.SIGKILL
    # QEMU goes on sending without its coordinator; recovery finds no completed transfer.
    assert rig.src.migration_info("vm1")["status"] == "active"
    m = recover_and_check(rig, db, "ROLLED_BACK")
    assert "source reports no completed transfer" in m["reason"]
    assert rig.src.pid_of("vm1") == src_pid


def test_sigkill_while_performing_then_recover_after_qemu_finished_goes_forward(
    rig: QemuRig, db: str
) -> None:
    rig.src.define("vm1", memory_mib=MEMORY, touch_mib=TOUCH)
    before = rig.region(rig.src, "vm1")
    child = spawn_migrate(rig, db, "--bandwidth", str(SLOW_CAP))
    try:
        wait_for("the transfer", transferring(db))
    finally:
        SERVER.kill(child)
        SERVER.wait(child, CLI_TIMEOUT)
    wait_for("QEMU to complete", lambda: rig.src.migration_info("vm1")["status"] == "completed")
    m = recover_and_check(rig, db, "CONFIRMED")
    assert m["events"][-1]["step"] == "confirm"
    assert rig.region(rig.dst, "vm1") == before


def test_the_destination_qemu_killed_mid_transfer_rolls_back_and_the_source_runs(
    rig: QemuRig, db: str
) -> None:
    rig.src.define("vm1", memory_mib=MEMORY, touch_mib=TOUCH)
    src_pid = rig.src.pid_of("vm1")
    before = rig.region(rig.src, "vm1")
    child = spawn_migrate(rig, db, "--bandwidth", str(SLOW_CAP))
    try:
        wait_for("the transfer", transferring(db))
        dst_pid = rig.dst.pid_of("vm1")
        assert dst_pid is not None
        os.kill(dst_pid, signal.SIGKILL)
    finally:
        done = SERVER.wait(child, CLI_TIMEOUT)
    assert done.returncode == 1, done.stderr
    m = view(db, json.loads(done.stdout)["id"])
    assert m["state"] == "ROLLED_BACK"
    assert "perform failed" in m["reason"]
    rig.check_one_copy(m)
    rig.check_journal(m)
    assert rig.src.pid_of("vm1") == src_pid
    assert rig.region(rig.src, "vm1") == before
    assert_replays_consistently(db)


def test_abort_during_perform_cancels_the_transfer_and_the_source_runs(
    rig: QemuRig, db: str
) -> None:
    rig.src.define("vm1", memory_mib=MEMORY, touch_mib=TOUCH)
    child = spawn_migrate(rig, db, "--bandwidth", str(SLOW_CAP))
    try:
        wait_for("the transfer", transferring(db))
        proc = SERVER.run(["abort", only(db).id], env=cli_env(db), cwd=ROOT, timeout=CLI_TIMEOUT)
        assert proc.returncode == 0, proc.stderr
    finally:
        done = SERVER.wait(child, CLI_TIMEOUT)
    assert done.returncode == 1, done.stderr
    m = view(db, json.loads(done.stdout)["id"])
    assert m["state"] == "ROLLED_BACK"
    assert "aborted" in m["reason"]
    assert rig.src.migration_info("vm1")["status"] == "cancelled"  # migrate_cancel, not a kill
    rig.check_one_copy(m)
    rig.check_journal(m)
    assert_replays_consistently(db)


def test_busy_guest_converges_after_the_downtime_limit_is_raised_memory_equal(
    rig: QemuRig, db: str
) -> None:
    """A guest rewriting 16 MiB cannot converge at 32 MiB/s in 300 ms; at 2 s it does.

    The coordinator dies right after Perform, so both QEMUs hold the guest stopped: the
    source in postmigrate, the destination not yet continued; their memories must be equal.
    """
    rig.src.define("vm1", memory_mib=MEMORY, touch_mib=16, busy=True)
    child = spawn_migrate(
        rig, db, "--bandwidth", "32", env={"MIGRATOR_FAILPOINTS": "perform.recorded=crash"}
    )
    try:
        wait_for("four passes", lambda: passes(rig) >= 4)
        assert rig.src.migration_info("vm1")["status"] == "active", "converged at 300 ms"
        assert rig.src.set_downtime("vm1", 2000)
    finally:
        done = SERVER.wait(child, CLI_TIMEOUT)
    assert done.returncode == 137, done.stderr
    m = only(db)
    assert m.state is State.PERFORMED
    assert rig.src.migration_info("vm1")["status"] == "completed"
    assert rig.region(rig.src, "vm1") == rig.region(rig.dst, "vm1")
    recover_and_check(rig, db, "CONFIRMED")
    assert rig.dst.config("vm1")["busy"]


def test_perform_past_its_step_timeout_cancels_the_transfer_and_rolls_back(
    rig: QemuRig, db: str
) -> None:
    rig.src.define("vm1", memory_mib=MEMORY, touch_mib=TOUCH)
    src_pid = rig.src.pid_of("vm1")
    code, outcome = cli(
        db, "migrate", "vm1", "--src", rig.src.uri, "--dst", rig.dst.uri, "--live",
        "--bandwidth", str(SLOW_CAP), "--timeout", "1", "--json",
    )  # fmt: skip
    assert code == 1
    m = view(db, outcome["id"])
    assert m["state"] == "ROLLED_BACK"
    # The engine's timeout, or the hook's own check of the same deadline, whichever first.
    assert m["reason"].startswith("perform failed")
    assert "within 1 s" in m["reason"] or "passed its deadline" in m["reason"]
    wait_for("the source's transfer to end", lambda: rig.src.migration_info("vm1")["status"]
             in ("cancelled", "failed"))  # fmt: skip
    rig.check_one_copy(m)
    rig.check_journal(m)
    assert rig.src.pid_of("vm1") == src_pid
    assert_replays_consistently(db)


def test_an_offline_migration_under_a_new_name_pauses_the_source_and_lands_running(
    rig: QemuRig, db: str
) -> None:
    rig.src.define("vm1", memory_mib=MEMORY, touch_mib=TOUCH)
    before = rig.region(rig.src, "vm1")
    argv = ["migrate", "vm1", "--src", rig.src.uri, "--dst", rig.dst.uri, "--dname", "vm2"]
    child = SERVER.spawn([*argv, "--bandwidth", str(SLOW_CAP), "--json"], env=cli_env(db), cwd=ROOT)
    try:
        wait_for("the transfer", transferring(db))
        assert rig.state(rig.src, "vm1") == "paused"  # without --live the guest is stopped
        assert rig.state(rig.dst, "vm2") == "incoming"
    finally:
        done = SERVER.wait(child, CLI_TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert rig.states("vm1") == ("absent", "absent")
    assert rig.state(rig.dst, "vm2") == "running"
    assert rig.region(rig.dst, "vm2") == before
    assert_replays_consistently(db)


def test_a_destination_killed_after_the_transfer_is_caught_by_finish_and_rolled_back(
    rig: QemuRig, db: str
) -> None:
    """The source says completed and sits in postmigrate; the destination dies before
    Finish. Finish must see that (not trust the source) and the source is continued."""
    rig.src.define("vm1", memory_mib=MEMORY, touch_mib=TOUCH)
    src_pid = rig.src.pid_of("vm1")
    code, _ = cli(db, *migrate_argv(rig), env={"MIGRATOR_FAILPOINTS": "perform.recorded=crash"})
    assert code == 137
    assert rig.src.probe("vm1").detail["qemu_status"] == "postmigrate"
    dst_pid = rig.dst.pid_of("vm1")
    assert dst_pid is not None
    os.kill(dst_pid, signal.SIGKILL)
    m = recover_and_check(rig, db, "ROLLED_BACK")
    assert m["reason"] == "finish: the destination did not start the domain"
    assert rig.src.pid_of("vm1") == src_pid


def test_a_destination_that_fails_to_load_what_the_source_calls_completed_rolls_back(
    rig: QemuRig, db: str, qemu_binary: str, tmp_path: Path
) -> None:
    """QEMU's pitfall: a source with more CPUs than its destination reports the migration
    completed while the destination dies loading it. Finish checks the destination itself."""
    wrapper = tmp_path / "qemu-src-smp2"
    wrapper.write_text(
        "#!/bin/bash\n"
        'args=("$@")\n'
        'if [[ " $* " != *" -incoming "* ]]; then\n'
        '  for i in "${!args[@]}"; do [[ ${args[$i]} == -smp ]] && args[$((i+1))]=2; done\n'
        "fi\n"
        f'exec {qemu_binary} "${{args[@]}}"\n'
    )
    wrapper.chmod(0o755)
    env = {"MIGRATOR_QEMU": str(wrapper)}
    os.environ.update(env)  # define runs here, in-process
    try:
        rig.src.define("vm1", memory_mib=MEMORY, touch_mib=TOUCH)
    finally:
        del os.environ["MIGRATOR_QEMU"]
    src_pid = rig.src.pid_of("vm1")
    code, outcome = cli(db, *migrate_argv(rig), "--json", env=env)
    assert code == 1, outcome
    m = view(db, outcome["id"])
    [performed] = [e for e in m["events"] if e["step"] == "perform" and e["kind"] == "ok"]
    assert performed["detail"]["status"] == "completed"  # the source believed it
    assert m["state"] == "ROLLED_BACK"
    assert m["reason"] == "finish: the destination did not start the domain"
    rig.check_one_copy(m)
    assert rig.src.pid_of("vm1") == src_pid
    assert_replays_consistently(db)


def hold_finish(rig: QemuRig, db: str, held: contextlib.ExitStack) -> Child:
    """Start a migration and hold its Finish: the test holds the destination's QMP session
    (QEMU serves one client at a time) from mid-transfer on, so Finish's call waits."""
    rig.src.define("vm1", memory_mib=MEMORY, touch_mib=TOUCH)
    child = spawn_migrate(rig, db, "--bandwidth", str(SLOW_CAP))
    wait_for("the transfer", transferring(db))
    held.enter_context(Monitor(rig.dst.rundir("vm1")))
    wait_for("Finish", lambda: only(db).state is State.FINISHING)
    return child


def recovery_action(m: dict[str, Any]) -> str:
    [claim] = [e for e in m["events"] if e["kind"] == "recovery"]
    return str(claim["detail"]["action"])


def test_sigkill_while_finishing_is_replayed_to_confirmed(rig: QemuRig, db: str) -> None:
    with contextlib.ExitStack() as held:
        child = hold_finish(rig, db, held)
        SERVER.kill(child)
        assert SERVER.wait(child, CLI_TIMEOUT).returncode == -signal.SIGKILL
    crashed = only(db)
    assert crashed.state is State.FINISHING
    # What recovery will find: the source stopped after a completed transfer, the
    # destination holding the state but not yet the domain.
    src = rig.src.probe("vm1")
    assert (src.state, src.detail["qemu_status"]) == (DomainState.PAUSED, "postmigrate")
    assert src.transfers == {crashed.id: "completed"}
    assert rig.dst.probe("vm1").state is DomainState.INCOMING
    m = recover_and_check(rig, db, "CONFIRMED")
    assert recovery_action(m) == "replay-finish"


def test_sigkill_while_confirming_is_replayed_to_confirmed(rig: QemuRig, db: str) -> None:
    src_pid = None
    with contextlib.ExitStack() as held_src:
        with contextlib.ExitStack() as held_dst:
            child = hold_finish(rig, db, held_dst)
            src_pid = rig.src.pid_of("vm1")
            held_src.enter_context(Monitor(rig.src.rundir("vm1")))  # Confirm's `quit` waits
        wait_for("Confirm", lambda: only(db).state is State.CONFIRMING)
        SERVER.kill(child)
        assert SERVER.wait(child, CLI_TIMEOUT).returncode == -signal.SIGKILL
    assert src_pid is not None and rig.src.pid_of("vm1") == src_pid  # never quit
    m = recover_and_check(rig, db, "CONFIRMED")
    assert recovery_action(m) == "replay-confirm"
