"""``migrator submit``, ``worker`` and ``workers`` as a user runs them (docs/workers.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from migrator.journal.store import Journal
from migrator.states import TERMINAL, State
from tests.conftest import ROOT, Hosts, run_cli


def test_submit_prints_the_id_of_a_queued_migration(db_url: str, hosts: Hosts) -> None:
    proc = run_cli("submit", "vm1", "--src", hosts.src_uri, "--dst", hosts.dst_uri, db=db_url)
    assert proc.returncode == 0, proc.stderr
    mid = proc.stdout.strip()
    with Journal.open(db_url) as journal:
        assert journal.get(mid).state is State.QUEUED
    listed = run_cli("list", "--state", "QUEUED", "--json", db=db_url)
    assert [m["id"] for m in json.loads(listed.stdout)] == [mid]
    assert run_cli("abort", mid, db=db_url).returncode == 0  # FAILED, nothing was called
    assert hosts.states("vm1") == ("running", "absent")


def test_submit_checks_the_request_as_migrate_does(db_url: str, hosts: Hosts) -> None:
    proc = run_cli("submit", "nope", "--src", hosts.src_uri, "--dst", hosts.dst_uri, db=db_url)
    assert proc.returncode == 2
    assert "not found" in proc.stderr


def test_submit_json_then_a_worker_drives_it(db_url: str, hosts: Hosts) -> None:
    args = ("submit", "vm1", "--src", hosts.src_uri, "--dst", hosts.dst_uri, "--live", "--json")
    submitted = json.loads(run_cli(*args, db=db_url).stdout)
    assert submitted["state"] == "QUEUED" and "live" in submitted["flag_names"]
    from migrator.workers import Worker

    with Journal.open(db_url) as journal:
        worker = Worker(journal, poll=0.05).start()
        try:
            assert _ended(journal, submitted["id"]) is State.CONFIRMED
        finally:
            worker.stop()
            assert worker.join(30)
    owned = run_cli("list", "--owner", worker.id, "--json", db=db_url)
    assert [m["id"] for m in json.loads(owned.stdout)] == [submitted["id"]]
    shown = json.loads(run_cli("show", submitted["id"], "--json", db=db_url).stdout)
    assert [o["owner"] for o in shown["owners"]] == [worker.id]


def _ended(journal: Journal, mid: str, deadline_s: float = 60.0) -> State:
    """The end state ``mid`` reaches; fails the test, naming the state it is stuck in, if it
    reaches none within ``deadline_s`` (a guard against a hang, not a timing check)."""
    deadline = time.monotonic() + deadline_s
    while (state := journal.get(mid).state) not in TERMINAL:
        if time.monotonic() > deadline:
            pytest.fail(f"migration {mid} still {state} after {deadline_s:.0f} s")
        time.sleep(0.05)
    return state


def test_workers_lists_no_one_when_none_runs(db_url: str) -> None:
    proc = run_cli("workers", db=db_url)
    assert (proc.returncode, proc.stdout.strip()) == (0, "no live workers")
    assert json.loads(run_cli("workers", "--json", db=db_url).stdout) == []


def test_a_bad_limits_file_is_a_usage_error(db_url: str, tmp_path: Path) -> None:
    bad = tmp_path / "limits.toml"
    bad.write_text("max_outgoing = -1\n")
    proc = run_cli("worker", "--limits", str(bad), db=db_url)
    assert proc.returncode == 2
    assert "limits file" in proc.stderr


def test_a_killed_worker_is_dead_at_once_and_forgotten_on_request(db_url: str) -> None:
    """SIGKILL leaves the worker's row: it is listed dead (only with --all), not running,
    and ``workers forget`` drops it."""
    env = {**os.environ, "MIGRATOR_DB": db_url}
    argv = [sys.executable, "-m", "migrator", "worker", "--poll", "0.1", "--quiet"]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        assert proc.stderr is not None
        started = proc.stderr.readline()
        assert started.startswith("worker ") and started.endswith(" started\n"), started
        wid = started.split()[1]
        assert [w["state"] for w in _listed(db_url)] == ["running"]
    finally:
        proc.kill()
        proc.wait()
    assert _listed(db_url) == []
    assert [(w["id"], w["state"]) for w in _listed(db_url, "--all")] == [(wid, "dead")]
    forgot = run_cli("workers", "forget", wid, db=db_url)
    assert (forgot.returncode, forgot.stdout) == (0, "forgot 1 dead worker\n"), forgot.stderr
    assert _listed(db_url, "--all") == []


def test_a_worker_silent_for_a_lease_is_dead_and_a_live_one_is_not_forgotten(
    db_url: str,
) -> None:
    from migrator.journal.queue import Queue
    from migrator.journal.schema import workers

    with Journal.open(db_url) as journal:
        queue = Queue(journal)
        queue.register("silent", concurrency=1)
        queue.register("live", concurrency=1)  # this test's own process: alive
        with journal.engine.begin() as conn:
            conn.execute(
                workers.update()
                .where(workers.c.id == "silent")
                .values(heartbeat_at=datetime.now(UTC) - timedelta(seconds=31))
            )
    assert {w["id"]: w["state"] for w in _listed(db_url, "--all")} == {
        "silent": "dead",
        "live": "running",
    }
    assert {w["id"]: w["state"] for w in _listed(db_url, "--all", "--lease", "60")} == {
        "silent": "running",
        "live": "running",
    }
    refused = run_cli("workers", "forget", "live", "silent", db=db_url)
    assert refused.returncode == 2
    assert refused.stderr.startswith("migrator: error: worker live is running (heartbeat ")
    assert run_cli("workers", "forget", db=db_url).stdout == "forgot 1 dead worker\n"
    assert [w["id"] for w in _listed(db_url, "--all")] == ["live"]


def _listed(db_url: str, *args: str) -> list[dict[str, Any]]:
    proc = run_cli("workers", "--json", *args, db=db_url)
    assert proc.returncode == 0, proc.stderr
    found: list[dict[str, Any]] = json.loads(proc.stdout)
    return found
