"""A real ``migrator serve`` process on loopback, and a Server-Sent Events reader: what
the stream, browser and load tests talk to."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ROOT

START_WAIT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """``migrator serve --db URL --listen 127.0.0.1:PORT`` started, killed and restarted."""

    db: str
    port: int = field(default_factory=free_port)
    args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    certificate: str | None = None
    """Serve HTTPS with this certificate (its key beside it as ``key.pem``)."""

    @property
    def base(self) -> str:
        scheme = "https" if self.certificate else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> Server:
        command = [sys.executable, "-m", "migrator", "serve", "--db", self.db]
        command += ["--listen", f"127.0.0.1:{self.port}", "--poll", "0.05", *self.args]
        if self.certificate:
            key = str(Path(self.certificate).with_name("key.pem"))
            command += ["--tls-certfile", self.certificate, "--tls-keyfile", key]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(command, env=env, cwd=ROOT, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_WAIT
        while not self._answers():
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise AssertionError(f"migrator serve exited {self.process.returncode}: {err}")
            assert time.monotonic() < deadline, "migrator serve did not start"
            time.sleep(0.05)
        return self

    def _answers(self) -> bool:
        try:
            verify = self.certificate or True
            return httpx.get(f"{self.base}/healthz", timeout=1, verify=verify).status_code == 200
        except httpx.TransportError:
            return False

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()


@dataclass
class Message:
    id: str | None
    event: str
    data: Any


def messages(response: httpx.Response) -> Iterator[Message]:
    """The SSE messages of a streamed response, comments and ``retry:`` left out."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line == "":
            if "data" in fields:
                yield Message(
                    fields.get("id"), fields.get("event", "message"), json.loads(fields["data"])
                )
            fields = {}
        elif not line.startswith(":"):
            name, _sep, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
