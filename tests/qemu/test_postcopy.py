"""Post-copy between real QEMU processes, with a guest that never converges.

The guest is the project's own busy kernel (``tests/busyguest.py``), assembled and linked
with binutils at test time: it rewrites a pass counter into every page of 16 MiB for ever.
With the bandwidth capped, pre-copy cannot converge (the step's timeout gives up and rolls
back, the source running on); switched to post-copy (``--flag postcopy``, the
``perform.underway=postcopy`` failpoint), the migration completes, and on the destination
the counter pattern is whole and keeps advancing from where the source left it. Every
post-copy point of the crash matrix is then a coordinator killed there and ``recover``:
exactly one QEMU runs the guest, on the destination, its memory intact.
"""

from __future__ import annotations

import json
import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrator.drivers.qmp import Monitor
from migrator.drivers.qmphost import QmpDriver
from migrator.drivers.qmphost.postcopy import userfaultfd_usable
from tests import busyguest
from tests.qemu.conftest import REQUIRE_QEMU
from tests.qemu.rig import QemuRig
from tests.qemu.test_crash import cli, only, view

START, END, PAGE = busyguest.COUNTER, 0x1200000, busyguest.PAGE
MEMORY = 32
CAP = "8"  # MiB/s: a pass of 16 MiB takes 2 s while the guest rewrites it hundreds of times
SWITCH = "perform.underway=postcopy"
OUT_VAR = "MIGRATOR_POSTCOPY_QMP_OUT"
RESULTS: list[dict[str, Any]] = []


@pytest.fixture(scope="module", autouse=True)
def _write_results() -> Iterator[None]:
    yield
    out = os.environ.get(OUT_VAR)
    if out:
        Path(out).write_text(json.dumps(RESULTS, indent=1) + "\n")


