"""A Prepare the engine stopped waiting for (or whose migration another coordinator took
over) while it started the incoming QEMU leaves no QEMU and no file behind on the
destination (docs/workers.md, "Fencing")."""

from __future__ import annotations

import itertools

import pytest

from migrator.drivers.api import MigrationParams
from migrator.errors import DriverError
from migrator.flags import MigrateFlags
from migrator.records import StepContext
from migrator.states import Step
from tests.qemu.rig import QemuRig, qemu_processes

LIVE = MigrationParams(domain="vm1", flags=MigrateFlags.LIVE)


def test_a_prepare_refused_after_it_started_its_qemu_stops_it(rig: QemuRig) -> None:
    rig.src.define("vm1", memory_mib=32, touch_mib=4)
    src_pid = rig.src.pid_of("vm1")
    begun = rig.src.begin(StepContext(migration_id="m1", step=Step.BEGIN, fence=1), LIVE)
    checks = itertools.count()
    # Admitted twice (the call, then the record of the incoming domain), refused when its
    # result is recorded: the QEMU it started meanwhile must not outlive it.
    ctx = StepContext(
        migration_id="m1", step=Step.PREPARE, fence=1, stopped=lambda: next(checks) >= 2
    )
    with pytest.raises(DriverError, match="abandoned"):
        rig.dst.prepare(ctx, LIVE, begun.cookie, begun.description)
    assert set(qemu_processes(rig.root)) == {src_pid}
    assert rig.state(rig.dst, "vm1") == "absent"
    assert not rig.dst.rundir("vm1").exists()
