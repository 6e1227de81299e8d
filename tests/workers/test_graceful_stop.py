"""A stopping worker never abandons a migration: past the point of no return it finishes,
before it, it hands the migration over at a step boundary (docs/workers.md)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

from migrator.engine.coordinator import Coordinator
from migrator.journal.store import Journal
from migrator.records import EventKind, Migration
from migrator.states import TERMINAL, State
from migrator.workers import Worker
from tests.conftest import Hosts


def _submit(journal: Journal, hosts: Hosts) -> Migration:
    coordinator = Coordinator(journal)
    try:
        return coordinator.submit("vm1", src=hosts.src, dst=hosts.dst)
    finally:
        coordinator.close()


def _wait_for(journal: Journal, mid: str, states: set[State], timeout: float = 30) -> Migration:
    deadline = time.monotonic() + timeout
    while (m := journal.get(mid)).state not in states:
        assert time.monotonic() < deadline, f"still {m.state}"
        time.sleep(0.05)
    return m


def _worker_process(url: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "migrator", "--db", url, "worker", "--poll", "0.1", "--quiet"]
    return subprocess.Popen(cmd, stderr=subprocess.PIPE)


def test_sigterm_during_perform_finishes_the_migration(db_url: str, hosts: Hosts) -> None:
    hosts.src.set_fault("perform", "slow", seconds=2.0)
    with Journal.open(db_url) as journal:
        m = _submit(journal, hosts)
        proc = _worker_process(db_url)
        _wait_for(journal, m.id, {State.PERFORMING})
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert journal.get(m.id).state is State.CONFIRMED
    assert hosts.states("vm1") == ("absent", "running")


def test_sigterm_before_perform_hands_over_at_a_step_boundary(db_url: str, hosts: Hosts) -> None:
    hosts.dst.set_fault("prepare", "slow", seconds=1.5)
    with Journal.open(db_url) as journal:
        m = _submit(journal, hosts)
        proc = _worker_process(db_url)
        _wait_for(journal, m.id, {State.PREPARING})
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        left = journal.get(m.id)
        assert left.state is State.PREPARED  # Prepare finished; Perform never started
        assert journal.history(m.id)[-1].kind == EventKind.OK  # no intent without its step
        assert left.lease_expires_at is not None
        assert left.lease_expires_at <= datetime.now(UTC)  # released: others take it at once
        taker = Worker(journal, poll=0.05).start()
        try:
            done = _wait_for(journal, m.id, set(TERMINAL))
        finally:
            taker.stop()
            assert taker.join(30)
        assert done.owner == taker.id
        assert any("previous_owner" in (e.detail or {}) for e in journal.history(m.id))


def test_stop_now_hands_over_after_the_step_in_flight(db_url: str, hosts: Hosts) -> None:
    hosts.src.set_fault("perform", "slow", seconds=1.0)
    with Journal.open(db_url) as journal:
        m = _submit(journal, hosts)
        worker = Worker(journal, poll=0.05).start()
        _wait_for(journal, m.id, {State.PERFORMING})
        worker.stop(now=True)
        assert worker.join(30)
        assert journal.get(m.id).state is State.PERFORMED
        taker = Worker(journal, poll=0.05).start()
        try:
            assert _wait_for(journal, m.id, set(TERMINAL)).state is State.CONFIRMED
        finally:
            taker.stop()
            assert taker.join(30)


def test_a_stopped_worker_claims_nothing_new(db_url: str, hosts: Hosts) -> None:
    """Submitted while a stopping worker still runs (finishing a Perform), a migration stays
    queued: neither the worker's loop nor a poll of its own claims it."""
    hosts.src.define("vm2", memory_mib=1)
    hosts.src.set_fault("perform", "slow", seconds=2.0)
    with Journal.open(db_url) as journal:
        running = _submit(journal, hosts)
        worker = Worker(journal, poll=0.05).start()
        try:
            _wait_for(journal, running.id, {State.PERFORMING})
            worker.stop()
            coordinator = Coordinator(journal)
            try:
                later = coordinator.submit("vm2", src=hosts.src, dst=hosts.dst)
            finally:
                coordinator.close()
            assert worker.claim() == 0  # what each poll does, asked of the stopping worker
            assert journal.get(running.id).state is State.PERFORMING, "the worker still runs"
        finally:
            assert worker.join(30)
        assert journal.get(running.id).state is State.CONFIRMED  # past Perform: finished
        left = journal.get(later.id)
        assert (left.state, left.owner) == (State.QUEUED, None)
        assert journal.history(later.id) == []
        Coordinator(journal).abort(later.id)  # leave nothing queued for the replay check