@pytest.fixture(scope="session")
def busy_kernel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The busy guest rewriting ``[START, END)``, built with binutils (``as``, ``ld``)."""
    return busyguest.build(tmp_path_factory.mktemp("busyguest"), required=REQUIRE_QEMU, end=END)


@pytest.fixture
def db(tmp_path: Path) -> str:
    from tests.crash.harness import sqlite_url

    if not userfaultfd_usable():
        pytest.skip("userfaultfd is not usable by this user: no post-copy")
    return sqlite_url(tmp_path / "journal")


def counter(host: QmpDriver, name: str = "vm1") -> int:
    value: int = struct.unpack("<I", host.read_memory(name, START, 4))[0]
    return value


def advancing(host: QmpDriver) -> tuple[int, int]:
    first = counter(host)
    time.sleep(0.3)
    return first, counter(host)


def check_pattern(host: QmpDriver, name: str = "vm1") -> int:
    """Stop the guest, check every page holds the current pass (ahead of the sweep) or
    the one before it (behind), and the rest of each page is zero; resume it. The pass."""
    with Monitor(host.rundir(name)) as mon:
        mon.run("stop")
    try:
        data = host.read_memory(name, START, END - START)
    finally:
        with Monitor(host.rundir(name)) as mon:
            mon.run("cont")
    words = [struct.unpack_from("<I", data, off)[0] for off in range(0, len(data), PAGE)]
    top = words[0]
    assert all(w in (top, top - 1) for w in words), "a page lost its pass counter"
    assert words == sorted(words, reverse=True), "the sweep's order is broken"
    zeros = bytes(PAGE - 4)
    assert all(data[off + 4 : off + PAGE] == zeros for off in range(0, len(data), PAGE))
    return top


def define_busy(rig: QemuRig, kernel: Path) -> int:
    rig.src.define("vm1", memory_mib=MEMORY, kernel=str(kernel))
    time.sleep(0.2)
    first, then = advancing(rig.src)
    assert then > first, "the busy guest does not run"
    return then


def migrate(rig: QemuRig, db: str, *extra: str, env: dict[str, str] | None = None) -> int:
    argv = ["migrate", "vm1", "--src", rig.src.uri, "--dst", rig.dst.uri, "--live", "--json"]
    code, _ = cli(db, *argv, "--bandwidth", CAP, *extra, env=env)
    return int(code)


def killed_after_the_switch_then_cut(rig: QemuRig, db: str, *extra: str) -> None:
    """The coordinator killed right after the switch, then the source's stream cut
    (``migrate-pause``); returns once both QEMUs are ``postcopy-paused``."""
    env = {"MIGRATOR_FAILPOINTS": f"{SWITCH},postcopy.recorded=crash"}
    assert migrate(rig, db, *extra, "--flag", "postcopy", env=env) == 137
    with Monitor(rig.src.rundir("vm1")) as mon:
        mon.run("migrate-pause")
    deadline = time.monotonic() + 10
    while {
        rig.dst.migration_info("vm1").get("status"),
        rig.src.migration_info("vm1").get("status"),
    } != {"postcopy-paused"}:  # both sides see the cut, each in its own time
        assert time.monotonic() < deadline, rig.src.migration_info("vm1")
        time.sleep(0.05)


def check_landed(rig: QemuRig, m: dict[str, Any], src_pass: int) -> None:
    assert m["state"] == "CONFIRMED", (m["state"], m["reason"])
    rig.check_one_copy(m)
    rig.check_journal(m)
    assert not [e for e in m["events"] if e["cancelled"]], "a step went back after the switch"
    top = check_pattern(rig.dst)
    assert top >= src_pass, "the destination's counter is behind the source's"
    first, then = advancing(rig.dst)
    assert then > first >= top, "the guest does not run on the destination"


def test_pre_copy_never_converges_and_post_copy_completes(
    rig: QemuRig, db: str, busy_kernel: Path
) -> None:
    src_pass = define_busy(rig, busy_kernel)
    code = migrate(rig, db, "--timeout", "4")
    assert code == 1
    m = view(db, only(db).id)
    assert m["state"] == "ROLLED_BACK", m["reason"]
    assert m["reason"] == "perform failed: perform did not return within 4 s"
    assert rig.states("vm1") == ("running", "absent")
    first, then = advancing(rig.src)
    assert then > first >= src_pass, "the source runs on after the rollback"

    code = migrate(rig, db, "--flag", "postcopy", env={"MIGRATOR_FAILPOINTS": SWITCH})
    assert code == 0
    [confirmed] = [m for m in _all(db) if m.state.value == "CONFIRMED"]
    with_postcopy = view(db, confirmed.id)
    states = [e["state"] for e in with_postcopy["events"]]
    assert "POSTCOPY_ACTIVE" in states, states
    check_landed(rig, with_postcopy, first)


def _all(db: str) -> list[Any]:
    from migrator.journal.store import Journal

    with Journal.open(db) as journal:
        return journal.list()


@pytest.mark.parametrize(
    "point",
    [
        "postcopy.intent",
        "postcopy.called",
        "postcopy.recorded",
        "postcopy.underway",
        "perform.called",
        "perform.recorded",
        "finish.intent",
        "finish.called",
        "finish.recorded",
        "confirm.intent",
        "confirm.called",
    ],
)
def test_a_coordinator_killed_in_post_copy_is_recovered_forward(
    rig: QemuRig, db: str, busy_kernel: Path, point: str
) -> None:
    src_pass = define_busy(rig, busy_kernel)
    env = {"MIGRATOR_FAILPOINTS": f"{SWITCH},{point}=crash"}
    assert migrate(rig, db, "--flag", "postcopy", env=env) == 137
    crashed = only(db)
    code, rows = cli(db, "recover", "--json")
    assert code == 0, rows
    m = view(db, crashed.id)
    check_landed(rig, m, src_pass)
    assert cli(db, "recover", "--json") == (0, [])
    RESULTS.append(
        {"point": point, "backend": "qmp", "crashed": str(crashed.state),
         "action": rows[0]["action_code"], "plan": rows[0]["action"], "end": m["state"]}
    )  # fmt: skip


def test_a_paused_post_copy_is_resumed_by_recover(rig: QemuRig, db: str, busy_kernel: Path) -> None:
    """Killed right after the switch, then the source's stream is cut (``migrate-pause``):
    both QEMUs pause; ``recover`` resumes it (``migrate-recover`` on the destination,
    ``migrate`` with ``resume`` on the source) to CONFIRMED."""
    src_pass = define_busy(rig, busy_kernel)
    killed_after_the_switch_then_cut(rig, db)
    code, rows = cli(db, "recover", "--json")
    assert code == 0, rows
    m = view(db, only(db).id)
    check_landed(rig, m, src_pass)
    resumed = [e for e in m["events"] if e["step"] == "postcopy_resume" and e["kind"] == "ok"]
    assert resumed, "no resumption journaled"


def test_a_post_copy_paused_under_the_driving_process_is_resumed_by_it(
    rig: QemuRig, db: str, busy_kernel: Path
) -> None:
    """The stream is cut (``migrate-pause`` on the source) while the coordinator drives
    post-copy: both QEMUs pause, and the same process resumes it to CONFIRMED, no
    ``recover``, no operator."""
    from tests.crash.forkserver import SERVER
    from tests.crash.harness import CLI_TIMEOUT, ROOT, cli_env

    src_pass = define_busy(rig, busy_kernel)
    argv = ["migrate", "vm1", "--src", rig.src.uri, "--dst", rig.dst.uri, "--live", "--json"]
    child = SERVER.spawn(
        [*argv, "--bandwidth", "4", "--flag", "postcopy"],
        env=cli_env(db, {"MIGRATOR_FAILPOINTS": SWITCH}),
        cwd=ROOT,
    )
    deadline = time.monotonic() + 20
    while not (_all(db) and _all(db)[0].state.value == "POSTCOPY_ACTIVE"):
        assert time.monotonic() < deadline, "never switched"
        time.sleep(0.02)
    with Monitor(rig.src.rundir("vm1")) as mon:
        mon.run("migrate-pause")
    done = SERVER.wait(child, CLI_TIMEOUT)
    assert done.returncode == 0, done.stderr
    m = view(db, only(db).id)
    check_landed(rig, m, src_pass)
    kinds = [(e["step"], e["kind"], e["state"]) for e in m["events"]]
    assert ("perform", "error", "POSTCOPY_PAUSED") in kinds, kinds
    assert ("postcopy_resume", "ok", "PERFORMED") in kinds, kinds
    assert {e["coordinator"] for e in m["events"]} == {m["owner"]}, "one process did it all"


def test_qmp_host_define_boots_a_kernel_of_one_s_own(
    rig: QemuRig, busy_kernel: Path, tmp_path: Path
) -> None:
    from tests.conftest import run_cli

    image = tmp_path / "busy.elf"
    image.write_bytes(busy_kernel.read_bytes())
    proc = run_cli(
        "qmp-host", "define", rig.src.uri, "vm1", "--memory", "32", "--kernel", str(image)
    )
    assert proc.returncode == 0, proc.stderr
    assert "own kernel" in proc.stdout
    time.sleep(0.2)
    first, then = advancing(rig.src)
    assert then > first, "the kernel does not run"
    missing = str(tmp_path / "missing.elf")
    proc = run_cli("qmp-host", "define", rig.src.uri, "vm2", "--kernel", missing)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "migrator: error: cannot read the kernel: No such file or directory"
    ]
    assert rig.state(rig.src, "vm2") == "absent"


@pytest.mark.parametrize("kill", range(6), ids=lambda k: f"kill-{k}")
def test_sigkill_at_a_random_instant_of_a_post_copy_migration(
    rig: QemuRig, db: str, busy_kernel: Path, kill: int
) -> None:
    """``migrate`` SIGKILLed after a seeded random delay, then ``recover``: one QEMU runs
    the guest; once the switch was journaled it ended CONFIRMED, its memory whole."""
    import random

    from migrator.engine.run import switched
    from migrator.journal.store import Journal
    from tests.crash.forkserver import SERVER
    from tests.crash.harness import CLI_TIMEOUT, ROOT, cli_env

    delay = random.Random(f"qmp-postcopy:{kill}").uniform(0.2, 4.0)
    src_pass = define_busy(rig, busy_kernel)
    argv = ["migrate", "vm1", "--src", rig.src.uri, "--dst", rig.dst.uri, "--live", "--json"]
    child = SERVER.spawn(
        [*argv, "--bandwidth", CAP, "--flag", "postcopy"],
        env=cli_env(db, {"MIGRATOR_FAILPOINTS": SWITCH}),
        cwd=ROOT,
    )
    try:
        time.sleep(delay)
    finally:
        SERVER.kill(child)
        SERVER.wait(child, CLI_TIMEOUT)
    if not _all(db):
        return  # killed before the journal had a row
    crashed = only(db)
    with Journal.open(db) as journal:
        was_switched = switched(journal.history(crashed.id))
    code, _ = cli(db, "recover", "--json")
    assert code == 0
    m = view(db, crashed.id)
    print(f"killed after {delay:.2f} s in {crashed.state}, switched: {was_switched}")
    if was_switched or m["state"] == "CONFIRMED":
        check_landed(rig, m, src_pass)
    else:
        rig.check_one_copy(m)
        assert m["state"] == "ROLLED_BACK", m["reason"]


def test_a_destination_qemu_killed_in_post_copy_ends_in_doubt_with_what_to_do(
    rig: QemuRig, db: str, busy_kernel: Path
) -> None:
    """The destination's QEMU dies mid post-copy: the guest's memory is split and a part is
    gone, nothing can be resumed: IN_DOUBT, the source's QEMU kept paused, the reason
    saying what to do; never a silent loss."""
    import os
    import signal

    define_busy(rig, busy_kernel)
    env = {"MIGRATOR_FAILPOINTS": f"{SWITCH},postcopy.recorded=crash"}
    assert migrate(rig, db, "--flag", "postcopy", env=env) == 137
    pid = rig.dst.pid_of("vm1")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    code, rows = cli(db, "recover", "--json")
    assert (code, rows[0]["result"]) == (3, "IN_DOUBT"), rows
    m = view(db, only(db).id)
    assert "cannot resume" in m["reason"] and "the incoming QEMU is gone" in m["reason"]
    assert "Restart the guest from its disks" in m["reason"]
    assert rig.state(rig.src, "vm1") == "paused"
    assert rig.src.pid_of("vm1") is not None, "the source's part is kept"
    assert cli(db, "recover", "--json") == (0, []), "IN_DOUBT waits for an operator"
