"""A client of libvirt's RPC: framing, serials, errors, keepalive, timeouts.

A frame is a big-endian u32 length (counting itself), a header ``(prog, vers, proc, type,
serial, status)`` and an XDR body. ``Connection.call`` sends one CALL of the remote program
and reads frames until the REPLY with its serial arrives: keepalive PINGs are answered with
PONG, events and other programs' messages are skipped. A reply with status ERROR becomes a
``LibvirtError`` with libvirt's code, domain and message.

Keepalive (``keepalive.py``): the handshake tells the daemon that the client speaks it, so
the daemon drops the connection of a client that stops answering. While no call runs, a
thread of the connection answers the daemon's PINGs; during a call the caller does. Both
send the client's own PINGs and fail the connection when the daemon went silent for
``interval x count`` seconds.

One call at a time per connection (a lock; the keepalive thread takes it too, never
waiting for it). A call that times out, a frame that does not decode, a silent peer or a
lost socket breaks the connection for good: the daemon binds migration state to the
connection, so a half-read conversation is never resumed, and later calls raise
``LibvirtUnreachable``.
"""

from __future__ import annotations

import contextlib
import math
import select
import socket
import struct
import threading
import time
from collections.abc import Callable

from migrator.drivers.libvirt.errors import (
    LibvirtAuthUnsupported,
    LibvirtError,
    LibvirtTimeout,
    LibvirtUnreachable,
)
from migrator.drivers.libvirt.keepalive import Clock
from migrator.drivers.libvirt.procedures import (
    KEEPALIVE_PROGRAM,
    KEEPALIVE_VERSION,
    MESSAGE_MAX,
    PROGRAM,
    PROTOCOL_VERSION,
    AuthType,
    DrvFeature,
    KeepAlive,
    MessageType,
    Proc,
    Status,
)
from migrator.drivers.libvirt.sockets import Channel, open_channel
from migrator.drivers.libvirt.uri import KeepAliveSettings, LibvirtURI
from migrator.drivers.libvirt.xdr import Packer, Unpacker, XDRError

_HEADER = struct.Struct(">IIiiIi")
_LENGTH = struct.Struct(">I")
HEADER_SIZE = _LENGTH.size + _HEADER.size
TICK = 0.5
"""Seconds between two ``tick`` calls while a call waits for its reply."""

Tick = Callable[[], None]
Header = tuple[int, int, int, int, int, int]


def _proc_name(proc: int) -> str:
    try:
        return Proc(proc).name
    except ValueError:
        return f"procedure {proc}"


