"""``migrator submit``, ``worker`` and ``workers`` as a user runs them (docs/workers.md)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from migrator.journal.store import Journal
from migrator.states import TERMINAL, State
from tests.conftest import Hosts, run_cli


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
