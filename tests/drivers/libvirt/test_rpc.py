"""The RPC client against a scripted daemon: replies, errors, keepalive, events, timeouts."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from migrator.drivers.libvirt.errors import (
    LibvirtAuthUnsupported,
    LibvirtError,
    LibvirtTimeout,
    LibvirtUnreachable,
)
from migrator.drivers.libvirt.procedures import (
    KEEPALIVE_PROGRAM,
    AuthType,
    DrvFeature,
    KeepAlive,
    MessageType,
    Proc,
    Status,
)
from migrator.drivers.libvirt.remote import Remote
from migrator.drivers.libvirt.rpc import Connection
from migrator.drivers.libvirt.sockets import open_socket
from migrator.drivers.libvirt.uri import parse
from migrator.drivers.libvirt.watch import PerformWatch
from migrator.drivers.libvirt.xdr import DomainRef, Packer, Unpacker, XDRError
from migrator.records import Progress, StepContext
from migrator.states import Step
from tests.drivers.libvirt.fake_daemon import (
    FakeDaemon,
    FakeHost,
    Frame,
    Handler,
    error_body,
    event,
    fail,
    frame,
    ping,
    reply,
)

VERSION = Packer().uhyper(9000000).data()


@pytest.fixture
def fakes() -> Iterator[list[FakeDaemon]]:
    made: list[FakeDaemon] = []
    yield made
    for fake in made:
        fake.close()


def daemon(fakes: list[FakeDaemon], **handlers: Handler) -> FakeDaemon:
    fake = FakeDaemon({Proc[name]: h for name, h in handlers.items()})
    fakes.append(fake)
    return fake


def test_handshake_asks_auth_list_keepalive_then_opens_the_uri(fakes: list[FakeDaemon]) -> None:
    fake = daemon(fakes)
    fake.connection()
    assert [f.proc for f in fake.received] == [
        Proc.AUTH_LIST, Proc.CONNECT_SUPPORTS_FEATURE, Proc.CONNECT_OPEN
    ]  # fmt: skip
    feature = Unpacker(fake.calls(Proc.CONNECT_SUPPORTS_FEATURE)[0].body)
    assert feature.sint() == DrvFeature.PROGRAM_KEEPALIVE
    body = Unpacker(fake.calls(Proc.CONNECT_OPEN)[0].body)
    assert (body.boolean(), body.string(), body.uint()) == (True, "qemu:///system", 0)


@pytest.mark.parametrize(
    ("offered", "named"),
    [([AuthType.SASL], "SASL"), ([AuthType.POLKIT], "polkit"), ([1, 2], "SASL or polkit")],
)
def test_a_daemon_asking_for_sasl_or_polkit_is_a_one_line_error(
    fakes: list[FakeDaemon], offered: list[int], named: str
) -> None:
    packer = Packer()
    fake = daemon(fakes, AUTH_LIST=reply(packer.array(offered, packer.sint).data()))
    with pytest.raises(LibvirtAuthUnsupported, match=f"asks for {named} authentication") as info:
        fake.connection()
    assert "\n" not in str(info.value)
    assert not fake.calls(Proc.CONNECT_OPEN)


def test_a_call_returns_its_reply_and_serials_grow(fakes: list[FakeDaemon]) -> None:
    fake = daemon(fakes, CONNECT_GET_VERSION=reply(VERSION))
    remote = Remote(fake.connection())
    assert remote.version() == remote.version() == 9000000
    serials = [f.serial for f in fake.received]
    assert serials == sorted(set(serials))


def test_keepalive_ping_is_answered_and_events_are_skipped(fakes: list[FakeDaemon]) -> None:
    def noisy(call: Frame) -> list[bytes]:
        stale = frame(call.proc, b"stale", serial=call.serial + 100)
        other = frame(1, b"x", serial=call.serial, prog=0x12345678)
        stream = frame(call.proc, b"s", serial=call.serial, kind=MessageType.STREAM)
        return [
            ping(),
            event(),
            stale,
            other,
            stream,
            frame(call.proc, VERSION, serial=call.serial),
        ]

    fake = daemon(fakes, CONNECT_GET_VERSION=noisy)
    assert Remote(fake.connection()).version() == 9000000
    time.sleep(0.1)
    pongs = [f for f in fake.received if f.prog == KEEPALIVE_PROGRAM]
    assert [(f.proc, f.kind) for f in pongs] == [(KeepAlive.PONG, MessageType.MESSAGE)]


def test_an_error_reply_keeps_libvirts_code_domain_and_message(fakes: list[FakeDaemon]) -> None:
    fake = daemon(
        fakes,
        DOMAIN_LOOKUP_BY_NAME=fail(42, 10, "Domain not found: no domain with matching name 'x'"),
        CONNECT_GET_VERSION=reply(VERSION),
        DOMAIN_RESUME=fail(1, 10, None),
    )
    remote = Remote(fake.connection())
    assert remote.lookup("x") is None  # NO_DOMAIN is an answer, not an error
    with pytest.raises(LibvirtError) as info:
        remote.resume(DomainRef("x", bytes(16), 1))
    assert (info.value.code, info.value.domain, info.value.message) == (1, 10, "unknown error")
    assert "DOMAIN_RESUME" in str(info.value)
    assert remote.version() == 9000000  # an error reply leaves the connection usable


def test_libvirt_error_text_reaches_the_exception(fakes: list[FakeDaemon]) -> None:
    text = "Requested operation is not valid: domain is not running"
    fake = daemon(fakes, DOMAIN_DESTROY=fail(55, 10, text))
    with pytest.raises(LibvirtError, match="domain is not running") as info:
        Remote(fake.connection()).destroy(DomainRef("x", bytes(16), 1))
    assert info.value.code == 55


def test_no_reply_times_out_and_breaks_the_connection(fakes: list[FakeDaemon]) -> None:
    fake = daemon(fakes, CONNECT_GET_VERSION=lambda call: [])
    conn = fake.connection()
    start = time.monotonic()
    with pytest.raises(LibvirtTimeout, match=r"CONNECT_GET_VERSION got no reply within 0\.3 s"):
        conn.call(Proc.CONNECT_GET_VERSION, timeout=0.3)
    assert 0.25 < time.monotonic() - start < 2.0
    assert conn.broken
    with pytest.raises(LibvirtUnreachable, match="unusable"):
        conn.call(Proc.CONNECT_GET_VERSION)


def test_tick_runs_while_a_call_waits(fakes: list[FakeDaemon]) -> None:
    release = threading.Event()

    def slow(call: Frame) -> list[bytes]:
        release.wait(5)
        return [frame(call.proc, VERSION, serial=call.serial)]

    fake = daemon(fakes, CONNECT_GET_VERSION=slow)
    conn = fake.connection()
    ticks: list[float] = []

    def tick() -> None:
        ticks.append(time.monotonic())
        if len(ticks) == 2:
            release.set()

    assert Unpacker(conn.call(Proc.CONNECT_GET_VERSION, tick=tick)).uhyper() == 9000000
    assert len(ticks) == 2


def test_a_daemon_closing_mid_frame_is_unreachable(fakes: list[FakeDaemon]) -> None:
    def cut(call: Frame) -> list[bytes]:
        fake._server.sendall(frame(call.proc, VERSION, serial=call.serial)[:10])
        fake._server.close()
        return []

    fake = daemon(fakes, CONNECT_GET_VERSION=cut)
    conn = fake.connection()
    with pytest.raises(LibvirtUnreachable, match="closed by the daemon"):
        conn.call(Proc.CONNECT_GET_VERSION)
    assert conn.broken


@pytest.mark.parametrize("length", [8, 64 * 1024 * 1024])
def test_a_frame_length_out_of_bounds_is_malformed(fakes: list[FakeDaemon], length: int) -> None:
    fake = daemon(fakes, CONNECT_GET_VERSION=lambda call: [struct.pack(">I", length) + bytes(24)])
    conn = fake.connection()
    with pytest.raises(
        XDRError, match=r"^libvirt daemon fake: reply to CONNECT_GET_VERSION: frame length"
    ):
        conn.call(Proc.CONNECT_GET_VERSION)
    assert conn.broken


def test_a_truncated_reply_body_is_a_clean_error(fakes: list[FakeDaemon]) -> None:
    fake = daemon(fakes, CONNECT_GET_VERSION=reply(b"\0\0"))
    with pytest.raises(
        XDRError, match=r"^libvirt daemon fake: reply to CONNECT_GET_VERSION: truncated"
    ):
        Remote(fake.connection()).version()


def test_calls_from_two_threads_take_turns(fakes: list[FakeDaemon]) -> None:
    fake = daemon(fakes, CONNECT_GET_VERSION=reply(VERSION))
    remote = Remote(fake.connection())
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.extend(remote.version() for _ in range(50)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [9000000] * 100


def test_connecting_to_nothing_says_where(tmp_path: Path) -> None:
    target = parse(f"qemu+unix:///system?socket={tmp_path}/none")
    with pytest.raises(LibvirtUnreachable, match=r"no socket at .*/none"):
        open_socket(target, host="h", timeout=1.0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LibvirtUnreachable, match="cannot connect"):
        open_socket(parse(f"qemu+tcp://127.0.0.1:{port}/system"), host="h", timeout=1.0)


def test_missing_tls_files_are_named(tmp_path: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        target = parse(f"qemu+tls://127.0.0.1:{port}/system?pkipath={tmp_path}")
        with pytest.raises(
            LibvirtUnreachable, match=f"no TLS CA certificate at {tmp_path / 'cacert.pem'}"
        ):
            Connection.open(target, host="h", connect_timeout=1.0)


def test_perform_watch_reports_progress_then_aborts_the_job(
    fakes: list[FakeDaemon], tmp_path: Path
) -> None:
    aborted = threading.Event()
    stats = Packer().sint(2).params(
        {"memory_total": 100, "memory_processed": 40, "memory_remaining": 60,
         "memory_iteration": 1}
    ).data()  # fmt: skip

    def abort(call: Frame) -> list[bytes]:
        aborted.set()
        return [frame(call.proc, serial=call.serial)]

    def perform(call: Frame) -> list[bytes]:
        aborted.wait(10)
        body = error_body(78, 10, "operation aborted: migration out job: canceled by client")
        return [frame(call.proc, body, serial=call.serial, status=Status.ERROR)]

    monitor = FakeHost(tmp_path / "monitor", {Proc.DOMAIN_GET_JOB_STATS: reply(stats),
                                              Proc.DOMAIN_ABORT_JOB: abort})  # fmt: skip
    source = daemon(fakes, DOMAIN_MIGRATE_PERFORM3_PARAMS=perform)
    samples: list[Progress] = []
    ctx = StepContext("m1", Step.PERFORM, progress=samples.append, aborted=lambda: bool(samples))
    dom = DomainRef("g", bytes(16), 3)
    target = parse(monitor.uri)
    watch = PerformWatch(ctx, dom, lambda: Remote(Connection.open(target, host="monitor")))
    try:
        with pytest.raises(LibvirtError, match="canceled by client"):
            Remote(source.connection()).perform3(dom, {}, b"", 1, timeout=10, tick=watch.tick)
    finally:
        watch.close()
        monitor.close()
    assert samples[0] == Progress(100, 40, 60, 1)
    assert watch.gave_up == "aborted by an operator"
    assert len(monitor.calls(Proc.DOMAIN_ABORT_JOB)) == 1


# -- frames written out by hand from remote_protocol.x and virnetprotocol.x ---------------


def hexa(text: str) -> bytes:
    return bytes.fromhex(text)


def header(length: int, prog: int, proc: int, kind: int, serial: int, status: int = 0) -> bytes:
    """``len`` (counting itself), then ``virNetMessageHeader {unsigned prog; unsigned vers;
    int proc; virNetMessageType type; unsigned serial; virNetMessageStatus status;}``."""
    return struct.pack(">IIIiiIi", length, prog, 1, proc, kind, serial, status)


def test_the_handshake_sends_the_bytes_remote_protocol_x_gives(fakes: list[FakeDaemon]) -> None:
    fake = daemon(fakes)
    fake.connection()
    auth_list, feature, connect_open = fake.received
    # REMOTE_PROC_AUTH_LIST = 66, a CALL (0), serial 0, no arguments
    assert auth_list.raw == hexa("0000001c 20008086 00000001 00000042 00000000 00000000 00000000")
    # REMOTE_PROC_CONNECT_SUPPORTS_FEATURE = 60, serial 1: { int feature; }, keepalive (10)
    assert feature.raw == hexa(
        "00000020 20008086 00000001 0000003c 00000000 00000001 00000000 0000000a"
    )
    # REMOTE_PROC_CONNECT_OPEN = 1: remote_connect_open_args { remote_string name; u_int flags; }
    assert connect_open.raw == hexa(
        "00000038 20008086 00000001 00000001 00000000 00000002 00000000"
        "00000001 0000000e 71656d753a2f2f2f73797374656d 0000 00000000"
    )


def test_a_reply_written_by_hand_is_read(fakes: list[FakeDaemon]) -> None:
    """REMOTE_PROC_CONNECT_GET_VERSION = 4: ``{unsigned hyper hv_ver}``, 9.0.0 as 9000000."""
    version = hexa("0000000000895440")
    fake = daemon(
        fakes,
        CONNECT_GET_VERSION=lambda call: [
            header(36, 0x20008086, 4, 1, call.serial) + version  # REPLY (1), OK (0)
        ],
    )
    assert Remote(fake.connection()).version() == 9_000_000
    [call] = fake.calls(Proc.CONNECT_GET_VERSION)
    assert call.raw == hexa("0000001c 20008086 00000001 00000004 00000000 00000003 00000000")


def test_an_error_written_by_hand_is_read_with_its_code_domain_and_text(
    fakes: list[FakeDaemon],
) -> None:
    """``remote_error { int code; int domain; remote_string message; int level; remote_domain
    dom; remote_string str1, str2, str3; int int1, int2; remote_network net; }``."""
    error = hexa(
        "00000037 0000000a 00000001 00000002 6e6f0000 00000002"  # 55, QEMU (10), "no", ERROR
        "00000000 00000000 00000000 00000000 00000000 00000000 00000000"  # absent, zeros
    )
    fake = daemon(
        fakes,
        DOMAIN_DESTROY=lambda call: [
            header(24 + len(error) + 4, 0x20008086, 12, 1, call.serial, 1) + error
        ],
    )
    uuid = bytes(range(16))
    with pytest.raises(LibvirtError) as info:
        Remote(fake.connection()).destroy(DomainRef("vm", uuid, 7))
    assert (info.value.code, info.value.domain, info.value.message) == (55, 10, "no")
    # REMOTE_PROC_DOMAIN_DESTROY = 12: remote_domain_destroy_args { remote_nonnull_domain dom; }
    [call] = fake.calls(Proc.DOMAIN_DESTROY)
    assert call.body == hexa("00000002 766d0000") + uuid + hexa("00000007")


def test_a_ping_written_by_hand_is_answered_with_the_pong_virkeepaliveprotocol_x_gives(
    fakes: list[FakeDaemon],
) -> None:
    """KEEPALIVE_PROGRAM 0x6b656570 ("keep"), PING 1 and PONG 2, as MESSAGEs (2)."""
    ping_frame = hexa("0000001c 6b656570 00000001 00000001 00000002 00000000 00000000")
    reply_version = reply(hexa("0000000000895440"))
    fake = daemon(fakes, CONNECT_GET_VERSION=lambda call: [ping_frame, *reply_version(call)])
    assert Remote(fake.connection()).version() == 9_000_000
    deadline = time.monotonic() + 5
    while not [f for f in fake.received if f.prog == KEEPALIVE_PROGRAM]:
        assert time.monotonic() < deadline, "no PONG"
        time.sleep(0.01)
    [pong] = [f for f in fake.received if f.prog == KEEPALIVE_PROGRAM]
    assert pong.raw == hexa("0000001c 6b656570 00000001 00000002 00000002 00000000 00000000")


def test_perform3_sends_the_arguments_remote_protocol_x_gives(fakes: list[FakeDaemon]) -> None:
    """remote_domain_migrate_perform3_params_args { remote_nonnull_domain dom; remote_string
    dconnuri; remote_typed_param params<>; opaque cookie_in<>; unsigned int flags; }"""
    fake = daemon(fakes, DOMAIN_MIGRATE_PERFORM3_PARAMS=reply(hexa("00000002 6f6b0000")))
    uuid = bytes(range(16))
    remote = Remote(fake.connection())
    cookie = remote.perform3(
        DomainRef("vm", uuid, 7), {"bandwidth": 50}, b"ck", 0x101, timeout=5, tick=None
    )
    assert cookie == b"ok"
    [call] = fake.calls(Proc.DOMAIN_MIGRATE_PERFORM3_PARAMS)
    assert call.body == (
        hexa("00000002 766d0000") + uuid + hexa("00000007")  # dom
        + hexa("00000000")  # dconnuri: NULL (not peer-to-peer)
        + hexa("00000001 00000009 62616e647769647468 000000 00000004 0000000000000032")
        + hexa("00000002 636b0000")  # cookie_in
        + hexa("00000101")  # LIVE | CHANGE_PROTECTION
    )  # fmt: skip
    assert call.raw[:28] == header(28 + len(call.body), 0x20008086, 305, 0, 3)
