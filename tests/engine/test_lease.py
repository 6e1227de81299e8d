"""A migration's lease is renewed whatever its driving thread is doing (docs/journal.md)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from migrator.drivers.api import PerformResult
from migrator.drivers.test import TestDriver
from migrator.engine.coordinator import Coordinator
from migrator.engine.observers import HookEvent, HookName
from migrator.engine.orphans import Recovered
from migrator.errors import UsageError
from migrator.journal import lifecycle
from migrator.journal.store import Journal
from migrator.states import State, Step
from tests.conftest import Hosts

LEASE = 1.5


def test_a_hook_sleeping_past_the_lease_delays_no_step(tmp_path: Path, hosts: Hosts) -> None:
    """The migration ends while its hook still sleeps (hooks are called by the delivery
    thread); closing the coordinator waits for the hook."""
    journal = Journal.open(f"sqlite:///{tmp_path / 'journal.db'}", lease_seconds=LEASE)
    slept = threading.Event()

    def slow(event: HookEvent) -> None:
        if event.name is HookName.STEP_STARTED and event.event.step is Step.PERFORM:
            time.sleep(3 * LEASE)
            slept.set()

    coordinator = Coordinator(journal, hooks=[slow])
    try:
        migration = coordinator.migrate("vm1", src=hosts.src, dst=hosts.dst)
        assert migration.state is State.CONFIRMED
        assert not slept.is_set()
    finally:
        coordinator.close()
        journal.close()
    assert slept.is_set()


@pytest.mark.parametrize(
    "options",
    [
        {"step_timeout": 0},
        {"step_timeout": -5},
        {"step_timeout": float("nan")},
        {"step_timeout": float("inf")},
        {"confirm_attempts": 0},
        {"retry_backoff": float("nan")},
        {"retry_backoff": -1},
    ],
    ids=str,
)
def test_a_coordinator_refuses_times_and_counts_that_mean_nothing(
    options: dict[str, float], journal: Journal
) -> None:
    with pytest.raises(UsageError):
        Coordinator(journal, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "request_",
    [
        {"domain": ""},
        {"domain": "x" * 300},
        {"domain": "vm\udcff"},
        {"dname": ""},
        {"bandwidth": -1},
        {"bandwidth": 2**40},
        {"protocol": 9},
    ],
    ids=str,
)
def test_a_migration_request_out_of_bounds_is_refused_before_journaling(
    request_: dict[str, object], journal: Journal, hosts: Hosts
) -> None:
    coordinator = Coordinator(journal)
    args: dict[str, object] = {"domain": "vm1", **request_}
    domain = args.pop("domain")
    with pytest.raises(UsageError):
        coordinator.migrate(domain, src=hosts.src, dst=hosts.dst, **args)  # type: ignore[arg-type]
    assert journal.list() == []


def test_one_keeper_thread_renews_the_leases_of_concurrent_migrations(
    tmp_path: Path, hosts: Hosts
) -> None:
    """Three migrations of one coordinator in three threads, each held in Perform by its
    driver sleeping past the lease: one keeper thread renews all three leases, so a
    recover meanwhile claims none of them."""
    url = f"sqlite:///{tmp_path / 'journal.db'}"
    Journal.open(url).close()
    journal = Journal(lifecycle.create_engine(url), lease_seconds=LEASE)
    domains = ["vm1", "vm2", "vm3"]
    for name in domains[1:]:
        hosts.src.define(name, memory_mib=1)
    held = threading.Barrier(len(domains) + 1)
    keepers: list[int] = []
    reports: list[list[Recovered]] = []

    class Held(TestDriver):
        def perform(self, *args: Any, **kwargs: Any) -> PerformResult:
            held.wait()
            time.sleep(3 * LEASE)
            return super().perform(*args, **kwargs)

    src = Held(hosts.src_uri)
    coordinator = Coordinator(journal)
    ends: dict[str, State] = {}

    def one(name: str) -> None:
        ends[name] = coordinator.migrate(name, src=src, dst=hosts.dst).state

    threads = [threading.Thread(target=one, args=(name,)) for name in domains]
    before = set(_keeper_threads())  # other tests' coordinators may still have theirs
    try:
        for t in threads:
            t.start()
        held.wait()  # all three are in Perform's intent, their hooks sleeping
        time.sleep(2 * LEASE)
        keepers.append(len(set(_keeper_threads()) - before))
        reports.append(Coordinator(journal, coordinator_id="elsewhere:1:other").recover())
        for t in threads:
            t.join()
    finally:
        coordinator.close()
        journal.close()
    assert ends == dict.fromkeys(domains, State.CONFIRMED)
    assert keepers == [1]
    [found] = reports
    assert len(found) == 3 and not any(r.claimed for r in found), found


def _keeper_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "migrator-lease"]
