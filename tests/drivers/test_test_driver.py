"""The ``test:///DIR`` host: real files under tmp_path, no mocks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from migrator.drivers.api import (
    DomainState,
    FinishResult,
    MigrationParams,
    PerformResult,
    PrepareResult,
)
from migrator.drivers.registry import connect
from migrator.drivers.test import TestDriver
from migrator.errors import DomainExists, DomainNotFound, DriverError, InvalidURI
from migrator.flags import MigrateFlags
from migrator.records import Progress, StepContext
from migrator.states import Step

MID = "m1"
LIVE = MigrationParams(domain="vm1", flags=MigrateFlags.LIVE)
REPO = Path(__file__).resolve().parents[2]


def ctx(step: Step, **kwargs: Any) -> StepContext:
    return StepContext(migration_id=MID, step=step, **kwargs)


@pytest.fixture
def src(tmp_path: Path) -> TestDriver:
    host = TestDriver(f"test://{tmp_path}/src")
    host.define("vm1", memory_mib=1)
    return host


@pytest.fixture
def dst(tmp_path: Path) -> TestDriver:
    return TestDriver(f"test://{tmp_path}/dst")


class Flow:
    """One migration of vm1 driven by hand, step by step, each step fed the last cookie."""

    def __init__(self, src: TestDriver, dst: TestDriver, params: MigrationParams = LIVE):
        self.src, self.dst, self.params = src, dst, params
        self.cookie, self.description, self.uri = b"", "", ""

    def begin(self, **kw: Any) -> object:
        out = self.src.begin(ctx(Step.BEGIN, **kw), self.params)
        self.cookie, self.description = out.cookie, out.description
        return out

    def prepare(self, **kw: Any) -> PrepareResult:
        out = self.dst.prepare(ctx(Step.PREPARE, **kw), self.params, self.cookie, self.description)
        self.cookie, self.uri = out.cookie, out.uri
        return out

    def perform(self, **kw: Any) -> PerformResult:
        out = self.src.perform(ctx(Step.PERFORM, **kw), self.params, self.cookie, self.uri)
        self.cookie = out.cookie
        return out

    def finish(self, cancelled: bool = False, **kw: Any) -> FinishResult:
        out = self.dst.finish(ctx(Step.FINISH, **kw), self.params, self.cookie, cancelled)
        self.cookie = out.cookie
        return out

    def confirm(self, cancelled: bool = False, **kw: Any) -> object:
        return self.src.confirm(ctx(Step.CONFIRM, **kw), self.params, self.cookie, cancelled)

    def until(self, step: str, cancelled: bool = False) -> None:
        """Run every step before ``step`` (a Finish before Confirm shares its ``cancelled``)."""
        for name in ("begin", "prepare", "perform"):
            if name == step:
                return
            getattr(self, name)()
        if step == "confirm":
            self.finish(cancelled)

    def call(self, step: str, cancelled: bool = False) -> object:
        if step in ("finish", "confirm"):
            return getattr(self, step)(cancelled)
        return getattr(self, step)()


def by_name(host: TestDriver) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in host.domains()}


def snapshot(*hosts: TestDriver) -> list[Any]:
    """What a second call must not change: each host's domains and image files."""
    out: list[Any] = []
    for host in hosts:
        shards = sorted((host.dir / "domains").glob("*.json"))
        out.append([json.loads(p.read_text())["domains"] for p in shards])
        images = host.dir / "images"
        out.append(sorted(p.name for p in images.iterdir()) if images.exists() else [])
    return out


# -- URIs and the host helpers ---------------------------------------------------------------


@pytest.mark.parametrize("uri", ["test://tmp/x", "test:relative/x", "test:"])
def test_uri_must_name_an_absolute_path(uri: str) -> None:
    with pytest.raises(InvalidURI, match="must be absolute"):
        TestDriver(uri)


def test_query_string_is_ignored(tmp_path: Path) -> None:
    host = connect(f"test://{tmp_path}/h?protocols=1,2")
    assert isinstance(host, TestDriver)
    assert host.dir == tmp_path / "h"


def test_missing_directory_reads_as_an_empty_host(tmp_path: Path) -> None:
    host = TestDriver(f"test://{tmp_path}/nowhere")
    assert host.domains() == []
    assert host.probe("vm1").state is DomainState.ABSENT
    assert not (tmp_path / "nowhere").exists()


def test_host_id_is_stable_across_instances(tmp_path: Path) -> None:
    uri = f"test://{tmp_path}/h"
    assert TestDriver(uri).host_id == TestDriver(uri).host_id


def test_define_lists_the_domain_with_its_lease(src: TestDriver) -> None:
    [vm] = src.domains()
    assert vm["name"] == "vm1"
    assert (vm["state"], vm["memory_mib"], vm["lease_held"], vm["job"]) == (
        "running",
        1,
        True,
        None,
    )


