"""``recover`` claims the orphans a chunk at a time (``migrator/engine/orphans.py``):
their events read in one query, their claims in one statement, fencing kept exact."""

from __future__ import annotations

import collections
import time
from collections.abc import Sequence
from typing import Any

import pytest

from migrator.engine.coordinator import Coordinator
from migrator.failpoints import Crash, Failpoints
from migrator.journal import lifecycle
from migrator.journal.store import Journal
from migrator.records import Change, Event, EventKind, Migration
from migrator.states import State
from tests.conftest import Hosts


class Counting(Journal):
    """A journal that counts the reads and claims recovery makes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: collections.Counter[str] = collections.Counter()

    def history(self, migration_id: str) -> list[Event]:
        self.calls["history"] += 1
        return super().history(migration_id)

    def histories(self, ids: Sequence[str]) -> dict[str, list[Event]]:
        self.calls["histories"] += 1
        return super().histories(ids)

    def claim(self, migration: Migration, owner: str) -> Migration:
        self.calls["claim"] += 1
        return super().claim(migration, owner)

    def claim_all(self, found: Sequence[Migration], owner: str) -> dict[str, Migration]:
        self.calls["claim_all"] += 1
        return super().claim_all(found, owner)


class Contested(Journal):
    """A journal where another coordinator claims ``victim`` just after the orphans were
    read, before recovery claims them."""

    victim = ""

    def histories(self, ids: Sequence[str]) -> dict[str, list[Event]]:
        if self.victim in ids:
            self.claim(self.get(self.victim), "elsewhere:1:other")
        return super().histories(ids)


class Aging(Journal):
    """A journal where, once the recovery of ``first`` is journaled, the claim of
    ``second`` ages past a third of the lease and another coordinator takes it."""

    first = second = ""

    def record_changes(self, migration: Migration, changes: Sequence[Change], **kw: Any) -> Any:
        recorded = super().record_changes(migration, changes, **kw)
        recovery = any(c.draft.kind == EventKind.RECOVERY for c in changes)
        if migration.id == self.first and recovery and self.second:
            second, self.second = self.second, ""
            time.sleep(self.lease_seconds / 2)
            self.claim(self.get(second), "elsewhere:1:other")
        return recorded


def _orphans(db_url: str, hosts: Hosts, count: int) -> list[Migration]:
    """``count`` migrations whose coordinator died after Perform's intent."""
    made = []
    with Journal.open(db_url) as journal:
        crashing = Coordinator(journal, failpoints=Failpoints({"perform.intent": "raise"}))
        for i in range(1, count + 1):
            if i > 1:  # vm1 is there already
                hosts.src.define(f"vm{i}", memory_mib=1)
            with pytest.raises(Crash):
                crashing.migrate(f"vm{i}", src=hosts.src, dst=hosts.dst)
        crashing.close()
        made = journal.list()
    return made


def _open(cls: type[Journal], db_url: str, lease_seconds: float = 30.0) -> Any:
    return cls(lifecycle.create_engine(db_url), lease_seconds=lease_seconds)


def test_recover_reads_and_claims_a_chunk_of_orphans_at_once(db_url: str, hosts: Hosts) -> None:
    _orphans(db_url, hosts, 6)
    journal = _open(Counting, db_url)
    coordinator = Coordinator(journal, retry_backoff=0.0)
    try:
        reports = coordinator.recover(steal=True, workers=2)
    finally:
        coordinator.close()
        journal.close()
    assert [r.result for r in reports] == [State.ROLLED_BACK] * 6
    assert journal.calls == {"histories": 2, "claim_all": 2}  # the first, then the rest


def test_an_orphan_claimed_by_another_after_it_was_read_is_not_acted_on(
    db_url: str, hosts: Hosts
) -> None:
    made = _orphans(db_url, hosts, 3)
    journal = _open(Contested, db_url)
    journal.victim = made[1].id
    coordinator = Coordinator(journal, retry_backoff=0.0)
    try:
        reports = coordinator.recover(steal=True)
    finally:
        coordinator.close()
    by_id = {r.id: r for r in reports}
    lost = by_id[made[1].id]
    assert (lost.claimed, lost.result, lost.note) == (
        False,
        None,
        "claimed by another coordinator",
    )
    after = journal.get(made[1].id)
    assert (after.state, after.owner, after.fence) == (State.PERFORMING, "elsewhere:1:other", 2)
    assert all(e.kind != EventKind.RECOVERY for e in journal.history(made[1].id))
    assert {by_id[m.id].result for m in (made[0], made[2])} == {State.ROLLED_BACK}
    journal.close()


@pytest.mark.no_replay  # the second orphan is left claimed by a coordinator that did nothing
def test_an_orphan_whose_claim_aged_and_was_taken_meanwhile_is_not_acted_on(
    db_url: str, hosts: Hosts
) -> None:
    """Claimed with its chunk, then taken by another while the one before it was being
    recovered: recovery checks it still owns it before acting."""
    lease = 1.0
    made = _orphans(db_url, hosts, 2)
    journal = _open(Aging, db_url, lease_seconds=lease)
    journal.first, journal.second = made[0].id, made[1].id
    coordinator = Coordinator(journal, retry_backoff=0.0)
    try:
        first, second = coordinator.recover(steal=True, workers=1)
    finally:
        coordinator.close()
    assert (first.id, first.result) == (made[0].id, State.ROLLED_BACK)
    assert (second.id, second.claimed, second.note) == (
        made[1].id,
        False,
        "claimed by another coordinator",
    )
    assert all(e.kind != EventKind.RECOVERY for e in journal.history(made[1].id))
    journal.close()
