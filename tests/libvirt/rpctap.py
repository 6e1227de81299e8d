"""A tap on libvirt's RPC: a UNIX-socket relay between a client and a daemon that sees
each message's header, so a test can stop a client at an exact point of the protocol.

A client connects to the tap's socket (``qemu+unix:///session?socket=TAP``) instead of
the daemon's; every connection is relayed to the daemon unchanged (``Relay``: ``Tap`` on
a UNIX socket here, ``nettap.NetTap`` over TCP, TLS or ssh in front of a namespaced
host); a connection the daemon cannot take is reset. The faults, each armed for one
procedure number (``remote_protocol.x``):

- ``hold_after(proc, on_hold)``: once the reply to ``proc`` has reached the client, the
  client's next call (on any connection of this tap or of taps sharing the same
  ``Gate``) is held, never forwarded, and ``on_hold`` runs: a client killed there has seen
  that step's reply and started nothing after it, exactly.
- ``after_call(proc, on_call)``: once a call to ``proc`` has been forwarded to the daemon,
  ``on_call`` runs (e.g. kills the client while the daemon works on the call).
- ``before_call(proc, action)``: when the client calls ``proc``, ``action`` runs before
  the call is forwarded, and the call waits for it: a fault in place exactly between the
  previous step and this one (a QEMU killed, a guest started).
- ``cut_reply(proc)``: the daemon's reply to ``proc`` is dropped and the connection is
  closed both ways: the call ran, its caller never hears of it (a lost reply). Once: a
  later call on a new connection is answered. ``on_cut`` runs before the connection is
  closed (a daemon stopped there, say).

Framing: a big-endian u32 length that counts itself, then ``prog, vers, proc, type,
serial, status``. Only calls and replies of the remote program are looked at; everything
else (events, keepalive, streams) passes.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REMOTE_PROGRAM = 0x20008086
CALL, REPLY = 0, 1
_HEADER = struct.Struct(">IIIiiIi")


@dataclass(frozen=True)
class Header:
    prog: int
    proc: int
    type: int
    serial: int


def _read_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return bytes(data)


def _read_message(sock: socket.socket) -> tuple[Header, bytes]:
    head = _read_exact(sock, _HEADER.size)
    length, prog, _vers, proc, mtype, serial, _status = _HEADER.unpack(head)
    body = _read_exact(sock, length - _HEADER.size)
    return Header(prog, proc, mtype, serial), head + body


@dataclass
class Gate:
    """What the taps sharing it do; one Gate spans a client's connections to both hosts."""

    hold_proc: int | None = None
    on_hold: Callable[[], None] | None = None
    cut_proc: int | None = None
    call_proc: int | None = None
    on_call: Callable[[], None] | None = None
    before_proc: int | None = None
    before: Callable[[], None] | None = None
    on_cut: Callable[[], None] | None = None
    seen: list[tuple[str, int, float]] = field(default_factory=list)
    """(direction ``"call"`` | ``"reply"``, proc, ``time.monotonic()``) of the remote
    program's messages, in order."""
    frames: list[tuple[bool, bytes]] = field(default_factory=list)
    """(from the client, the whole message) of the remote program, in the order relayed."""
    held: threading.Event = field(default_factory=threading.Event)
    cut: threading.Event = field(default_factory=threading.Event)
    _closing: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def hold_after(self, proc: int, on_hold: Callable[[], None] | None = None) -> None:
        self.hold_proc, self.on_hold = proc, on_hold

    def cut_reply(self, proc: int, on_cut: Callable[[], None] | None = None) -> None:
        self.cut_proc, self.on_cut = proc, on_cut

    def before_call(self, proc: int, action: Callable[[], None]) -> None:
        self.before_proc, self.before = proc, action

    def after_call(self, proc: int, on_call: Callable[[], None]) -> None:
        self.call_proc, self.on_call = proc, on_call

    def _called(self, proc: int) -> None:
        if proc == self.call_proc and self.on_call is not None:
            self.call_proc = None
            self.on_call()

    def _replied(self, proc: int) -> None:
        with self._lock:
            self.seen.append(("reply", proc, time.monotonic()))
            if proc == self.hold_proc:
                self._closing = True

    def _may_forward_call(self, proc: int) -> bool:
        before = None
        with self._lock:
            if proc == self.before_proc:
                before, self.before, self.before_proc = self.before, None, None
        if before is not None:
            before()
        with self._lock:
            self.seen.append(("call", proc, time.monotonic()))
            if not self._closing:
                return True
        if not self.held.is_set():
            self.held.set()
            if self.on_hold is not None:
                self.on_hold()
        return False


class Relay:
    """Relays every connection accepted on a listening socket to a new connection to the
    daemon, through the ``Gate``; subclasses say how each end is opened."""

    gate: Gate

    def _serve(self, listener: socket.socket) -> None:
        self._listener = listener
        self._listener.listen(16)
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _open_client(self, sock: socket.socket) -> socket.socket:
        """The client's end, from the accepted socket (a TLS server wraps it)."""
        return sock

    def _open_upstream(self) -> socket.socket:
        """A new connection to the daemon."""
        raise NotImplementedError

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._sockets.append(client)
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, accepted: socket.socket) -> None:
        try:
            daemon = self._open_upstream()
        except OSError:  # the daemon is down: the client's connection is reset
            with contextlib.suppress(OSError):
                accepted.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                accepted.close()
            return
        try:
            client = self._open_client(accepted)
        except OSError:
            for s in (accepted, daemon):
                with contextlib.suppress(OSError):
                    s.close()
            return
        self._sockets += [client, daemon]
        threading.Thread(target=self._pump, args=(daemon, client, False), daemon=True).start()
        self._pump(client, daemon, True)

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while True:
                header, message = _read_message(src)
                if header.prog == REMOTE_PROGRAM and not self._forward(header, from_client):
                    if from_client:
                        continue
                    break
                dst.sendall(message)
                if header.prog == REMOTE_PROGRAM:
                    self.gate.frames.append((from_client, message))
                if from_client and header.prog == REMOTE_PROGRAM and header.type == CALL:
                    self.gate._called(header.proc)
        except (EOFError, OSError):
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def _forward(self, header: Header, from_client: bool) -> bool:
        if from_client:
            return header.type != CALL or self.gate._may_forward_call(header.proc)
        if header.type != REPLY:
            return True
        if header.proc == self.gate.cut_proc:
            self.gate.cut_proc = None  # once: a retry on a new connection gets its reply
            if self.gate.on_cut is not None:
                self.gate.on_cut()  # before the client can notice the cut
            self.gate.cut.set()
            return False
        self.gate._replied(header.proc)
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.close()


class Tap(Relay):
    """A relay listening on ``path`` for connections to the daemon socket ``upstream``."""

    def __init__(self, path: Path, upstream: Path, gate: Gate) -> None:
        self.path, self.upstream, self.gate = path, upstream, gate
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        self._serve(listener)

    @property
    def uri(self) -> str:
        return f"qemu+unix:///session?socket={self.path}"

    def _open_upstream(self) -> socket.socket:
        daemon = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            daemon.connect(str(self.upstream))
        except OSError:
            daemon.close()
            raise
        return daemon

    def close(self) -> None:
        super().close()
        self.path.unlink(missing_ok=True)
