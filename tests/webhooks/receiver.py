"""A webhook receiver on 127.0.0.1 (``http.server`` in a thread) that checks each request's
signature and keeps what it was sent; its answers can be scripted (500, then 200...)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from migrator.webhooks import HEADER, verify


@dataclass
class Received:
    body: dict[str, Any]
    headers: dict[str, str]
    signed: bool


@dataclass
class Receiver:
    secret: bytes
    answers: list[int] = field(default_factory=list)
    """Statuses to answer, first to last; then 200."""
    received: list[Received] = field(default_factory=list)
    """Every request, its signature checked, in the order it came."""
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def taken(self) -> list[Received]:
        """The requests answered 2xx... every one answered after the scripted failures."""
        with self.lock:
            return list(self.received)

    def wait_for(self, count: int, *, timeout: float = 60.0) -> list[Received]:
        """The requests once ``count`` came (fails after ``timeout``, a deadline only)."""
        deadline = time.monotonic() + timeout
        while len(self.taken()) < count:
            assert time.monotonic() < deadline, f"{len(self.taken())} of {count} requests came"
            time.sleep(0.02)
        return self.taken()


@contextmanager
def receiving(
    secret: bytes, answers: list[int] | None = None, *, delay: float = 0.0
) -> Iterator[Receiver]:
    """A receiver checking signatures with ``secret``; each request takes ``delay`` s."""
    receiver = Receiver(secret, list(answers or []))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(delay)
            headers = {k.lower(): v for k, v in self.headers.items()}
            signed = verify(receiver.secret, body, headers.get(HEADER.lower(), ""))
            with receiver.lock:
                status = receiver.answers.pop(0) if receiver.answers else 200
                receiver.received.append(
                    Received(json.loads(body), headers | {"status": str(status)}, signed)
                )
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
