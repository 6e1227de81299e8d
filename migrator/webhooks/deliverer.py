"""The webhook deliverer: each endpoint's thread tails the journal's committed events by
journal-wide position and POSTs each one, signed, retried with backoff until it is taken.

- **In order.** An endpoint is given events in position order, one request at a time, and
  the next only once the previous one got a 2xx: one migration's events (whose positions
  grow with their seq) arrive in seq order.
- **At least once, after a crash too.** The endpoint's cursor (``webhook_cursors``) moves
  forward only after the events up to it were taken (every ``SAVE_EVERY`` seconds and at
  the end of each page), so a deliverer killed at any point resumes from it and repeats
  at most what was taken since; ``Migrator-Event-Id`` (the position) lets a receiver
  drop a repeat.
- **Never blocking the engine.** The deliverer only reads the journal and writes its own
  cursors: a slow or failing endpoint delays only itself.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from urllib.parse import unquote, urlsplit, urlunsplit

from migrator.errors import JournalUnavailable, MigratorError
from migrator.journal.store import Journal
from migrator.jsonform import event_dict, iso
from migrator.records import Entry
from migrator.redaction import redact
from migrator.traceids import traceparent
from migrator.webhooks.config import Endpoint
from migrator.webhooks.signing import HEADER, sign

log = logging.getLogger("migrator.webhooks")

PAGE = 100
"""Events read from the journal at a time."""
SAVE_EVERY = 0.5
"""Seconds of deliveries after which the cursor is saved before the page ends."""
REQUEST_TIMEOUT = 10.0
"""Seconds a request may take before it counts as failed (and is tried again)."""
FIRST_WAIT = 0.5
"""Seconds before the second attempt of a failed request; each next wait doubles."""
MAX_WAIT = 60.0
"""The longest wait between two attempts."""


class DeliveryFailed(MigratorError):
    """A request to an endpoint that did not get a 2xx (it is tried again)."""


def body_of(entry: Entry, migration_id: str) -> bytes:
    """The JSON body POSTed for ``entry``: where it is in the journal, what it says, and the
    event as ``migrator show --json`` gives it."""
    event = entry.event
    payload = {
        "position": entry.position,
        "migration_id": migration_id,
        "seq": event.seq,
        "kind": event.kind.value,
        "state": event.state.value,
        "step": event.step.value if event.step else None,
        "time": iso(event.at),
        "reason": entry.reason,
        "event": event_dict(event),
    }
    return json.dumps(payload, ensure_ascii=True, separators=(",", ":")).encode()


def post(url: str, body: bytes, headers: dict[str, str], *, timeout: float) -> int:
    """POST ``body`` to ``url``; its status, or ``DeliveryFailed`` unless it is 2xx. A user
    and password in the URL are sent as Basic authentication, never logged."""
    parts, shown = urlsplit(url), redact(url)
    request_headers = {"Content-Type": "application/json", **headers}
    if parts.username is not None:
        user = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        request_headers["Authorization"] = "Basic " + base64.b64encode(user.encode()).decode()
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        netloc += f":{parts.port}" if parts.port else ""
        url = urlunsplit(parts._replace(netloc=netloc))
    request = urllib.request.Request(url, data=body, headers=request_headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise DeliveryFailed(f"{shown}: {type(exc).__name__}: {exc}") from None
    if not 200 <= status < 300:
        raise DeliveryFailed(f"{shown}: HTTP {status}")
    return status


class Webhooks:
    """Delivers the journal's committed events to ``endpoints``, one thread each.

    ``start`` returns at once; ``stop`` ends the threads (a request under way finishes or
    times out). ``run`` starts, waits until ``stop`` is called (from a signal handler, say),
    and returns once stopped: what ``migrator webhooks run`` does.
    """

    def __init__(
        self,
        journal: Journal,
        endpoints: Sequence[Endpoint],
        *,
        poll: float = 0.5,
        first_wait: float = FIRST_WAIT,
        max_wait: float = MAX_WAIT,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.journal = journal
        self.endpoints = list(endpoints)
        self.poll = poll
        self.first_wait, self.max_wait, self.timeout = first_wait, max_wait, timeout
        self._stopping = threading.Event()
        self._wakes = [threading.Event() for _ in self.endpoints]  # one per thread
        self._threads: list[threading.Thread] = []
        self._stop_listening: Callable[[], None] | None = None

    def start(self) -> None:
        """Start one thread per endpoint; each resumes from its cursor in the journal."""
        self._stopping.clear()
        self._stop_listening = self.journal.listen(lambda _mid, _owner: self._wake_all())
        for endpoint, wake in zip(self.endpoints, self._wakes, strict=True):
            thread = threading.Thread(
                target=self._serve,
                args=(endpoint, wake),
                name=f"webhook-{endpoint.name}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float | None = None) -> None:
        """Stop delivering; wait up to ``timeout`` seconds for the threads to end."""
        self._stopping.set()
        self._wake_all()
        if self._stop_listening is not None:
            self._stop_listening()
            self._stop_listening = None
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        self._threads = [t for t in self._threads if t.is_alive()]

    def request_stop(self) -> None:
        """Make ``run`` return (safe in a signal handler: it only sets flags)."""
        self._stopping.set()
        self._wake_all()

    def _wake_all(self) -> None:
        for wake in self._wakes:
            wake.set()

    def run(self) -> None:
        """``start``, then wait until ``request_stop`` (or ``stop``) is called."""
        self.start()
        self._stopping.wait()
        self.stop(timeout=self.timeout + 1)

    # -- one endpoint's thread ----------------------------------------------------------

    def _serve(self, endpoint: Endpoint, wake: threading.Event) -> None:
        cursor: int | None = None
        while not self._stopping.is_set():
            try:
                if cursor is None:
                    cursor = self._first_cursor(endpoint)
                cursor, more = self._page(endpoint, cursor)
            except DeliveryFailed:
                return  # stopped while it was retried
            except JournalUnavailable as exc:
                log.warning("webhook %s: journal unavailable: %s", endpoint.name, exc)
                more = False
            except Exception:  # a bug must not end delivery for good
                log.exception("webhook %s: delivery failed", endpoint.name)
                more = False
            if not more:
                wake.wait(self.poll)
                wake.clear()

    def _first_cursor(self, endpoint: Endpoint) -> int:
        """The endpoint's cursor in the journal; a new endpoint's is written first: the
        last position now (``from = "now"``) or 0, before every event (``"start"``)."""
        known = self.journal.webhook_position(endpoint.name)
        if known is not None:
            return known
        start = (self.journal.last_position() or 0) if endpoint.start == "now" else 0
        self.journal.set_webhook_position(endpoint.name, start)
        log.info("webhook %s: new endpoint, from position %d", endpoint.name, start)
        return start

    def _page(self, endpoint: Endpoint, cursor: int) -> tuple[int, bool]:
        """Deliver one page of events past ``cursor``; the new cursor, and whether the
        page was full (more may follow at once)."""
        entries = self.journal.events_after(cursor, PAGE)
        if not entries:
            return cursor, False
        wanted = [e for e in entries if endpoint.wants(e.event.kind)]
        traces = self.journal.trace_ids(sorted({e.event.migration_id for e in wanted}))
        saved = time.monotonic()
        for entry in entries:
            if endpoint.wants(entry.event.kind):
                mid = entry.event.migration_id
                self._deliver(endpoint, entry, traceparent(traces.get(mid)))
            cursor = entry.position
            if time.monotonic() - saved >= SAVE_EVERY:
                self.journal.set_webhook_position(endpoint.name, cursor)
                saved = time.monotonic()
        self.journal.set_webhook_position(endpoint.name, cursor)
        return cursor, len(entries) == PAGE

    def _pause(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def _deliver(self, endpoint: Endpoint, entry: Entry, parent: str | None) -> None:
        """POST one event until it gets a 2xx, waiting longer after each failure (tenacity);
        ``DeliveryFailed`` only once stopping."""
        import tenacity

        body = body_of(entry, entry.event.migration_id)
        headers = {"Migrator-Event-Id": str(entry.position)}
        if parent is not None:
            headers["traceparent"] = parent

        def attempt() -> None:
            signed = {**headers, HEADER: sign(endpoint.secret, body)}
            post(endpoint.url, body, signed, timeout=self.timeout)

        def failed(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            log.warning(
                "webhook %s: event %d not delivered (attempt %d): %s",
                endpoint.name, entry.position, state.attempt_number, error,
            )  # fmt: skip

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(DeliveryFailed),
            wait=tenacity.wait_exponential(multiplier=self.first_wait, max=self.max_wait),
            stop=lambda _state: self._stopping.is_set(),
            sleep=self._pause,
            before_sleep=failed,
            reraise=True,
        )
        retrying(attempt)
