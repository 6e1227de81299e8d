"""A worker that takes a migration over delivers the hook events its dead owner had not."""

from __future__ import annotations

import time

import pytest

from migrator.engine.coordinator import Coordinator
from migrator.engine.observers import HookEvent, HookName
from migrator.failpoints import Crash, Failpoints
from migrator.journal.store import Journal
from migrator.states import TERMINAL
from migrator.workers import Worker
from tests.conftest import Hosts

WAIT = 60.0


def test_a_takeover_delivers_from_the_dead_owner_s_cursor(db_url: str, hosts: Hosts) -> None:
    """The owner delivered up to Perform's intent, then died (its lease lapses); the
    worker's hooks get what followed: the recovery and the end, nothing before it."""
    first: list[HookEvent] = []
    seen: list[HookEvent] = []
    with Journal.open(db_url, lease_seconds=1.0) as journal:
        crashed = Coordinator(
            journal, hooks=[first.append], failpoints=Failpoints({"perform.intent": "raise"})
        )
        with pytest.raises(Crash):
            crashed.migrate("vm1", src=hosts.src, dst=hosts.dst)
        crashed.delivery.close()  # it delivered what it committed, then "died"
        [m] = journal.list()
        assert journal.delivered(m.id) == 5 and [h.event.seq for h in first][-1] == 5
        worker = Worker(journal, hooks=[seen.append], poll=0.1).start()
        try:
            deadline = time.monotonic() + WAIT
            while journal.get(m.id).state not in TERMINAL:
                assert time.monotonic() < deadline, "not taken over"
                time.sleep(0.05)
        finally:
            worker.stop()
            assert worker.join(WAIT)
    names = [h.name for h in seen]
    assert names[0] is HookName.RECOVERED and names[-1] is HookName.MIGRATION_FINISHED
    seqs = [h.event.seq for h in seen]
    assert seqs == sorted(seqs) and seqs[0] == 6
