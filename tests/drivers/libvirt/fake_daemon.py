"""A scripted libvirt daemon on one end of a socket pair, for the RPC client's tests.

A thread reads the client's frames and records them; for each CALL the handler of its
procedure returns the raw frames to send back (a reply, but also events, pings, garbage
or nothing). AUTH_LIST answers "none", CONNECT_SUPPORTS_FEATURE "yes" (to keepalive, which
the client asks first) and CONNECT_OPEN succeeds unless overridden. PINGs get a PONG
unless ``pong`` is false: a daemon that stopped answering.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from migrator.drivers.libvirt.procedures import (
    KEEPALIVE_PROGRAM,
    PROGRAM,
    AuthType,
    KeepAlive,
    MessageType,
    Proc,
    Status,
)
from migrator.drivers.libvirt.rpc import Connection
from migrator.drivers.libvirt.uri import KeepAliveSettings
from migrator.drivers.libvirt.xdr import Packer

HEADER = struct.Struct(">IIiiIi")


@dataclass(frozen=True)
class Frame:
    prog: int
    proc: int
    kind: int
    serial: int
    status: int
    body: bytes
    raw: bytes = b""
    """The whole frame as the client sent it, its length word included."""


def frame(
    proc: int,
    body: bytes = b"",
    *,
    serial: int = 0,
    kind: int = MessageType.REPLY,
    status: int = Status.OK,
    prog: int = PROGRAM,
) -> bytes:
    header = HEADER.pack(prog, 1, proc, kind, serial, status)
    return struct.pack(">I", 4 + len(header) + len(body)) + header + body


def error_body(code: int, domain: int, message: str | None) -> bytes:
    """A whole ``remote_error``, as the daemon sends it."""
    p = Packer().sint(code).sint(domain).optional_string(message).sint(2)
    p.optional_string(None)  # dom (remote_domain is an optional too: absent)
    for _ in range(3):
        p.optional_string(None)
    return p.sint(0).sint(0).optional_string(None).data()


def ping() -> bytes:
    return frame(KeepAlive.PING, kind=MessageType.MESSAGE, prog=KEEPALIVE_PROGRAM)


def pong() -> bytes:
    return frame(KeepAlive.PONG, kind=MessageType.MESSAGE, prog=KEEPALIVE_PROGRAM)


def event(proc: int = 107) -> bytes:
    return frame(proc, b"\0\0\0\0event-body", kind=MessageType.MESSAGE)


Handler = Callable[[Frame], list[bytes]]


def reply(body: bytes = b"") -> Handler:
    return lambda call: [frame(call.proc, body, serial=call.serial)]


def fail(code: int, domain: int, message: str | None) -> Handler:
    body = error_body(code, domain, message)
    return lambda call: [frame(call.proc, body, serial=call.serial, status=Status.ERROR)]


@dataclass
class FakeDaemon:
    handlers: dict[int, Handler] = field(default_factory=dict)
    received: list[Frame] = field(default_factory=list)
    pong: bool = True

    def __post_init__(self) -> None:
        self.handlers.setdefault(Proc.AUTH_LIST, reply(Packer().uint(1).sint(AuthType.NONE).data()))
        self.handlers.setdefault(Proc.CONNECT_SUPPORTS_FEATURE, reply(Packer().sint(1).data()))
        self.handlers.setdefault(Proc.CONNECT_OPEN, reply())
        self.handlers.setdefault(Proc.CONNECT_CLOSE, reply())
        self.client_sock, self._server = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def connection(
        self,
        *,
        call_timeout: float | None = 5.0,
        open_: bool = True,
        keepalive: KeepAliveSettings | None = None,
    ) -> Connection:
        conn = Connection(
            self.client_sock, host="fake", call_timeout=call_timeout, keepalive=keepalive
        )
        if open_:
            conn.handshake("qemu:///system")
        return conn

    def calls(self, proc: int) -> list[Frame]:
        return [f for f in self.received if f.proc == proc and f.prog == PROGRAM]

    def keepalives(self, proc: KeepAlive) -> list[Frame]:
        return [f for f in self.received if f.proc == proc and f.prog == KEEPALIVE_PROGRAM]

    def send(self, data: bytes) -> None:
        self._server.sendall(data)

    def _serve(self) -> None:
        try:
            while True:
                raw = self._recv(4)
                (length,) = struct.unpack(">I", raw)
                data = self._recv(length - 4)
                prog, _v, proc, kind, serial, status = HEADER.unpack(data[:24])
                call = Frame(prog, proc, kind, serial, status, data[24:], raw + data)
                self.received.append(call)
                if prog == KEEPALIVE_PROGRAM and proc == KeepAlive.PING and self.pong:
                    self._server.sendall(pong())
                handler = self.handlers.get(proc) if prog == PROGRAM else None
                for out in handler(call) if handler else []:
                    self._server.sendall(out)
        except (OSError, EOFError):
            return

    def _recv(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self._server.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def close(self) -> None:
        for sock in (self._server, self.client_sock):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._thread.join(timeout=5)
