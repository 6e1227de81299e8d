"""The qemu driver's hooks called directly: idempotent, fenced, and honest about QEMU."""

from __future__ import annotations

import uuid

import pytest

from migrator.drivers.api import DomainState, MigrationParams
from migrator.errors import DriverError
from migrator.flags import MigrateFlags
from migrator.records import StepContext
from migrator.states import Step
from tests.qemu.rig import QemuRig, qemu_processes

PARAMS = MigrationParams(domain="vm1", flags=MigrateFlags.LIVE)


def ctx(mid: str, step: Step, fence: int = 1) -> StepContext:
    return StepContext(migration_id=mid, step=step, fence=fence)


def transfer(rig: QemuRig, mid: str) -> None:
    """Begin, Prepare and Perform, each called twice: the repeat changes nothing."""
    begun = rig.src.begin(ctx(mid, Step.BEGIN), PARAMS)
    assert rig.src.begin(ctx(mid, Step.BEGIN), PARAMS) == begun
    prepared = rig.dst.prepare(ctx(mid, Step.PREPARE), PARAMS, begun.cookie, begun.description)
    dst_pid = rig.dst.pid_of("vm1")
    again = rig.dst.prepare(ctx(mid, Step.PREPARE), PARAMS, begun.cookie, begun.description)
    assert again == prepared and rig.dst.pid_of("vm1") == dst_pid
    performed = rig.src.perform(ctx(mid, Step.PERFORM), PARAMS, prepared.cookie, prepared.uri)
    assert performed.stats["status"] == "completed"
    again_p = rig.src.perform(ctx(mid, Step.PERFORM), PARAMS, prepared.cookie, prepared.uri)
    assert again_p == performed
    assert rig.src.probe("vm1").detail["qemu_status"] == "postmigrate"
    assert rig.src.probe("vm1").transfers == {mid: "completed"}


def test_every_hook_called_twice_does_its_work_once(rig: QemuRig) -> None:
    rig.src.define("vm1", memory_mib=32, touch_mib=8)
    mid = str(uuid.uuid4())
    transfer(rig, mid)
    finished = rig.dst.finish(ctx(mid, Step.FINISH), PARAMS, b"", cancelled=False)
    assert finished.running and rig.states("vm1") == ("paused", "running")
    assert rig.dst.finish(ctx(mid, Step.FINISH), PARAMS, b"", cancelled=False) == finished
    # Finish(cancelled=1) after the domain ran there says so instead of destroying it.
    assert rig.dst.finish(ctx(mid, Step.FINISH), PARAMS, b"", cancelled=True).running
    rig.src.confirm(ctx(mid, Step.CONFIRM), PARAMS, finished.cookie, cancelled=False)
    rig.src.confirm(ctx(mid, Step.CONFIRM), PARAMS, finished.cookie, cancelled=False)
    assert rig.states("vm1") == ("absent", "running")
    assert set(qemu_processes(rig.root)) == {rig.dst.pid_of("vm1")}


def test_rollback_after_a_completed_transfer_continues_the_source_from_postmigrate(
    rig: QemuRig,
) -> None:
    rig.src.define("vm1", memory_mib=32, touch_mib=8)
    src_pid = rig.src.pid_of("vm1")
    mid = str(uuid.uuid4())
    transfer(rig, mid)
    for _ in range(2):
        assert not rig.dst.finish(ctx(mid, Step.FINISH), PARAMS, b"", cancelled=True).running
        rig.src.confirm(ctx(mid, Step.CONFIRM), PARAMS, b"", cancelled=True)
    assert rig.states("vm1") == ("running", "absent")
    probe = rig.src.probe("vm1")
    assert (probe.state, probe.detail["qemu_status"], probe.transfers) == (
        DomainState.RUNNING, "running", {},
    )  # fmt: skip
    assert set(qemu_processes(rig.root)) == {src_pid}


def test_a_lower_fence_is_refused(rig: QemuRig) -> None:
    rig.src.define("vm1", memory_mib=32, touch_mib=4)
    mid = str(uuid.uuid4())
    rig.src.begin(ctx(mid, Step.BEGIN, fence=3), PARAMS)
    with pytest.raises(DriverError, match="stale fence 2"):
        rig.src.confirm(ctx(mid, Step.CONFIRM, fence=2), PARAMS, b"", cancelled=True)
    assert rig.state(rig.src, "vm1") == "running"


def test_confirm_never_kills_a_source_that_another_migration_began(rig: QemuRig) -> None:
    rig.src.define("vm1", memory_mib=32, touch_mib=4)
    rig.src.begin(ctx("m-one", Step.BEGIN), PARAMS)
    with pytest.raises(DriverError, match="no job for migration m-two"):
        rig.src.confirm(ctx("m-two", Step.CONFIRM), PARAMS, b"", cancelled=False)
    assert rig.state(rig.src, "vm1") == "running"
