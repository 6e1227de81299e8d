"""Keepalive against real daemons in network namespaces (``netns.py``), seen with ``ss``,
over ``qemu+tcp://``, ``qemu+tls://`` and ``qemu+ssh://``.

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
from tests.libvirt.netns import NsHost, NsPair

DEADLINE = 60.0
PORTS = {"tcp": 16509, "tls": 16514}
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


def clients(pair: NsPair, host: NsHost, transport: str) -> list[str]:
    """The connections of ``host``'s daemon to a client in the root namespace: over TCP and
    TLS, those of its port; over ssh, those of its UNIX socket (where ``sshd``'s session
    meets the daemon: the daemon's peer is the far end of the tunnel)."""
    if transport == "ssh":
        return [line for line in host.ss("-x").splitlines() if "/run/libvirt/libvirt-sock " in line]
    return [line for line in host.established(PORTS[transport]) if f"10.77.{pair.net}.254:" in line]


def test_the_daemon_drops_a_coordinator_that_stopped_answering(
    ns_pair: NsPair, transport: str
) -> None:
    """SIGSTOP leaves the TCP connection up; only libvirt's keepalive can tell it is dead.
    Over ssh the daemon's peer is the far end of the tunnel: the coordinator's silence still
    reaches it, and the daemon closes, which ends the ssh session."""
    uri = ns_pair.uri(ns_pair.a, transport)
    proc = subprocess.Popen(
        [sys.executable, "-c", COORDINATOR, uri], stdout=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "lv-a"
        assert len(clients(ns_pair, ns_pair.a, transport)) == 1
        proc.send_signal(signal.SIGSTOP)  # ssh, in a session of its own, runs on
        assert eventually(lambda: not clients(ns_pair, ns_pair.a, transport)), (
            "the daemon kept the connection of a stopped coordinator"
        )
    finally:
        proc.kill()
        proc.wait()


def test_behind_a_cut_the_client_fails_its_call_and_the_daemon_drops_it(
    ns_pair: NsPair, transport: str
) -> None:
    uri = ns_pair.uri(ns_pair.b, transport, keepalive_interval="0.5", keepalive_count="4")
    conn = Connection.open(parse(uri), host=uri, call_timeout=None)
    assert len(clients(ns_pair, ns_pair.b, transport)) == 1
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
        assert eventually(lambda: not clients(ns_pair, ns_pair.b, transport)), (
            "the daemon kept the connection of a client behind a cut"
        )
    finally:
        ns_pair.cut(ns_pair.b, up=True)
        conn.abandon()
    [error] = errors
    assert isinstance(error, LibvirtUnreachable)
    assert f"libvirt daemon {uri}: no answer to keepalive for 2 s" in str(error)


def test_a_real_daemon_answers_our_pings_so_an_idle_connection_lives_on(
    ns_pair: NsPair, transport: str
) -> None:
    """Idle for many times interval x count: only the daemon's PONGs keep it alive."""
    uri = ns_pair.uri(ns_pair.a, transport, keepalive_interval="0.2", keepalive_count="2")
    conn = Connection.open(parse(uri), host=uri)
    try:
        time.sleep(10 * 0.2 * 2)
        assert not conn.broken
        assert conn.call(Proc.CONNECT_GET_VERSION)
    finally:
        conn.close()
