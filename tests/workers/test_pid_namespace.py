"""A worker in another PID namespace with the same host name (a container beside another)
never takes a live worker's migration over: the owner's PID means nothing there
(``engine/ownership.py``, docs/workers.md "Automatic takeover")."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from migrator.engine.coordinator import Coordinator
from migrator.engine.ownership import place
from migrator.inspect import show
from migrator.journal.queue import Queue
from migrator.journal.store import Journal
from migrator.states import TERMINAL, State
from migrator.workers import Worker
from tests.conftest import ROOT, Hosts

UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child=SIGTERM"]


def worker(db: str, log: Path, *, contained: bool) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "migrator", "--db", db, "worker", "--poll", "0.05"]
    if contained:
        user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
        argv = [*UNSHARE[:1], *user, *UNSHARE[1:], *argv]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def wait_until(what: str, ready: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL if proc.args[0] == "unshare" else signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_a_worker_in_another_pid_namespace_takes_nothing_from_a_live_one(
    db_url: str, hosts: Hosts, tmp_path: Path
) -> None:
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed: .ci/run installs it")
    hosts.src.set_fault("perform", "slow", seconds=8)  # the contained one starts meanwhile
    with Journal.open(db_url) as journal:
        coordinator = Coordinator(journal)
        mid = coordinator.submit("vm1", src=hosts.src, dst=hosts.dst).id
        coordinator.close()
    live = worker(db_url, tmp_path / "live.log", contained=False)
    contained = None
    try:
        with Journal.open(db_url) as journal:
            wait_until("Perform", lambda: journal.get(mid).state is State.PERFORMING)
            owner = journal.get(mid).owner
            contained = worker(db_url, tmp_path / "contained.log", contained=True)
            wait_until("the contained worker", lambda: len(Queue(journal).workers()) == 2)
            time.sleep(1.0)  # 20 of its polls, while the live worker is in Perform
            assert journal.get(mid).owner == owner
            assert journal.get(mid).state is State.PERFORMING
            wait_until("the end", lambda: journal.get(mid).state in TERMINAL)
            shown = show(journal, mid)
    finally:
        for proc in (p for p in (contained, live) if p is not None):
            stop(proc)
    log = (tmp_path / "contained.log").read_text()
    assert shown["state"] == "CONFIRMED", (shown["reason"], log)
    assert {e["coordinator"] for e in shown["events"]} == {owner}, log
    assert not any("previous_owner" in (e["detail"] or {}) for e in shown["events"])


def test_a_worker_by_lease_only_waits_for_the_lease_of_a_dead_owner(db_url: str) -> None:
    """``--by-lease-only``: an owner whose process is gone keeps its migration until its
    lease lapses; without it the migration is taken over at once."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    owner = f"{socket.gethostname()}:{gone.pid}:dead:{place()}"
    with Journal.open(db_url) as journal:
        m = journal.create(
            domain="vm1", src="test:///a", dst="test:///b", protocol=3, flags=1, bandwidth=0,
            owner=owner,
        )  # fmt: skip
        patient = Worker(journal, by_lease_only=True)
        assert patient.take_over() == 0
        assert (journal.get(m.id).owner, journal.get(m.id).fence) == (owner, m.fence)
        eager = Worker(journal)
        try:
            assert eager.take_over() == 1
            assert journal.get(m.id).owner == eager.id
        finally:
            for thread in eager.jobs.threads():
                thread.join(30)
            eager.jobs.close()
