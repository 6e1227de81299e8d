"""``GET /v1/events``: the journal's committed events as Server-Sent Events.

Each event's ``id`` is its journal-wide position. A client that reconnects with
``Last-Event-ID`` (browsers' ``EventSource`` does it by itself) gets every event after it
exactly once, in position order, whichever server it reaches and however the writers'
commits interleaved: the stream is ``Journal.events_after`` read from that position
(docs/journal.md, "Positions"), by the stream itself or, once it has caught up, by the
server's one shared reader (``hub.py``), whose reads are the same. Progress samples of a
long step (``event: progress``) carry no id: they are the last sample, not history.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any

import anyio
from anyio import to_thread
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from migrator.errors import JournalError, UsageError
from migrator.jsonform import event_dict
from migrator.records import Entry
from migrator.service.auth import READ
from migrator.service.problems import responses
from migrator.service.state import Service, service
from migrator.states import TERMINAL, State

router = APIRouter(tags=["events"])
log = logging.getLogger(__name__)
PAGE = 500
PROGRESS_EVERY = 1.0
"""Seconds between two looks at the progress of the migrations in flight."""
RETRY_MS = 1000
"""How long a browser waits before it reconnects (the stream's ``retry:``)."""
IN_FLIGHT = [s for s in State if s not in TERMINAL | {State.IN_DOUBT, State.QUEUED}]
MEDIA_TYPE = "text/event-stream"


@router.get(
    "/v1/events",
    response_class=StreamingResponse,
    responses={
        200: {"content": {MEDIA_TYPE: {}}, "description": "Server-Sent Events, without end"},
        **responses(401, 403, 404, 409, 422, 503),
    },
)
async def events(
    request: Request,
    migration: Annotated[str | None, Query(min_length=1, max_length=36)] = None,
    after: Annotated[int | None, Query(ge=0, description="Start after this position.")] = None,
    progress: bool = False,
    last_event_id: Annotated[str | None, Header(max_length=24)] = None,
    _auth: None = READ,
) -> StreamingResponse:
    """Every committed event (of one migration with ``migration``) after ``Last-Event-ID``
    (else ``after``, else from the first), each with its position as its ``id``; with
    ``progress``, the transfer samples of the migrations in flight as ``event: progress``."""
    svc = service(request)
    start = _position(last_event_id) if last_event_id is not None else after
    mid = None
    if migration is not None:
        mid = (await to_thread.run_sync(svc.journal.find, migration)).id
    tail = Tail(svc, start, mid, progress)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(tail.lines(request), media_type=MEDIA_TYPE, headers=headers)


def _position(text: str) -> int:
    if not text.isdigit():
        raise UsageError(f"Last-Event-ID {text[:24]!r} is not an event position")
    return int(text)


def frame(entry: Entry) -> str:
    """One journal event as an SSE message whose id is its position."""
    data = {
        "position": entry.position,
        "migration_id": entry.event.migration_id,
        "reason": entry.reason,
        **event_dict(entry.event),
    }
    return f"id: {entry.position}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@dataclass
class Tail:
    """One subscriber's reading of the journal, from ``position`` on."""

    svc: Service
    position: int | None
    migration_id: str | None
    progress: bool
    _samples: dict[str, Any] = field(default_factory=dict)
    _looked: float = 0.0

    async def lines(self, request: Request) -> AsyncIterator[str]:
        yield f"retry: {RETRY_MS}\n\n"
        hub = self.svc.hub
        try:
            await hub.start()
        except JournalError as exc:  # this stream reads the journal itself meanwhile
            log.warning("event stream: %s", exc)
        quiet_since = time.monotonic()
        while not await request.is_disconnected():
            shared = hub.covers(self.position)
            read = (
                hub.after(self.position, self.migration_id, PAGE) if shared else await self._read()
            )
            for entry in read:
                yield frame(entry)
                self.position = entry.position
            for sample in await self._progress():
                yield sample
            if read:
                quiet_since = time.monotonic()
                if len(read) == PAGE:
                    continue
            elif time.monotonic() - quiet_since >= self.svc.heartbeat:
                yield ": heartbeat\n\n"
                quiet_since = time.monotonic()
            if shared:
                await hub.wait(PROGRESS_EVERY if self.progress else self.svc.heartbeat)
            else:
                await anyio.sleep(self.svc.poll)

    async def _read(self) -> list[Entry]:
        journal = self.svc.journal
        try:
            return await to_thread.run_sync(
                journal.events_after, self.position, PAGE, self.migration_id
            )
        except JournalError as exc:  # the database restarts: read again at the next poll
            log.warning("event stream: %s", exc)
            return []

    async def _progress(self) -> list[str]:
        if not self.progress or time.monotonic() - self._looked < PROGRESS_EVERY:
            return []
        self._looked = time.monotonic()
        try:
            found = await to_thread.run_sync(self._in_flight)
        except JournalError as exc:
            log.warning("event stream: %s", exc)
            return []
        out = []
        for mid, state, sample in found:
            if sample is not None and self._samples.get(mid) != sample:
                self._samples[mid] = sample
                data = {"migration_id": mid, "state": state, "progress": sample}
                out.append(f"event: progress\ndata: {json.dumps(data)}\n\n")
        return out

    def _in_flight(self) -> list[tuple[str, str, Any]]:
        journal = self.svc.journal
        if self.migration_id is not None:
            m = journal.get(self.migration_id)
            return [(m.id, m.state.value, m.progress)]
        return [
            (m.id, m.state.value, m.progress) for m in journal.list(states=IN_FLIGHT, limit=200)
        ]