class Connection:
    """One RPC connection to a libvirt daemon, opened (AUTH_LIST, CONNECT_OPEN) or not.

    ``call_timeout`` bounds each call unless the call passes its own ``timeout``;
    ``keepalive`` is virsh's ``-k``/``-K`` (see ``keepalive.py``).
    """

    def __init__(
        self,
        sock: socket.socket | Channel,
        *,
        host: str,
        call_timeout: float | None = None,
        keepalive: KeepAliveSettings | None = None,
    ) -> None:
        self._channel = sock if isinstance(sock, Channel) else Channel(sock)
        self._sock = self._channel.sock
        self.host = host
        self.call_timeout = call_timeout
        self._serial = 0
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self._broken: str | None = None
        self._clock = Clock(keepalive or KeepAliveSettings(), time.monotonic())
        self._stop = threading.Event()

    @classmethod
    def open(
        cls,
        target: LibvirtURI,
        *,
        host: str,
        connect_timeout: float = 10.0,
        call_timeout: float | None = None,
        keepalive: KeepAliveSettings | None = None,
    ) -> Connection:
        """Connect, check that no authentication is asked for, and CONNECT_OPEN."""
        channel = open_channel(target, host=host, timeout=connect_timeout)
        conn = cls(channel, host=host, call_timeout=call_timeout,
                   keepalive=keepalive or target.keepalive)  # fmt: skip
        try:
            conn.handshake(target.name, timeout=connect_timeout)
        except LibvirtTimeout:
            reason = channel.why_silent(connect_timeout)
            conn.abandon()
            raise LibvirtTimeout(host=host, reason=reason) from None
        except BaseException:
            conn.abandon()
            raise
        return conn

    def handshake(self, name: str, *, timeout: float | None = None) -> None:
        """AUTH_LIST, keepalive, CONNECT_OPEN: what libvirt's client sends first."""
        reply = Unpacker(self.call(Proc.AUTH_LIST, timeout=timeout), self._where(Proc.AUTH_LIST))
        offered = [reply.sint() for _ in range(min(reply.uint(), 20))]
        if offered and AuthType.NONE not in offered:
            names = " or ".join(_auth_name(t) for t in offered)
            raise LibvirtAuthUnsupported(host=self.host, offered=names)
        self._start_keepalive(timeout)
        body = Packer().optional_string(name).uint(0).data()
        self.call(Proc.CONNECT_OPEN, body, timeout=timeout)

    def _start_keepalive(self, timeout: float | None) -> None:
        """Ask whether the daemon speaks keepalive, which also makes it ping us."""
        feature = Packer().sint(DrvFeature.PROGRAM_KEEPALIVE).data()
        try:
            reply = self.call(Proc.CONNECT_SUPPORTS_FEATURE, feature, timeout=timeout)
        except LibvirtError:
            return  # a daemon without keepalive: libvirt's client goes on without it
        if Unpacker(reply, self._where(Proc.CONNECT_SUPPORTS_FEATURE)).sint() != 1:
            return
        with self._lock:
            self._clock.start(time.monotonic())
        threading.Thread(target=self._idle_loop, name=f"keepalive {self.host}",
                         daemon=True).start()  # fmt: skip

    @property
    def broken(self) -> bool:
        return self._broken is not None

    def call(
        self,
        proc: int,
        body: bytes = b"",
        *,
        timeout: float | None = None,
        tick: Tick | None = None,
    ) -> bytes:
        """Send one call and return the body of its reply.

        Raises ``LibvirtError`` on an error reply, ``LibvirtTimeout`` after ``timeout``
        seconds (default ``call_timeout``; ``math.inf``: none), ``LibvirtUnreachable`` if
        the connection is or gets lost, or the daemon stops answering keepalive. ``tick``
        runs every ``TICK`` s while waiting."""
        limit = self.call_timeout if timeout is None else timeout
        deadline = None if limit is None or math.isinf(limit) else time.monotonic() + limit
        with self._lock:
            self._check()
            serial = self._serial
            self._serial += 1
            try:
                self._send(PROGRAM, PROTOCOL_VERSION, proc, MessageType.CALL, serial, body)
                return self._await(proc, serial, deadline, tick)
            except LibvirtError:
                raise
            except LibvirtTimeout:
                why = f"{_proc_name(proc)} got no reply within {limit:.3g} s"
                self._break(why)
                raise LibvirtTimeout(host=self.host, reason=why) from None
            except LibvirtUnreachable as exc:
                self._break(str(exc))
                raise
            except XDRError as exc:
                self._break(f"malformed reply: {exc}")
                raise XDRError(f"{self._where(proc)}: {exc}") from None
            except OSError as exc:
                reason = self._lost(exc)
                self._break(reason)
                raise LibvirtUnreachable(host=self.host, reason=reason) from None
            except BaseException as exc:
                self._break(f"{type(exc).__name__} during {_proc_name(proc)}")
                raise

    def close(self) -> None:
        """CONNECT_CLOSE (best effort, 2 s), then close the socket."""
        if self._broken is None:
            with contextlib.suppress(LibvirtError, LibvirtUnreachable, XDRError):
                self.call(Proc.CONNECT_CLOSE, timeout=2.0)
        self.abandon()

    def abandon(self) -> None:
        """Close the socket without a word: the daemon then cleans up as after a crash."""
        with self._lock:
            self._break("closed")

    # -- internals --------------------------------------------------------------------------

    def _where(self, proc: int) -> str:
        """What a malformed message is said to be: ``libvirt daemon HOST: reply to PROC``."""
        return f"libvirt daemon {self.host}: reply to {_proc_name(proc)}"

    def _check(self) -> None:
        if self._broken is not None:
            raise LibvirtUnreachable(host=self.host, reason=f"connection unusable ({self._broken})")

    def _break(self, why: str) -> None:
        if self._broken is None:
            self._broken = why
            self._stop.set()
            self._channel.close()

    def _lost(self, exc: OSError) -> str:
        if self._channel.tunnel is not None:
            return self._channel.why_closed()
        return f"connection lost: {exc}"

    def _send(self, prog: int, vers: int, proc: int, kind: MessageType, serial: int,
              body: bytes = b"") -> None:  # fmt: skip
        header = _HEADER.pack(prog, vers, proc, kind, serial, Status.OK)
        self._sock.sendall(_LENGTH.pack(HEADER_SIZE + len(body)) + header + body)

    def _keepalive(self, header: Header) -> bool:
        """Handle a frame of the keepalive program (answer a PING); False for others."""
        prog, _vers, proc, _kind, _serial, _status = header
        if prog != KEEPALIVE_PROGRAM:
            return False
        if proc == KeepAlive.PING:
            self._send(KEEPALIVE_PROGRAM, KEEPALIVE_VERSION, KeepAlive.PONG, MessageType.MESSAGE, 0)
        return True

    def _keepalive_due(self) -> None:
        """Our PING if one is due; ``LibvirtUnreachable`` once the daemon went silent."""
        now = time.monotonic()
        if self._clock.dead(now):
            raise LibvirtUnreachable(host=self.host, reason=self._clock.reason())
        if self._clock.ping_due(now):
            self._send(KEEPALIVE_PROGRAM, KEEPALIVE_VERSION, KeepAlive.PING, MessageType.MESSAGE, 0)
            self._clock.pinged(now)

    def _idle_loop(self) -> None:
        """While no call runs: answer the daemon's PINGs, send ours, notice its death."""
        while not self._stop.wait(self._clock.idle_poll()):
            if not self._lock.acquire(blocking=False):
                continue  # a call runs: its caller reads and pings
            try:
                if self._broken is not None:
                    return
                self._drain()
                self._keepalive_due()
            except (LibvirtUnreachable, XDRError) as exc:
                self._break(str(exc))
            except OSError as exc:
                self._break(self._lost(exc))
            except ValueError:  # the socket was closed under the connection
                self._break("socket closed")
            finally:
                self._lock.release()

    def _drain(self) -> None:
        """Read the frames that arrived while no call ran (PINGs, events) and act on them."""
        while self._buffer or _pending(self._sock) or _readable(self._sock, 0):
            deadline = time.monotonic() + max(self._clock.dead_after, 10.0)
            header, _body = self._read_frame(deadline, None)
            self._keepalive(header)

    def _await(self, proc: int, serial: int, deadline: float | None, tick: Tick | None) -> bytes:
        while True:
            header, body = self._read_frame(deadline, tick)
            if self._keepalive(header):
                continue
            prog, _vers, _rproc, kind, rserial, status = header
            if prog != PROGRAM or kind != MessageType.REPLY or rserial != serial:
                continue  # an event, a stream packet, another program: not ours
            if status == Status.OK:
                return body
            raise decode_error(body, _proc_name(proc))

    def _read_frame(self, deadline: float | None, tick: Tick | None) -> tuple[Header, bytes]:
        self._wait_for_data(deadline, tick)
        (length,) = _LENGTH.unpack(self._recv_exact(_LENGTH.size, deadline))
        if length < HEADER_SIZE or length > MESSAGE_MAX:
            raise XDRError(f"frame length {length} outside {HEADER_SIZE}..{MESSAGE_MAX}")
        frame = self._recv_exact(length - _LENGTH.size, deadline)
        header: Header = _HEADER.unpack(frame[: _HEADER.size])
        return header, frame[_HEADER.size :]

    def _wait_for_data(self, deadline: float | None, tick: Tick | None) -> None:
        """Block until a frame starts, calling ``tick`` every ``TICK`` s and keeping the
        keepalive meanwhile."""
        next_tick = time.monotonic() + TICK
        while not self._buffer and not _pending(self._sock):
            if _readable(self._sock, 0):
                return  # what arrived is read before the daemon is judged silent
            self._keepalive_due()
            now = time.monotonic()
            waits = [_left(deadline, self.host), self._clock.wait(now),
                     next_tick - now if tick is not None else None]  # fmt: skip
            if _readable(self._sock, _soonest(waits)):
                return
            if tick is not None and time.monotonic() >= next_tick:
                tick()
                next_tick = time.monotonic() + TICK

    def _recv_exact(self, n: int, deadline: float | None) -> bytes:
        while len(self._buffer) < n:
            wait = _soonest([_left(deadline, self.host), self._clock.wait(time.monotonic())])
            self._sock.settimeout(None if wait is None else max(wait, 0.01))
            try:
                chunk = self._sock.recv(max(65536, n - len(self._buffer)))
            except TimeoutError:
                self._keepalive_due()
                continue  # a PING went out, or the deadline check above raises
            if not chunk:
                raise LibvirtUnreachable(host=self.host, reason=self._channel.why_closed())
            self._clock.heard(time.monotonic())  # a long frame still arriving is a live peer
            self._buffer += chunk
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data


