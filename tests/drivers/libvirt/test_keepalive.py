"""libvirt keepalive: the clock, and the client against a scripted daemon that answers or not."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from migrator.drivers.libvirt.errors import LibvirtUnreachable
from migrator.drivers.libvirt.keepalive import Clock
from migrator.drivers.libvirt.procedures import KeepAlive, Proc
from migrator.drivers.libvirt.uri import KeepAliveSettings
from migrator.drivers.libvirt.xdr import Packer
from tests.drivers.libvirt.fake_daemon import FakeDaemon, Handler, ping, reply

WAIT = 30.0
"""A generous bound for what should happen within a fraction of a second."""
FAST = KeepAliveSettings(interval=0.1, count=3)


def wait_for(what: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + WAIT
    while not what():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def fakes() -> Iterator[list[FakeDaemon]]:
    made: list[FakeDaemon] = []
    yield made
    for fake in made:
        fake.close()


def daemon(fakes: list[FakeDaemon], *, pong: bool = True, **handlers: Handler) -> FakeDaemon:
    fake = FakeDaemon({Proc[name]: h for name, h in handlers.items()}, pong=pong)
    fakes.append(fake)
    return fake


def test_the_clock_pings_after_an_interval_of_silence_and_declares_death_at_interval_x_count() -> (
    None
):
    clock = Clock(KeepAliveSettings(5.0, 6), now=0.0)
    clock.start(100.0)
    assert not clock.ping_due(104.9) and clock.ping_due(105.0)
    clock.pinged(105.0)
    assert not clock.ping_due(109.9) and clock.ping_due(110.0)
    assert not clock.dead(129.9) and clock.dead(130.0)
    assert clock.wait(105.0) == 5.0
    clock.heard(120.0)  # any frame from the daemon
    assert not clock.dead(149.9) and clock.dead(150.0)


def test_the_clock_is_off_until_started_and_with_interval_zero() -> None:
    idle = Clock(KeepAliveSettings(), now=0.0)
    assert not idle.ping_due(1e6) and not idle.dead(1e6) and idle.wait(1e6) is None
    off = Clock(KeepAliveSettings(0, 6), now=0.0)
    off.start(0.0)
    assert not off.active and not off.dead(1e6)


def test_an_idle_connection_answers_the_daemons_ping(fakes: list[FakeDaemon]) -> None:
    fake = daemon(fakes)
    conn = fake.connection(keepalive=KeepAliveSettings(0, 6))  # ours off: theirs answered
    fake.send(ping())
    assert wait_for(lambda: bool(fake.keepalives(KeepAlive.PONG))), "no PONG"
    assert not fake.keepalives(KeepAlive.PING) and not conn.broken


def test_a_daemon_that_answers_keeps_an_idle_connection_alive(fakes: list[FakeDaemon]) -> None:
    fake = daemon(fakes, CONNECT_GET_VERSION=reply(Packer().uhyper(9).data()))
    conn = fake.connection(keepalive=FAST)
    # each PING follows interval s of silence: ten of them span over three dead times
    assert wait_for(lambda: len(fake.keepalives(KeepAlive.PING)) >= 10), "no PINGs"
    assert not conn.broken
    assert conn.call(Proc.CONNECT_GET_VERSION) == Packer().uhyper(9).data()


def test_a_silent_daemon_breaks_an_idle_connection(fakes: list[FakeDaemon]) -> None:
    fake = daemon(fakes, pong=False)
    conn = fake.connection(keepalive=FAST)
    assert wait_for(lambda: conn.broken), "the connection outlived a silent daemon"
    assert len(fake.keepalives(KeepAlive.PING)) >= 1
    with pytest.raises(LibvirtUnreachable, match=r"no answer to keepalive for 0\.3 s"):
        conn.call(Proc.CONNECT_GET_VERSION)


def test_a_silent_daemon_fails_a_call_that_waits_without_timeout(fakes: list[FakeDaemon]) -> None:
    fake = daemon(fakes, pong=False, CONNECT_GET_VERSION=lambda call: [])
    conn = fake.connection(keepalive=FAST, call_timeout=None)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            conn.call(Proc.CONNECT_GET_VERSION)
        except BaseException as exc:  # noqa: BLE001 -- handed to the test thread
            errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    caller.join(WAIT)
    assert not caller.is_alive(), "the call still waits on a dead daemon"
    [error] = errors
    assert isinstance(error, LibvirtUnreachable)
    assert "no answer to keepalive for 0.3 s (interval 0.1 s x count 3)" in str(error)
    assert "libvirt daemon fake" in str(error) and conn.broken


def test_a_daemon_without_keepalive_is_never_pinged(fakes: list[FakeDaemon]) -> None:
    fake = daemon(fakes, pong=False, CONNECT_SUPPORTS_FEATURE=reply(Packer().sint(0).data()),
                  CONNECT_GET_VERSION=reply(Packer().uhyper(9).data()))  # fmt: skip
    conn = fake.connection(keepalive=FAST)
    time.sleep(10 * FAST.interval * FAST.count)
    assert not fake.keepalives(KeepAlive.PING) and not conn.broken
    conn.call(Proc.CONNECT_GET_VERSION)


def test_a_frame_waiting_in_the_socket_is_read_before_the_daemon_is_judged_silent(
    fakes: list[FakeDaemon],
) -> None:
    """A client that reads late (a busy machine, a call holding the connection) must not
    call the daemon dead while what it sent waits unread: the frame is read first."""
    fake = daemon(fakes)
    conn = fake.connection(keepalive=FAST)
    with conn._lock:  # as while a call runs: the idle loop leaves the connection alone
        fake.send(ping())  # the daemon speaks at once...
        time.sleep(2 * FAST.interval * FAST.count)  # ...and is read only after the dead time
    assert wait_for(lambda: bool(fake.keepalives(KeepAlive.PONG))), "the PING was never answered"
    assert not conn.broken, conn._broken
