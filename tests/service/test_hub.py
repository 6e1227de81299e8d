"""The server's one reader of the log (``service/hub.py``): it follows the journal from the
present, holds what it read in position order, and when its ring is full moves its floor
so that a stream it no longer covers reads the journal itself."""

from __future__ import annotations

import asyncio

import pytest

from migrator.journal.store import Journal
from migrator.service import hub as hubs
from tests.journal.test_log import migrate


def _keys(entries: list) -> list[tuple[int, str, int]]:
    return [(e.position, e.event.migration_id, e.event.seq) for e in entries]


def test_the_hub_holds_every_event_after_the_present_in_position_order(journal: Journal) -> None:
    """(On PostgreSQL the present is below every transaction still running on the server,
    another test's too, so it may even be before the first event: it is read once, by the
    hub, and the test follows from wherever it is.)"""
    migrate(journal)

    async def follow() -> hubs.Hub:
        hub = hubs.Hub(journal, poll=0.01)
        await hub.start()
        assert hub.covers(hub.floor)
        assert hub.covers(None) == (hub.floor is None)
        await asyncio.to_thread(migrate, journal)
        await asyncio.to_thread(migrate, journal)
        async with asyncio.timeout(30):
            while _keys(hub.entries) != _keys(journal.events_after(hub.floor, 1000)):
                await hub.wait(0.05)
        hub.stop()
        return hub

    hub = asyncio.run(follow())
    before = hub.floor
    assert _keys(hub.after(before, None, 1000)) == _keys(journal.events_after(before, 1000))
    one = hub.entries[-1].event.migration_id
    assert _keys(hub.after(before, one, 1000)) == _keys(journal.events_after(before, 1000, one))
    assert _keys(hub.after(hub.entries[3].position, None, 2)) == _keys(hub.entries[4:6])


def test_a_full_ring_moves_the_floor_past_what_it_dropped(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hubs, "RING", 4)
    monkeypatch.setattr(hubs, "PAGE", 3)

    covered: list[bool] = []

    async def follow() -> hubs.Hub:
        hub = hubs.Hub(journal, poll=0.01)
        await hub.start()
        for _ in range(2):
            await asyncio.to_thread(migrate, journal)
        async with asyncio.timeout(30):
            while not hub.entries or hub.entries[-1].position != journal.last_position():
                await hub.wait(0.05)
        every = journal.events_after(None, 1000)
        covered.extend([hub.covers(every[0].position), hub.covers(every[-2].position)])
        hub.stop()
        return hub

    hub = asyncio.run(follow())
    every = journal.events_after(None, 1000)
    assert len(hub.entries) <= 4 + 3
    assert hub.floor == every[len(every) - len(hub.entries) - 1].position
    assert _keys(hub.entries) == _keys(every[-len(hub.entries) :])
    assert covered == [False, True]