def _soonest(waits: list[float | None]) -> float | None:
    known = [w for w in waits if w is not None]
    return max(0.0, min(known)) if known else None


def _readable(sock: socket.socket, wait: float | None) -> bool:
    readable, _, _ = select.select([sock], [], [], wait)
    return bool(readable)


def _left(deadline: float | None, host: str) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise LibvirtTimeout(host=host, reason="no reply in time")
    return left


def _pending(sock: socket.socket) -> bool:
    """True when a TLS socket holds decrypted bytes that ``select`` cannot see (``ssl`` is
    imported for ``qemu+tls`` only, so the socket is asked, not its type)."""
    pending = getattr(sock, "pending", None)  # ssl.SSLSocket.pending
    return pending is not None and int(pending()) > 0


def _auth_name(value: int) -> str:
    try:
        return AuthType(value).name.lower().replace("sasl", "SASL")
    except ValueError:
        return f"auth type {value}"


def decode_error(body: bytes, proc: str) -> LibvirtError:
    """``remote_error``: code, domain and message are kept; the rest is not needed."""
    reader = Unpacker(body)
    code, domain = reader.sint(), reader.sint()
    message = reader.optional(reader.string) or "unknown error"
    return LibvirtError(code=code, domain=domain, message=message, proc=proc)
