"""The test driver's fencing to the last byte: a Perform that goes on after another
coordinator took its migration over, or after its own coordinator stopped waiting for it,
leaves nothing on the destination (docs/workers.md, "Fencing")."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from migrator.drivers.api import DomainState, MigrationParams
from migrator.drivers.test import TestDriver
from migrator.errors import DriverError
from migrator.flags import MigrateFlags
from migrator.records import Progress, StepContext
from migrator.states import Step

MID = "m1"
SLOW = MigrationParams(domain="vm1", flags=MigrateFlags.LIVE, bandwidth=4)  # 4 MiB: 1 s


def ctx(step: Step, **kwargs: Any) -> StepContext:
    return StepContext(migration_id=MID, step=step, **kwargs)


@pytest.fixture
def hosts(tmp_path: Path) -> tuple[TestDriver, TestDriver]:
    src = TestDriver(f"test://{tmp_path}/src")
    src.define("vm1", memory_mib=4)
    return src, TestDriver(f"test://{tmp_path}/dst")


def prepared(src: TestDriver, dst: TestDriver) -> tuple[bytes, str]:
    """Begin and Prepare at fence 1: the cookie and URI Perform takes."""
    begun = src.begin(ctx(Step.BEGIN, fence=1), SLOW)
    out = dst.prepare(ctx(Step.PREPARE, fence=1), SLOW, begun.cookie, begun.description)
    return out.cookie, out.uri


def images(host: TestDriver) -> list[str]:
    """Every file under the host's images/, temporary ones included."""
    folder = host.dir / "images"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def perform_in_background(
    src: TestDriver, cookie: bytes, uri: str, **kwargs: Any
) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            src.perform(ctx(Step.PERFORM, fence=1, **kwargs), SLOW, cookie, uri)
        except BaseException as exc:  # noqa: BLE001 -- handed to the test
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


def wait_for_partial(dst: TestDriver) -> None:
    deadline = time.monotonic() + 10
    while not any(n.endswith(".tmp") for n in images(dst)):
        assert time.monotonic() < deadline, "the copy never started"
        time.sleep(0.01)


def test_a_copy_that_goes_on_after_a_takeover_never_lands(
    hosts: tuple[TestDriver, TestDriver],
) -> None:
    """The old owner's copy is mid-way when the new owner cancels (fence 2): when the copy
    ends its image must not appear on the destination, partial or whole."""
    src, dst = hosts
    cookie, uri = prepared(src, dst)
    thread, errors = perform_in_background(src, cookie, uri)
    wait_for_partial(dst)
    dst.finish(ctx(Step.FINISH, fence=2), SLOW, b"", cancelled=True)
    src.confirm(ctx(Step.CONFIRM, fence=2), SLOW, b"", cancelled=True)
    thread.join(timeout=30)
    assert images(dst) == []
    assert [type(e) for e in errors] == [DriverError]
    assert src.probe("vm1").state is DomainState.RUNNING
    assert src.probe("vm1").detail == {"lease_held": True, "job": None, "outgoing": {}}


def test_a_copy_started_after_a_cancel_creates_nothing(
    hosts: tuple[TestDriver, TestDriver],
) -> None:
    """A Perform admitted by the source before the cancel reached it, but starting its copy
    after the destination cancelled, is refused at the destination before any file."""
    src, dst = hosts
    cookie, uri = prepared(src, dst)
    src.set_fault("perform", "slow", seconds=0.5)
    thread, errors = perform_in_background(src, cookie, uri)
    time.sleep(0.1)  # admitted, sleeping in its fault
    dst.finish(ctx(Step.FINISH, fence=2), SLOW, b"", cancelled=True)
    thread.join(timeout=30)
    assert [type(e) for e in errors] == [DriverError]
    assert images(dst) == []


def test_a_stopped_call_stops_copying_and_leaves_no_partial(
    hosts: tuple[TestDriver, TestDriver],
) -> None:
    """``ctx.stopped()`` (the engine abandoned the call) ends the copy; nothing lands."""
    src, dst = hosts
    cookie, uri = prepared(src, dst)
    stop = threading.Event()
    thread, errors = perform_in_background(src, cookie, uri, stopped=stop.is_set)
    wait_for_partial(dst)
    stop.set()
    thread.join(timeout=30)
    assert "abandoned" in str(errors[0])
    assert images(dst) == [f"incoming-{MID}.img"]  # Prepare's, empty, until the cancel
    assert (dst.dir / "images" / f"incoming-{MID}.img").stat().st_size == 0
    assert src.probe("vm1").detail == {"lease_held": True, "job": MID, "outgoing": {}}


def test_a_stopped_call_is_refused_by_every_host_write(
    hosts: tuple[TestDriver, TestDriver],
) -> None:
    src, _dst = hosts
    with pytest.raises(DriverError, match="abandoned"):
        src.begin(ctx(Step.BEGIN, fence=1, stopped=lambda: True), SLOW)
    assert src.probe("vm1").detail == {"lease_held": True, "job": None, "outgoing": {}}


def test_a_progress_refusal_stops_the_copy(hosts: tuple[TestDriver, TestDriver]) -> None:
    """The journal refusing a progress sample (``FenceLost``) ends Perform, nothing landed."""
    src, dst = hosts
    cookie, uri = prepared(src, dst)

    class Refused(Exception):
        pass

    def refuse(progress: Progress) -> None:
        raise Refused

    with pytest.raises(Refused):
        src.perform(ctx(Step.PERFORM, fence=1, progress=refuse), SLOW, cookie, uri)
    assert images(dst) == [f"incoming-{MID}.img"]


def test_a_cancel_removes_the_partial_copy_of_a_killed_perform(
    hosts: tuple[TestDriver, TestDriver],
) -> None:
    """A Perform killed mid-copy leaves its temporary file; Finish(cancelled) removes it."""
    src, dst = hosts
    prepared(src, dst)
    for name in (f".incoming-{MID}.img.0a1b2c3d.tmp", f".incoming-{MID}.img.0a1b2c3d.tunnel"):
        (dst.dir / "images" / name).write_bytes(b"x" * 1000)
    dst.finish(ctx(Step.FINISH, fence=2), SLOW, b"", cancelled=True)
    assert images(dst) == []
