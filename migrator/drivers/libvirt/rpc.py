"""A client of libvirt's RPC: framing, serials, errors, keepalive, timeouts.

A frame is a big-endian u32 length (counting itself), a header ``(prog, vers, proc, type,
serial, status)`` and an XDR body. ``Connection.call`` sends one CALL of the remote program
and reads frames until the REPLY with its serial arrives: keepalive PINGs are answered with
PONG, events and other programs' messages are skipped. A reply with status ERROR becomes a
``LibvirtError`` with libvirt's code, domain and message.

One call at a time per connection (a lock). A call that times out, a frame that does not
decode, or a lost socket breaks the connection for good: the daemon binds migration state
to the connection, so a half-read conversation is never resumed, and later calls raise
``LibvirtUnreachable``.
"""

from __future__ import annotations

import contextlib
import math
import select
import socket
import ssl
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
from migrator.drivers.libvirt.procedures import (
    KEEPALIVE_PROGRAM,
    KEEPALIVE_VERSION,
    MESSAGE_MAX,
    PROGRAM,
    PROTOCOL_VERSION,
    AuthType,
    KeepAlive,
    MessageType,
    Proc,
    Status,
)
from migrator.drivers.libvirt.uri import LibvirtURI, Transport
from migrator.drivers.libvirt.xdr import Packer, Unpacker, XDRError

_HEADER = struct.Struct(">IIiiIi")
_LENGTH = struct.Struct(">I")
HEADER_SIZE = _LENGTH.size + _HEADER.size
TICK = 0.5
"""Seconds between two ``tick`` calls while a call waits for its reply."""

Tick = Callable[[], None]


def _proc_name(proc: int) -> str:
    try:
        return Proc(proc).name
    except ValueError:
        return f"procedure {proc}"


