"""A Begin, a Confirm or a cancelling Finish admitted before its coordinator lost the
migration (the engine stopped waiting for it: its lease refused, or its timeout) acts on
no QEMU and records no outcome: the fence is checked again, under the host lock, in the
write that acts and records (docs/workers.md, "Fencing")."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from migrator.drivers.api import MigrationParams
from migrator.drivers.hoststate import memo_key
from migrator.drivers.qmp import Monitor
from migrator.drivers.qmphost import QmpDriver
from migrator.errors import DriverError
from migrator.flags import MigrateFlags
from migrator.records import StepContext
from migrator.states import Step
from tests.qemu.rig import QemuRig, qemu_processes

LIVE = MigrationParams(domain="vm1", flags=MigrateFlags.LIVE)


def lost_after_admission() -> Callable[[], bool]:
    """``ctx.stopped``: False when the call is admitted, True at every check after it."""
    checks = itertools.count()
    return lambda: next(checks) >= 1


def status(host: QmpDriver, name: str) -> str:
    with Monitor(host.rundir(name)) as mon:
        return str(mon.run("query-status")["status"])


def begun(rig: QemuRig) -> bytes:
    rig.src.define("vm1", memory_mib=32, touch_mib=4)
    return rig.src.begin(StepContext(migration_id="m1", step=Step.BEGIN, fence=1), LIVE).cookie


@pytest.mark.parametrize("cancelled", [False, True])
def test_a_confirm_that_lost_the_migration_after_admission_changes_nothing(
    rig: QemuRig, cancelled: bool
) -> None:
    begun(rig)
    with Monitor(rig.src.rundir("vm1")) as mon:
        mon.run("stop")  # as Perform leaves it: a cancelled Confirm would ``cont`` it
    pids = qemu_processes(rig.root)
    ctx = StepContext("m1", Step.CONFIRM, fence=1, stopped=lost_after_admission())
    with pytest.raises(DriverError, match="abandoned"):
        rig.src.confirm(ctx, LIVE, b"", cancelled)
    assert qemu_processes(rig.root) == pids
    assert status(rig.src, "vm1") == "paused"
    assert rig.src._read()["domains"]["vm1"]["job"] == "m1"
    assert memo_key("m1", Step.CONFIRM, cancelled) not in rig.src._read()["calls"]


def test_a_cancelling_finish_that_lost_the_migration_after_admission_changes_nothing(
    rig: QemuRig,
) -> None:
    cookie = begun(rig)
    description = rig.src._read()["calls"][memo_key("m1", Step.BEGIN)]["description"]
    rig.dst.prepare(StepContext("m1", Step.PREPARE, fence=1), LIVE, cookie, description)
    pids, incoming = qemu_processes(rig.root), rig.dst.pid_of("vm1")
    assert incoming in pids
    ctx = StepContext("m1", Step.FINISH, fence=1, stopped=lost_after_admission())
    with pytest.raises(DriverError, match="abandoned"):
        rig.dst.finish(ctx, LIVE, b"", cancelled=True)
    assert qemu_processes(rig.root) == pids  # the incoming QEMU: the new owner stops it
    assert rig.dst._read()["domains"]["vm1"]["job"] == "m1"
    assert memo_key("m1", Step.FINISH, True) not in rig.dst._read()["calls"]
    # the new owner's own cancel (a higher fence) then removes it
    rig.dst.finish(StepContext("m1", Step.FINISH, fence=2), LIVE, b"", cancelled=True)
    assert set(qemu_processes(rig.root)) == set(pids) - {incoming}
    assert rig.state(rig.dst, "vm1") == "absent"


def test_a_begin_that_lost_the_migration_after_admission_takes_no_job(rig: QemuRig) -> None:
    rig.src.define("vm1", memory_mib=32, touch_mib=4)
    ctx = StepContext("m1", Step.BEGIN, fence=1, stopped=lost_after_admission())
    with pytest.raises(DriverError, match="abandoned"):
        rig.src.begin(ctx, LIVE)
    assert rig.src._read()["domains"]["vm1"]["job"] is None
    assert memo_key("m1", Step.BEGIN) not in rig.src._read()["calls"]
