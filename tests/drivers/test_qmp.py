"""QMP sessions against a scripted QMP server on a real unix socket (no QEMU needed)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from migrator.drivers.qmp import CONNECT_ATTEMPTS, Monitor
from migrator.errors import QMPUnreachable

GREETING = {"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 22}}, "capabilities": []}}
EVENT = {"event": "MIGRATION", "data": {"status": "active"}, "timestamp": {"seconds": 1}}


class Server:
    """Serves one connection after another; ``early_events[i]`` is sent before the greeting
    of connection ``i`` (what QEMU does when it still tears the previous session down)."""

    def __init__(self, path: Path, early_events: list[bool], silent: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        self.sock.listen(4)
        self.early_events, self.silent = early_events, silent
        self.connections = 0
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            if self.silent:  # a hung QEMU: the connection is held open, never answered
                self.held.append(conn)
                continue
            with conn:
                early = (
                    self.connections <= len(self.early_events)
                    and self.early_events[self.connections - 1]
                )
                self._session(conn, early)

    @staticmethod
    def _session(conn: socket.socket, early: bool) -> None:
        if early:
            conn.sendall(json.dumps(EVENT).encode() + b"\r\n")
        conn.sendall(json.dumps(GREETING).encode() + b"\r\n")
        for request in _messages(conn):  # clients need not end a message with a newline
            if request["execute"] == "query-status":
                result: object = {"status": "running", "running": True}
            else:
                result = {}
            reply = {"return": result, "id": request.get("id")}
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps(reply).encode() + b"\r\n")

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def _messages(conn: socket.socket) -> Iterator[dict[str, object]]:
    decoder, buffer = json.JSONDecoder(), ""
    while chunk := conn.recv(4096):
        buffer += chunk.decode()
        while buffer.strip():
            try:
                message, end = decoder.raw_decode(buffer.lstrip())
            except ValueError:
                break
            buffer = buffer.lstrip()[end:]
            yield message


@pytest.fixture
def rundir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def serve(rundir: Path) -> Iterator[list[Server]]:
    servers: list[Server] = []
    yield servers
    for server in servers:
        server.close()


def test_a_session_runs_commands(rundir: Path, serve: list[Server]) -> None:
    serve.append(Server(rundir / "qmp.sock", []))
    with Monitor(rundir) as mon:
        assert mon.run("query-status")["status"] == "running"


def test_an_event_before_the_greeting_is_retried_on_a_new_connection(
    rundir: Path, serve: list[Server]
) -> None:
    serve.append(server := Server(rundir / "qmp.sock", [True, True]))
    with Monitor(rundir) as mon:
        assert mon.run("query-status")["status"] == "running"
    assert server.connections == 3


def test_a_handshake_that_keeps_failing_is_tried_connect_attempts_times(
    rundir: Path, serve: list[Server]
) -> None:
    serve.append(server := Server(rundir / "qmp.sock", [True] * (CONNECT_ATTEMPTS + 1)))
    with pytest.raises(QMPUnreachable, match=f"QMP of {rundir.name} unreachable"):
        Monitor(rundir).__enter__()
    assert server.connections == CONNECT_ATTEMPTS


def test_no_listener_fails_at_once_without_retrying(rundir: Path) -> None:
    start = time.monotonic()
    with pytest.raises(QMPUnreachable, match="unreachable"):
        Monitor(rundir).__enter__()
    assert time.monotonic() - start < 0.5


def test_a_silent_qemu_times_out_once_not_once_per_attempt(
    rundir: Path, serve: list[Server]
) -> None:
    serve.append(server := Server(rundir / "qmp.sock", [], silent=True))
    with pytest.raises(QMPUnreachable, match="TimeoutError"):
        Monitor(rundir, timeout=0.3).__enter__()
    assert server.connections == 1
