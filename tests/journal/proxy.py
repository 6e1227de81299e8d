"""A TCP proxy between a journal and PostgreSQL that can fail like a restarting server.

``restart(seconds)`` cuts every open connection and refuses new ones (accepts, then closes
them at once, as a server shutting down does) for ``seconds``. ``cut_at(marker, forward)``
cuts the connection that sends ``marker`` (e.g. ``b"COMMIT"``): after forwarding it, so
that the server commits but the client never hears so, or before, so that it never
arrives. Threads only; every socket closes with ``close()``.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from dataclasses import dataclass, field

BUFFER = 65536


@dataclass
class Proxy:
    target: tuple[str, int]
    listener: socket.socket = field(init=False)
    refusing_until: float = 0.0
    marker: bytes | None = None
    forward_marker: bool = True
    cuts: int = 0
    _pairs: list[tuple[socket.socket, socket.socket]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _closed: bool = False

    def __post_init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    def restart(self, seconds: float) -> None:
        """Cut every connection and refuse new ones for ``seconds``."""
        self.refusing_until = time.monotonic() + seconds
        self.cut_all()

    def cut_at(self, marker: bytes, *, forward: bool) -> None:
        """Cut the next connection that sends ``marker`` (once), after or before sending it."""
        self.marker, self.forward_marker = marker, forward

    def cut_all(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            _close(*pair)
        self.cuts += 1

    def close(self) -> None:
        self._closed = True
        _close(self.listener)
        self.cut_all()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if time.monotonic() < self.refusing_until:
                _close(client)
                continue
            try:
                server = socket.create_connection(self.target)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._pairs.append((client, server))
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        peers = {client: server, server: client}
        try:
            while True:
                ready, _, _ = select.select(list(peers), [], [], 1.0)
                for sock in ready:
                    data = sock.recv(BUFFER)
                    if not data:
                        return
                    if sock is client and self._tripped(data):
                        if self.forward_marker:
                            server.sendall(data)
                            time.sleep(0.2)  # the server commits; its answer never arrives
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            _close(client, server)

    def _tripped(self, data: bytes) -> bool:
        if self.marker is None or self.marker not in data:
            return False
        self.marker = None
        self.cuts += 1
        return True


def _close(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()
