"""A daemon that misbehaves, scripted (``FakeHost``): silent calls, a stalled or truncated
job-statistics reply, a domain state no libvirt of today reports. The migration's timeout
bounds every call, the statistics never decide a step nor delay its reply or an abort, and
every error names the daemon it came from."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from migrator.drivers.api import MigrationParams
from migrator.drivers.libvirt.driver import LibvirtDriver
from migrator.drivers.libvirt.errors import LibvirtError
from migrator.drivers.libvirt.procedures import ErrorCode, Proc, Status
from migrator.drivers.libvirt.remote import Remote
from migrator.drivers.libvirt.rpc import Connection
from migrator.drivers.libvirt.uri import parse
from migrator.drivers.libvirt.watch import PerformWatch
from migrator.drivers.libvirt.xdr import DomainRef, Packer
from migrator.errors import DriverError
from migrator.flags import MigrateFlags
from migrator.journal.store import Journal
from migrator.records import StepContext
from migrator.states import Step
from tests.conftest import run_cli
from tests.drivers.libvirt.fake_daemon import (
    FakeHost,
    Frame,
    Handler,
    error_body,
    fail,
    frame,
    reply,
)

DOM = DomainRef("vm", bytes(range(16)), 7)
NOT_FOUND = fail(ErrorCode.NO_DOMAIN, 10, "Domain not found: no domain with matching name 'vm'")
SILENT: Handler = lambda call: []  # noqa: E731 -- a daemon that never answers this call
PARAMS = MigrationParams(domain="vm", flags=MigrateFlags.LIVE)


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[list[FakeHost]]:
    made: list[FakeHost] = []
    yield made
    for host in made:
        host.close()


def host(hosts: list[FakeHost], tmp_path: Path, **handlers: Handler) -> FakeHost:
    fake = FakeHost(tmp_path / f"sock{len(hosts)}", {Proc[k]: h for k, h in handlers.items()})
    hosts.append(fake)
    return fake


def source(hosts: list[FakeHost], tmp_path: Path, **handlers: Handler) -> FakeHost:
    """A source holding ``vm``, running, that begins and performs a migration at once."""
    script = {
        "DOMAIN_LOOKUP_BY_NAME": reply(Packer().domain(DOM).data()),
        "DOMAIN_GET_STATE": reply(Packer().sint(1).sint(1).data()),
        "DOMAIN_MIGRATE_BEGIN3_PARAMS": reply(Packer().opaque(b"c1").string("<domain/>").data()),
        "DOMAIN_MIGRATE_PERFORM3_PARAMS": reply(Packer().opaque(b"c3").data()),
        **handlers,
    }
    return host(hosts, tmp_path, **script)


def stalls(called: threading.Event, release: threading.Event) -> Handler:
    """A call that is noted, then not answered until ``release``."""

    def handle(call: Frame) -> list[bytes]:
        called.set()
        release.wait(60)
        return []

    return handle


# -- the migration's timeout bounds every call ------------------------------------------------


def test_a_daemon_silent_at_the_lookup_is_given_the_migrations_timeout_once(
    hosts: list[FakeHost], tmp_path: Path
) -> None:
    """Before: the probe's lookup waited 60 s, was retried on a new connection for 60 s
    more, then Begin's for the timeout: 126 s for ``--timeout 2``. Now the pre-flight probe
    is given the migration's timeout once, and the request fails with nothing journaled."""
    src = source(hosts, tmp_path, DOMAIN_LOOKUP_BY_NAME=SILENT)
    dst = host(hosts, tmp_path, DOMAIN_LOOKUP_BY_NAME=NOT_FOUND)
    db = f"sqlite:///{tmp_path / 'journal.db'}"
    proc = run_cli(
        "migrate", "vm", "--src", src.uri, "--dst", dst.uri, "--timeout", "2", "--json",
        db=db, timeout=40,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [
        f"migrator: error: pre-flight probe of {src.uri} did not return within 2 s"
    ]
    with Journal.open(db) as journal:
        assert journal.list() == []
    assert len(src.calls(Proc.DOMAIN_LOOKUP_BY_NAME)) == 1  # a call that timed out: not retried


def test_bound_calls_lowers_the_call_and_connect_timeouts_never_raises_them() -> None:
    driver = LibvirtDriver("qemu:///system", call_timeout=60.0, connect_timeout=10.0)
    driver.bound_calls(5.0)
    assert (driver.call_timeout, driver.connect_timeout) == (5.0, 5.0)
    driver.bound_calls(600.0)
    assert (driver.call_timeout, driver.connect_timeout) == (5.0, 5.0)


def test_a_steps_time_left_bounds_its_own_calls_not_later_ones_on_the_shared_connection(
    hosts: list[FakeHost], tmp_path: Path
) -> None:
    src = source(hosts, tmp_path)
    driver = LibvirtDriver(src.uri, call_timeout=30.0)
    try:
        assert driver.control(timeout=0.5).timeout == 0.5  # what a step near its end gets
        assert driver.control().conn.call_timeout == 30.0  # what a probe after it gets
    finally:
        driver.close()


# -- Perform's watch never delays the step's reply, nor an abort --------------------------------


def monitor_remote(monitor: FakeHost) -> Remote:
    """A connection to ``monitor`` as the watch opens one, with a 5 s call timeout."""
    return Remote(Connection.open(parse(monitor.uri), host="monitor", call_timeout=5.0))


def test_a_stalled_statistics_call_does_not_delay_perform3s_reply(
    hosts: list[FakeHost], tmp_path: Path
) -> None:
    called, release = threading.Event(), threading.Event()
    monitor = host(hosts, tmp_path, DOMAIN_GET_JOB_STATS=stalls(called, release))

    def perform(call: Frame) -> list[bytes]:
        called.wait(10)  # Perform3 answers while the statistics call hangs
        return [frame(call.proc, Packer().opaque(b"done").data(), serial=call.serial)]

    src = host(hosts, tmp_path, DOMAIN_MIGRATE_PERFORM3_PARAMS=perform)
    watch = PerformWatch(StepContext("m1", Step.PERFORM), DOM, lambda: monitor_remote(monitor))
    remote = Remote(Connection.open(parse(src.uri), host="src", call_timeout=5.0))
    try:
        assert remote.perform3(DOM, {}, b"", 1, timeout=3.0, tick=watch.tick) == b"done"
    finally:
        watch.close()
        release.set()
    assert called.is_set()


def test_an_abort_goes_out_while_a_statistics_call_hangs(
    hosts: list[FakeHost], tmp_path: Path
) -> None:
    called, release, aborted = threading.Event(), threading.Event(), threading.Event()

    def abort(call: Frame) -> list[bytes]:
        aborted.set()
        return [frame(call.proc, serial=call.serial)]

    def perform(call: Frame) -> list[bytes]:
        aborted.wait(20)
        body = error_body(78, 10, "operation aborted: migration out job: canceled by client")
        return [frame(call.proc, body, serial=call.serial, status=Status.ERROR)]

    monitor = host(
        hosts, tmp_path, DOMAIN_GET_JOB_STATS=stalls(called, release), DOMAIN_ABORT_JOB=abort
    )
    src = host(hosts, tmp_path, DOMAIN_MIGRATE_PERFORM3_PARAMS=perform)
    ctx = StepContext("m1", Step.PERFORM, aborted=called.is_set)  # the operator asks now
    watch = PerformWatch(ctx, DOM, lambda: monitor_remote(monitor))
    remote = Remote(Connection.open(parse(src.uri), host="src", call_timeout=5.0))
    try:
        with pytest.raises(LibvirtError, match="canceled by client"):
            remote.perform3(DOM, {}, b"", 1, timeout=4.0, tick=watch.tick)
    finally:
        watch.close()
        release.set()
    assert watch.gave_up == "aborted by an operator"
    assert len(monitor.calls(Proc.DOMAIN_ABORT_JOB)) == 1


def test_a_truncated_statistics_reply_after_perform3_is_no_outcome(
    hosts: list[FakeHost], tmp_path: Path
) -> None:
    truncated = Packer().sint(2).uint(3).data()  # three typed parameters announced, none sent
    src = source(hosts, tmp_path, DOMAIN_GET_JOB_STATS=reply(truncated))
    driver = LibvirtDriver(src.uri, call_timeout=5.0)
    try:
        driver.begin(StepContext("m1", Step.BEGIN), PARAMS)
        result = driver.perform(StepContext("m1", Step.PERFORM), PARAMS, b"c2", "tcp://x:1")
    finally:
        driver.close()
    assert result.cookie == b"c3"
    assert result.stats == {}


# -- errors that say what happened, and where ---------------------------------------------------


def test_a_domain_state_the_client_does_not_know_is_reported_as_such(
    hosts: list[FakeHost], tmp_path: Path
) -> None:
    src = source(hosts, tmp_path, DOMAIN_GET_STATE=reply(Packer().sint(9).sint(0).data()))
    driver = LibvirtDriver(src.uri, call_timeout=5.0)
    try:
        with pytest.raises(DriverError) as info:
            driver.probe("vm")
    finally:
        driver.close()
    text = str(info.value)
    assert "in state 9 (reason 0), which migrator does not know" in text
    assert src.uri in text and "not found" not in text


def test_a_destination_that_cannot_resolve_its_address_says_what_fixes_it(
    hosts: list[FakeHost], tmp_path: Path
) -> None:
    unresolved = "Unable to resolve address 'lv-dst' service '49152': Name or service not known"
    dst = host(hosts, tmp_path, DOMAIN_MIGRATE_PREPARE3_PARAMS=fail(38, 10, unresolved))
    driver = LibvirtDriver(dst.uri, call_timeout=5.0)
    try:
        with pytest.raises(LibvirtError) as info:
            driver.prepare(StepContext("m1", Step.PREPARE), PARAMS, b"c1", "<domain/>")
    finally:
        driver.close()
    assert unresolved in str(info.value)
    assert "?migrate_uri=tcp://ADDRESS" in str(info.value)
    assert info.value.code == 38