def test_define_paused(src: TestDriver) -> None:
    src.define("vm2", memory_mib=1, paused=True)
    assert by_name(src)["vm2"]["state"] == "paused"


def test_define_twice_raises_domain_exists(src: TestDriver) -> None:
    with pytest.raises(DomainExists):
        src.define("vm1", memory_mib=1)
    assert len(src.domains()) == 1


def test_images_are_deterministic_per_name_and_differ_between_names(
    src: TestDriver, dst: TestDriver
) -> None:
    dst.define("vm1", memory_mib=1)
    dst.define("vm2", memory_mib=1)
    assert by_name(src)["vm1"]["checksum"] == by_name(dst)["vm1"]["checksum"]
    assert by_name(dst)["vm1"]["checksum"] != by_name(dst)["vm2"]["checksum"]


# -- the protocol -----------------------------------------------------------------------------


def test_full_sequence_moves_the_domain(src: TestDriver, dst: TestDriver) -> None:
    checksum = by_name(src)["vm1"]["checksum"]
    flow = Flow(src, dst)
    flow.until("confirm")
    flow.confirm()
    assert src.domains() == []
    [vm] = dst.domains()
    assert (vm["state"], vm["checksum"], vm["lease_held"], vm["job"]) == (
        "running",
        checksum,
        True,
        None,
    )
    assert list((src.dir / "images").iterdir()) == []


def test_begin_changes_nothing_visible_but_the_job(src: TestDriver, dst: TestDriver) -> None:
    Flow(src, dst).begin()
    [vm] = src.domains()
    assert (vm["state"], vm["lease_held"], vm["job"]) == ("running", True, MID)


def test_perform_pauses_the_source_and_releases_its_lease(src: TestDriver, dst: TestDriver) -> None:
    Flow(src, dst).until("finish")
    probe = src.probe("vm1")
    assert probe.state is DomainState.PAUSED
    assert probe.detail == {"lease_held": False, "job": MID, "outgoing": {MID: "completed"}}
    assert dst.probe("vm1").state is DomainState.INCOMING


def test_rollback_after_perform_resumes_the_source(src: TestDriver, dst: TestDriver) -> None:
    flow = Flow(src, dst)
    flow.until("finish")
    assert flow.finish(cancelled=True).running is False
    flow.confirm(cancelled=True)
    assert src.probe("vm1").state is DomainState.RUNNING
    assert src.probe("vm1").detail == {"lease_held": True, "job": None, "outgoing": {}}
    assert dst.domains() == []
    assert list((dst.dir / "images").iterdir()) == []


def test_paused_flag_leaves_the_destination_paused(src: TestDriver, dst: TestDriver) -> None:
    flow = Flow(src, dst, MigrationParams("vm1", MigrateFlags.LIVE | MigrateFlags.PAUSED))
    flow.until("finish")
    assert flow.finish().running is True
    assert dst.probe("vm1").state is DomainState.PAUSED


def test_source_paused_at_begin_is_restored_paused(src: TestDriver, dst: TestDriver) -> None:
    src.define("vm2", memory_mib=1, paused=True)
    flow = Flow(src, dst, MigrationParams("vm2", MigrateFlags.LIVE))
    flow.until("confirm", cancelled=True)
    flow.confirm(cancelled=True)
    assert src.probe("vm2").state is DomainState.PAUSED
    assert src.probe("vm2").detail["lease_held"] is True


def test_dname_renames_on_the_destination(src: TestDriver, dst: TestDriver) -> None:
    flow = Flow(src, dst, MigrationParams("vm1", MigrateFlags.LIVE, dname="vm9"))
    flow.until("confirm")
    flow.confirm()
    assert [d["name"] for d in dst.domains()] == ["vm9"]


def test_begin_of_a_missing_domain_raises_domain_not_found(
    src: TestDriver, dst: TestDriver
) -> None:
    with pytest.raises(DomainNotFound):
        Flow(src, dst, MigrationParams("nope")).begin()


def test_begin_refuses_a_domain_another_migration_has_sent(
    src: TestDriver, dst: TestDriver
) -> None:
    Flow(src, dst).until("finish")  # migration "m1" sent vm1 and paused it
    with pytest.raises(DriverError, match="being migrated by m1"):
        src.begin(StepContext(migration_id="other", step=Step.BEGIN), LIVE)


def test_prepare_refuses_an_existing_destination_domain(src: TestDriver, dst: TestDriver) -> None:
    dst.define("vm1", memory_mib=1)
    flow = Flow(src, dst)
    flow.begin()
    with pytest.raises(DomainExists):
        flow.prepare()