class Connection:
    """One RPC connection to a libvirt daemon, opened (AUTH_LIST, CONNECT_OPEN) or not.

    ``call_timeout`` bounds each call unless the call passes its own ``timeout``.
    """

    def __init__(self, sock: socket.socket, *, host: str, call_timeout: float | None = None):
        self._sock = sock
        self.host = host
        self.call_timeout = call_timeout
        self._serial = 0
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self._broken: str | None = None

    @classmethod
    def open(
        cls,
        target: LibvirtURI,
        *,
        host: str,
        connect_timeout: float = 10.0,
        call_timeout: float | None = None,
    ) -> Connection:
        """Connect, check that no authentication is asked for, and CONNECT_OPEN."""
        sock = open_socket(target, host=host, timeout=connect_timeout)
        conn = cls(sock, host=host, call_timeout=call_timeout)
        try:
            conn.handshake(target.name, timeout=connect_timeout)
        except BaseException:
            conn.abandon()
            raise
        return conn

    def handshake(self, name: str, *, timeout: float | None = None) -> None:
        reply = Unpacker(self.call(Proc.AUTH_LIST, timeout=timeout))
        offered = [reply.sint() for _ in range(min(reply.uint(), 20))]
        if offered and AuthType.NONE not in offered:
            names = " or ".join(_auth_name(t) for t in offered)
            raise LibvirtAuthUnsupported(host=self.host, offered=names)
        body = Packer().optional_string(name).uint(0).data()
        self.call(Proc.CONNECT_OPEN, body, timeout=timeout)

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
        the connection is or gets lost. ``tick`` runs every ``TICK`` s while waiting."""
        limit = self.call_timeout if timeout is None else timeout
        deadline = None if limit is None or math.isinf(limit) else time.monotonic() + limit
        with self._lock:
            self._check()
            serial = self._serial
            self._serial += 1
            try:
                self._send(PROGRAM, PROTOCOL_VERSION, proc, MessageType.CALL, serial)(body)
                return self._await(proc, serial, deadline, tick)
            except LibvirtError:
                raise
            except LibvirtTimeout:
                self._break(f"{_proc_name(proc)} got no reply within {limit:g} s")
                raise
            except LibvirtUnreachable as exc:
                self._break(str(exc))
                raise
            except XDRError as exc:
                self._break(f"malformed reply: {exc}")
                raise
            except OSError as exc:
                self._break(str(exc))
                raise LibvirtUnreachable(host=self.host, reason=f"connection lost: {exc}") from None
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

    def _check(self) -> None:
        if self._broken is not None:
            raise LibvirtUnreachable(host=self.host, reason=f"connection unusable ({self._broken})")

    def _break(self, why: str) -> None:
        if self._broken is None:
            self._broken = why
            with contextlib.suppress(OSError):
                self._sock.close()

    def _send(
        self, prog: int, vers: int, proc: int, kind: MessageType, serial: int
    ) -> Callable[[bytes], None]:
        def send(body: bytes) -> None:
            header = _HEADER.pack(prog, vers, proc, kind, serial, Status.OK)
            self._sock.sendall(_LENGTH.pack(HEADER_SIZE + len(body)) + header + body)

        return send

    def _await(self, proc: int, serial: int, deadline: float | None, tick: Tick | None) -> bytes:
        while True:
            header, body = self._read_frame(deadline, tick)
            prog, _vers, rproc, kind, rserial, status = header
            if prog == KEEPALIVE_PROGRAM:
                if rproc == KeepAlive.PING:
                    pong = self._send(KEEPALIVE_PROGRAM, KEEPALIVE_VERSION, KeepAlive.PONG,
                                      MessageType.MESSAGE, 0)  # fmt: skip
                    pong(b"")
                continue
            if prog != PROGRAM or kind != MessageType.REPLY or rserial != serial:
                continue  # an event, a stream packet, another program: not ours
            if status == Status.OK:
                return body
            raise decode_error(body, _proc_name(proc))

    def _read_frame(
        self, deadline: float | None, tick: Tick | None
    ) -> tuple[tuple[int, int, int, int, int, int], bytes]:
        self._wait_for_data(deadline, tick)
        (length,) = _LENGTH.unpack(self._recv_exact(_LENGTH.size, deadline))
        if length < HEADER_SIZE or length > MESSAGE_MAX:
            raise XDRError(f"frame length {length} outside {HEADER_SIZE}..{MESSAGE_MAX}")
        frame = self._recv_exact(length - _LENGTH.size, deadline)
        header = _HEADER.unpack(frame[: _HEADER.size])
        return header, frame[_HEADER.size :]

    def _wait_for_data(self, deadline: float | None, tick: Tick | None) -> None:
        """Block until a frame starts, calling ``tick`` every ``TICK`` s meanwhile."""
        while not self._buffer and not _pending(self._sock):
            left = _left(deadline, self.host)
            wait = TICK if tick is not None else left
            if left is not None and wait is not None:
                wait = min(wait, left)
            readable, _, _ = select.select([self._sock], [], [], wait)
            if readable:
                return
            if tick is not None:
                tick()

    def _recv_exact(self, n: int, deadline: float | None) -> bytes:
        while len(self._buffer) < n:
            self._sock.settimeout(_left(deadline, self.host))
            try:
                chunk = self._sock.recv(max(65536, n - len(self._buffer)))
            except TimeoutError:
                raise LibvirtTimeout(host=self.host, reason="no reply in time") from None
            if not chunk:
                raise LibvirtUnreachable(host=self.host, reason="connection closed by the daemon")
            self._buffer += chunk
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data


def _left(deadline: float | None, host: str) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise LibvirtTimeout(host=host, reason="no reply in time")
    return left


def _pending(sock: socket.socket) -> bool:
    return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0


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


def open_socket(target: LibvirtURI, *, host: str, timeout: float) -> socket.socket:
    """The connected (for TLS: handshaken and checked) socket ``target`` names."""
    try:
        if target.transport is Transport.UNIX:
            assert target.socket is not None
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(target.socket)
            except BaseException:
                sock.close()
                raise
            return sock
        assert target.host is not None and target.port is not None
        sock = socket.create_connection((target.host, target.port), timeout=timeout)
        if target.transport is Transport.TLS:
            return _tls(sock, target, host=host)
        return sock
    except FileNotFoundError:
        reason = f"no socket at {target.address} (is libvirtd running?)"
    except TimeoutError:
        raise LibvirtTimeout(host=host, reason=f"no connection within {timeout:g} s") from None
    except ssl.SSLError as exc:
        reason = f"TLS handshake failed: {exc.reason or exc}"
    except OSError as exc:
        reason = f"cannot connect to {target.address}: {exc.strerror or exc}"
    raise LibvirtUnreachable(host=host, reason=reason)


def tls_context(target: LibvirtURI) -> ssl.SSLContext:
    """A client context from libvirt's certificate layout (see ``uri.py``)."""
    files = target.tls
    assert files is not None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        if files.verify:
            context.load_verify_locations(cafile=str(files.ca))
        else:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        context.load_cert_chain(certfile=str(files.cert), keyfile=str(files.key))
    except (OSError, ssl.SSLError) as exc:
        files_named = f"{files.ca}, {files.cert}, {files.key}"
        raise LibvirtUnreachable(
            host=target.address, reason=f"cannot load the TLS files ({files_named}): {exc}"
        ) from None
    return context


def _tls(sock: socket.socket, target: LibvirtURI, *, host: str) -> socket.socket:
    try:
        wrapped = tls_context(target).wrap_socket(sock, server_hostname=target.host)
        # libvirtd sends one byte, 1, once it accepted our certificate (virNetClient).
        check = wrapped.recv(1)
    except BaseException:
        sock.close()
        raise
    if check != b"\1":
        wrapped.close()
        raise LibvirtUnreachable(
            host=host, reason="the daemon refused our TLS client certificate or address"
        )
    return wrapped
