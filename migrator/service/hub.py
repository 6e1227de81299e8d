"""One reader of the journal's log per server, shared by the streams that have caught up.

``Hub`` reads ``Journal.events_after`` from its own position at each poll and keeps the
last ``RING`` entries in position order. A stream whose position the ring covers takes
what follows it from the ring; one further behind (a client resuming from long ago) reads
the journal itself until it has caught up. Both give the same events in the same order:
the hub's reads are the resumable reads a client's would be (docs/journal.md,
"Positions"), so an entry it has not read yet can only have a higher position than every
one it has.
"""

from __future__ import annotations

import asyncio
import bisect
import logging

import anyio
from anyio import to_thread

from migrator.errors import JournalError
from migrator.journal.store import Journal
from migrator.records import Entry

log = logging.getLogger(__name__)
RING = 20_000
"""Entries kept: what a stream that fell this far behind still reads from memory."""
PAGE = 500


class Hub:
    """The shared reader of one journal; started by its first stream, in its event loop."""

    def __init__(self, journal: Journal, *, poll: float) -> None:
        self.journal = journal
        self.poll = poll
        self.entries: list[Entry] = []
        self.floor: int | None = None
        """Every event past ``floor`` (None: from the first) up to the last entry is held."""
        self._new = asyncio.Event()
        self._started = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start reading from the present (the journal's last readable position), unless
        reading already: streams further back read the journal until they get there."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
            try:
                self.floor = await to_thread.run_sync(self.journal.last_position)
            except BaseException:
                self._task.cancel()
                self._task = None
                raise
            self._started.set()

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def covers(self, position: int | None) -> bool:
        """Whether every event after ``position`` is, or will be, in the ring."""
        if self._task is None or self._task.done() or not self._started.is_set():
            return False
        return self.floor is None or (position is not None and position >= self.floor)

    def after(self, position: int | None, migration_id: str | None, limit: int) -> list[Entry]:
        """Up to ``limit`` held entries past ``position``, of ``migration_id`` if given."""
        start = 0 if position is None else bisect.bisect_right(
            self.entries, position, key=lambda e: e.position
        )  # fmt: skip
        if migration_id is None:
            return self.entries[start : start + limit]
        found = (e for e in self.entries[start:] if e.event.migration_id == migration_id)
        return [e for _, e in zip(range(limit), found, strict=False)]

    async def wait(self, seconds: float) -> None:
        """Until new entries arrive, or ``seconds`` pass."""
        new = self._new
        with anyio.move_on_after(seconds):
            await new.wait()

    async def _run(self) -> None:
        await self._started.wait()
        position = self.floor
        while True:
            try:
                read = await to_thread.run_sync(self.journal.events_after, position, PAGE)
            except JournalError as exc:  # the database restarts: read again at the next poll
                log.warning("event stream: %s", exc)
                read = []
            if read:
                position = read[-1].position
                self._hold(read)
            if len(read) < PAGE:
                await anyio.sleep(self.poll)

    def _hold(self, read: list[Entry]) -> None:
        self.entries.extend(read)
        if len(self.entries) > RING + PAGE:
            dropped = len(self.entries) - RING
            self.floor = self.entries[dropped - 1].position
            del self.entries[:dropped]
        self._new.set()
        self._new = asyncio.Event()