def test_finish_with_a_corrupt_image_reports_no_domain(src: TestDriver, dst: TestDriver) -> None:
    flow = Flow(src, dst)
    flow.until("finish")
    (dst.dir / "images" / f"incoming-{MID}.img").write_bytes(b"garbage")
    assert flow.finish().running is False
    assert dst.domains() == []


def test_cancelled_finish_after_a_successful_one_reports_running(
    src: TestDriver, dst: TestDriver
) -> None:
    flow = Flow(src, dst)
    flow.until("finish")
    flow.finish()
    assert flow.finish(cancelled=True).running is True
    assert dst.probe("vm1").state is DomainState.RUNNING


def test_confirm_never_kills_a_domain_this_migration_did_not_begin(src: TestDriver) -> None:
    with pytest.raises(DriverError, match="no job for migration"):
        src.confirm(ctx(Step.CONFIRM), LIVE, b"", False)
    assert src.probe("vm1").state is DomainState.RUNNING


def test_cancelled_confirm_without_begin_changes_nothing(src: TestDriver) -> None:
    before = snapshot(src)
    src.confirm(ctx(Step.CONFIRM), LIVE, b"", True)
    assert snapshot(src) == before


def test_cookies_and_description_are_json(src: TestDriver, dst: TestDriver) -> None:
    flow = Flow(src, dst)
    flow.begin()
    assert set(json.loads(flow.description)) == {"name", "memory_mib", "checksum"}
    assert set(json.loads(flow.cookie)) == {"host", "lease", "checksum"}
    assert json.loads(flow.prepare().cookie) == {"host": dst.host_id}
    assert json.loads(flow.perform().cookie) == {"host": src.host_id, "sent": 1024 * 1024}
    assert json.loads(flow.finish().cookie) == {"host": dst.host_id, "running": True}


# -- idempotency ------------------------------------------------------------------------------

CALLS = [
    ("begin", False),
    ("prepare", False),
    ("perform", False),
    ("finish", False),
    ("finish", True),
    ("confirm", False),
    ("confirm", True),
]


@pytest.mark.parametrize(("step", "cancelled"), CALLS)
def test_a_second_call_returns_the_same_and_changes_nothing(
    src: TestDriver, dst: TestDriver, step: str, cancelled: bool
) -> None:
    flow = Flow(src, dst)
    flow.until(step, cancelled)
    saved = (flow.cookie, flow.description, flow.uri)
    first = flow.call(step, cancelled)
    after_first = snapshot(src, dst)
    flow.cookie, flow.description, flow.uri = saved
    assert flow.call(step, cancelled) == first
    assert snapshot(src, dst) == after_first


