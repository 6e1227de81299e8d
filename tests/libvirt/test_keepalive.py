"""Keepalive against real daemons in network namespaces (``netns.py``), seen with ``ss``.

The daemons say ``keepalive_interval = 1``, ``keepalive_count = 3``: a client that stops
answering is dropped within seconds. A coordinator that is SIGSTOPped (alive for TCP,
deaf for libvirt) and a client behind a cut link are both dropped by the daemon, and the
client behind the cut notices the silent daemon by its own keepalive and fails its call.
Bounds are generous deadlines, never measured durations.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from migrator.drivers.libvirt.errors import LibvirtUnreachable
from migrator.drivers.libvirt.procedures import Proc
from migrator.drivers.libvirt.rpc import Connection
from migrator.drivers.libvirt.uri import parse
from tests.conftest import ROOT
from tests.libvirt.daemons import Pair
from tests.libvirt.netns import NsHost, NsPair

DEADLINE = 60.0
PORT = 16509
COORDINATOR = """
import sys, time
from migrator.drivers.libvirt.driver import LibvirtDriver
driver = LibvirtDriver(sys.argv[1])
print(driver.on_control(lambda r: r.hostname()), flush=True)
time.sleep(3600)
"""


def eventually(what: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + DEADLINE
    while not what():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def from_root_ns(pair: NsPair, host: NsHost) -> list[str]:
    """The daemon's ESTABLISHED TCP connections that come from the root namespace."""
    return [line for line in host.established(PORT) if f"10.77.{pair.net}.254:" in line]


def test_the_daemon_drops_a_coordinator_that_stopped_answering(ns_pair: NsPair) -> None:
    """SIGSTOP leaves the TCP connection up; only libvirt's keepalive can tell it is dead."""
    uri = f"qemu+tcp://{ns_pair.a.addr}/system"
    proc = subprocess.Popen(
        [sys.executable, "-c", COORDINATOR, uri], stdout=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "lv-a"
        assert len(from_root_ns(ns_pair, ns_pair.a)) == 1
        proc.send_signal(signal.SIGSTOP)
        assert eventually(lambda: not from_root_ns(ns_pair, ns_pair.a)), (
            "the daemon kept the connection of a stopped coordinator"
        )
    finally:
        proc.kill()
        proc.wait()


def test_behind_a_cut_the_client_fails_its_call_and_the_daemon_drops_it(
    ns_pair: NsPair,
) -> None:
    uri = f"qemu+tcp://{ns_pair.b.addr}/system?keepalive_interval=0.5&keepalive_count=4"
    conn = Connection.open(parse(uri), host=uri, call_timeout=None)
    assert len(from_root_ns(ns_pair, ns_pair.b)) == 1
    errors: list[BaseException] = []

    def call() -> None:
        try:
            conn.call(Proc.CONNECT_GET_VERSION)
        except BaseException as exc:  # noqa: BLE001 -- handed to the test thread
            errors.append(exc)

    ns_pair.cut(ns_pair.b)
    try:
        caller = threading.Thread(target=call)
        caller.start()
        caller.join(DEADLINE)
        assert not caller.is_alive(), "the call still waits on a daemon behind a cut"
        assert eventually(lambda: not from_root_ns(ns_pair, ns_pair.b)), (
            "the daemon kept the connection of a client behind a cut"
        )
    finally:
        ns_pair.cut(ns_pair.b, up=True)
        conn.abandon()
    [error] = errors
    assert isinstance(error, LibvirtUnreachable)
    assert f"libvirt daemon {uri}: no answer to keepalive for 2 s" in str(error)


def test_a_stopped_ssh_coordinator_is_dropped_too(ns_pair: NsPair) -> None:
    """Over ssh the daemon's peer is virt-ssh-helper: the coordinator's silence still
    reaches it through the tunnel, and the daemon closes, which ends the ssh session."""
    uri = ns_pair.ssh_uri(ns_pair.a)
    proc = subprocess.Popen(
        [sys.executable, "-c", COORDINATOR, uri], stdout=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "lv-a"
        ssh = [line for line in ns_pair.a.established(22) if f"{ns_pair.net}.254:" in line]
        assert len(ssh) == 1
        proc.send_signal(signal.SIGSTOP)  # ssh, in a session of its own, runs on
        assert eventually(
            lambda: not [x for x in ns_pair.a.established(22) if f"{ns_pair.net}.254:" in x]
        ), "the daemon kept a stopped coordinator's ssh session"
    finally:
        proc.kill()
        proc.wait()


def test_a_real_daemon_answers_our_pings_so_an_idle_connection_lives_on(
    libvirt_pair: Pair,
) -> None:
    """Idle for many times interval x count: only the daemon's PONGs keep it alive."""
    uri = f"{libvirt_pair.src.uri}&keepalive_interval=0.2&keepalive_count=2"
    conn = Connection.open(parse(uri), host=uri)
    try:
        time.sleep(20 * 0.2 * 2)
        assert not conn.broken
        assert conn.call(Proc.CONNECT_GET_VERSION)
    finally:
        conn.close()
