"""A scripted libvirt daemon on one end of a socket pair, for the RPC client's tests.

A thread reads the client's frames and records them; for each CALL the handler of its
procedure returns the raw frames to send back (a reply, but also events, pings, garbage
or nothing). AUTH_LIST answers "none", CONNECT_SUPPORTS_FEATURE "yes" (to keepalive, which
the client asks first) and CONNECT_OPEN succeeds unless overridden. PINGs get a PONG
unless ``pong`` is false: a daemon that stopped answering.

``FakeDaemon`` serves one connection over a socket pair; ``FakeHost`` listens on a UNIX
socket (``qemu+unix:///system?socket=PATH``) and serves every connection a driver opens
with the same handlers, each on a thread of its own, so a handler that stalls one
connection leaves the others answering.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

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


def _recv(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def serve(
    sock: socket.socket,
    handlers: dict[int, Handler],
    received: list[Frame],
    answer_pings: Callable[[], bool],
) -> None:
    """Read frames from ``sock`` until it closes, recording them and answering by handler."""
    try:
        while True:
            raw = _recv(sock, 4)
            (length,) = struct.unpack(">I", raw)
            data = _recv(sock, length - 4)
            prog, _v, proc, kind, serial, status = HEADER.unpack(data[:24])
            call = Frame(prog, proc, kind, serial, status, data[24:], raw + data)
            received.append(call)
            if prog == KEEPALIVE_PROGRAM and proc == KeepAlive.PING and answer_pings():
                sock.sendall(pong())
            handler = handlers.get(proc) if prog == PROGRAM else None
            for out in handler(call) if handler else []:
                sock.sendall(out)
    except (OSError, EOFError):
        return


def _defaults(handlers: dict[int, Handler]) -> None:
    handlers.setdefault(Proc.AUTH_LIST, reply(Packer().uint(1).sint(AuthType.NONE).data()))
    handlers.setdefault(Proc.CONNECT_SUPPORTS_FEATURE, reply(Packer().sint(1).data()))
    handlers.setdefault(Proc.CONNECT_OPEN, reply())
    handlers.setdefault(Proc.CONNECT_CLOSE, reply())
    handlers.setdefault(Proc.CONNECT_GET_LIB_VERSION, reply(Packer().uhyper(9000000).data()))


@dataclass
class FakeDaemon:
    handlers: dict[int, Handler] = field(default_factory=dict)
    received: list[Frame] = field(default_factory=list)
    pong: bool = True

    def __post_init__(self) -> None:
        _defaults(self.handlers)
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
        serve(self._server, self.handlers, self.received, lambda: self.pong)

    def close(self) -> None:
        for sock in (self._server, self.client_sock):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._thread.join(timeout=5)


@dataclass
class FakeHost:
    """A scripted daemon listening at ``path``: ``uri`` reaches it, every connection served."""

    path: Path
    handlers: dict[int, Handler] = field(default_factory=dict)
    received: list[Frame] = field(default_factory=list)

    def __post_init__(self) -> None:
        _defaults(self.handlers)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(os.fspath(self.path))
        self._listener.listen(16)
        self._accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def uri(self) -> str:
        return f"qemu+unix:///system?socket={self.path}"

    def calls(self, proc: int) -> list[Frame]:
        return [f for f in self.received if f.proc == proc and f.prog == PROGRAM]

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            self._accepted.append(sock)
            args = (sock, self.handlers, self.received, lambda: True)
            threading.Thread(target=serve, args=args, daemon=True).start()

    def close(self) -> None:
        self._listener.close()
        for sock in self._accepted:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