# -- faults -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "mode", "expected"),
    [
        ("boot", "error", "unknown step 'boot'"),
        ("begin", "explode", "unknown fault mode 'explode'"),
        ("begin", "no-domain", "only to finish"),
    ],
)
def test_bad_faults_are_refused(src: TestDriver, step: str, mode: str, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        src.set_fault(step, mode)
    assert src.faults() == {}


def test_error_fault_raises_having_done_nothing(src: TestDriver, dst: TestDriver) -> None:
    src.set_fault("begin", "error", message="disk on fire")
    before = snapshot(src)
    with pytest.raises(DriverError, match="disk on fire"):
        Flow(src, dst).begin()
    assert snapshot(src) == before


def test_lost_reply_does_the_work_then_raises(src: TestDriver, dst: TestDriver) -> None:
    dst.set_fault("prepare", "lost-reply", count=1)
    flow = Flow(src, dst)
    flow.begin()
    with pytest.raises(DriverError, match="reply lost"):
        flow.prepare()
    after_lost = snapshot(dst)
    assert by_name(dst)["vm1"]["state"] == "incoming"
    assert flow.prepare().uri.endswith(f"?incoming={MID}")
    assert snapshot(dst) == after_lost


def test_no_domain_fault_drops_the_incoming_copy(src: TestDriver, dst: TestDriver) -> None:
    dst.set_fault("finish", "no-domain")
    flow = Flow(src, dst)
    flow.until("finish")
    assert flow.finish().running is False
    assert dst.domains() == []
    assert list((dst.dir / "images").iterdir()) == []


def test_hang_fault_raises_after_the_deadline(src: TestDriver, dst: TestDriver) -> None:
    src.set_fault("begin", "hang")
    before = snapshot(src)
    start = time.monotonic()
    with pytest.raises(DriverError, match="hung"):
        Flow(src, dst).begin(deadline=start + 0.05)
    assert time.monotonic() - start >= 1.0
    assert snapshot(src) == before


def test_slow_fault_delays_then_proceeds(src: TestDriver, dst: TestDriver) -> None:
    src.set_fault("begin", "slow", seconds=0.2)
    start = time.monotonic()
    Flow(src, dst).begin()
    assert time.monotonic() - start >= 0.2
    assert by_name(src)["vm1"]["job"] == MID


def test_counted_fault_clears_itself(src: TestDriver, dst: TestDriver) -> None:
    src.set_fault("begin", "error", count=2)
    for _ in range(2):
        with pytest.raises(DriverError, match="injected error in begin"):
            Flow(src, dst).begin()
    assert src.faults() == {}
    Flow(src, dst).begin()


def test_uncounted_fault_persists_until_cleared(src: TestDriver, dst: TestDriver) -> None:
    src.set_fault("begin", "error")
    for _ in range(2):
        with pytest.raises(DriverError):
            Flow(src, dst).begin()
    src.clear_faults()
    Flow(src, dst).begin()


def test_probe_fault_raises(src: TestDriver) -> None:
    src.set_fault("probe", "error")
    with pytest.raises(DriverError):
        src.probe("vm1")


# -- fences, bandwidth, abort -----------------------------------------------------------------


def test_a_lower_fence_is_refused(src: TestDriver, dst: TestDriver) -> None:
    flow = Flow(src, dst)
    flow.begin(fence=2)
    with pytest.raises(DriverError, match="stale fence 1"):
        flow.confirm(cancelled=True, fence=1)
    assert by_name(src)["vm1"]["job"] == MID
    flow.confirm(cancelled=True, fence=3)
    assert by_name(src)["vm1"]["job"] is None


def test_bandwidth_is_honoured_and_progress_reported(src: TestDriver, dst: TestDriver) -> None:
    src.define("big", memory_mib=2)
    samples: list[Progress] = []
    flow = Flow(src, dst, MigrationParams("big", MigrateFlags.LIVE, bandwidth=8))
    flow.until("perform")
    start = time.monotonic()
    stats = flow.perform(progress=samples.append).stats
    assert time.monotonic() - start >= 0.2
    assert stats["bytes"] == 2 * 1024 * 1024
    assert len(samples) >= 2
    assert samples[-1] == Progress(2 * 1024 * 1024, 2 * 1024 * 1024, 0, passes=1)


def test_abort_stops_perform_and_leaves_the_source_running(
    src: TestDriver, dst: TestDriver
) -> None:
    checks = iter(range(1000))
    flow = Flow(src, dst, MigrationParams("vm1", MigrateFlags.NONE))
    flow.until("perform")
    with pytest.raises(DriverError, match="aborted"):
        flow.perform(aborted=lambda: next(checks) >= 2)
    assert src.probe("vm1").state is DomainState.RUNNING
    assert src.probe("vm1").detail == {"lease_held": True, "job": MID, "outgoing": {}}
    assert [p.name for p in (dst.dir / "images").iterdir()] == [f"incoming-{MID}.img"]


def test_perform_past_its_deadline_takes_no_effect(src: TestDriver, dst: TestDriver) -> None:
    flow = Flow(src, dst, MigrationParams("vm1", MigrateFlags.LIVE, bandwidth=1))
    flow.until("perform")
    with pytest.raises(DriverError, match="deadline"):
        flow.perform(deadline=time.monotonic() + 0.1)
    assert src.probe("vm1").detail == {"lease_held": True, "job": MID, "outgoing": {}}
    assert [p.name for p in (dst.dir / "images").iterdir()] == [f"incoming-{MID}.img"]
    assert flow.finish().running is False


# -- two processes ----------------------------------------------------------------------------


def test_concurrent_writers_lose_nothing(src: TestDriver) -> None:
    code = (
        "import sys; from migrator.drivers.test import TestDriver\n"
        "h = TestDriver(sys.argv[1])\n"
        "for i in range(20): h.define(f'p{i}', memory_mib=1)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", code, src.uri], env=env)
    deadline = time.monotonic() + 10
    while "p0" not in by_name(src) and time.monotonic() < deadline:
        time.sleep(0.005)
    for i in range(20):
        src.define(f"q{i}", memory_mib=1)
        src.set_fault("begin", "slow", seconds=i)
    assert child.wait(timeout=10) == 0
    names = set(by_name(src))
    assert names == {"vm1"} | {f"p{i}" for i in range(20)} | {f"q{i}" for i in range(20)}
    assert src.faults()["begin"]["seconds"] == 19


def test_a_begin_whose_migration_failed_is_superseded_by_a_new_begin(tmp_path: Path) -> None:
    """A lost Begin reply leaves a job that never handed the domain over; it must not block."""
    src = TestDriver(f"test://{tmp_path / 'a'}")
    src.define("vm1")
    src.set_fault("begin", "lost-reply", count=1)
    params = MigrationParams(domain="vm1")
    with pytest.raises(DriverError):
        src.begin(StepContext(migration_id="m-old", step=Step.BEGIN), params)
    result = src.begin(StepContext(migration_id="m-new", step=Step.BEGIN), params)
    assert result.description
    assert src.domains()[0]["job"] == "m-new"
