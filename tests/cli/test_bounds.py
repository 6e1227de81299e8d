"""Bounds before anything is journaled (issue 23): options, files read, pre-flight time,
and the messages of what goes wrong, each through a real ``migrator`` process."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from migrator.engine.coordinator import Coordinator
from migrator.journal.store import Journal
from migrator.states import State
from tests.conftest import ROOT, Hosts, run_cli


def _queued(db_url: str, hosts: Hosts, count: int) -> list[str]:
    for n in range(2, count + 1):
        hosts.src.define(f"vm{n}", memory_mib=1)
    with Journal.open(db_url) as journal:
        coordinator = Coordinator(journal)
        try:
            return [
                coordinator.submit(f"vm{n}", src=hosts.src, dst=hosts.dst).id
                for n in range(1, count + 1)
            ]
        finally:
            coordinator.close()


def test_a_worker_with_an_unbounded_poll_claims_nothing(db_url: str, hosts: Hosts) -> None:
    """``--poll inf`` is refused before the worker claims: the queue is left as it was."""
    ids = _queued(db_url, hosts, 3)
    proc = run_cli("worker", "--poll", "inf", db=db_url)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        "migrator: error: --poll 'inf' is not a number (ASCII digits, e.g. 30 or 2.5)"
        " (see `migrator worker --help`)"
    ]
    with Journal.open(db_url) as journal:
        found = [journal.get(mid) for mid in ids]
        assert [(m.state, m.owner, m.last_seq) for m in found] == [(State.QUEUED, None, 0)] * 3
        assert journal.history(ids[0]) == []


def test_pre_flight_gives_up_after_the_migrations_timeout(db_url: str, hosts: Hosts) -> None:
    """A destination whose probe hangs fails ``migrate --timeout 1`` in pre-flight, with
    nothing journaled (exit 1: the host failed, the input was fine)."""
    hosts.dst.set_fault("probe", "slow", seconds=3600)
    proc = run_cli(
        "migrate", "vm1", "--src", hosts.src_uri, "--dst", hosts.dst_uri, "--timeout", "1",
        db=db_url, timeout=120,
    )  # fmt: skip
    assert proc.stderr.splitlines() == [
        f"migrator: error: pre-flight probe of {hosts.dst_uri} did not return within 1 s"
    ]
    assert proc.returncode == 1
    assert _journaled(db_url) == 0


def test_submit_pre_flight_obeys_its_timeout(db_url: str, hosts: Hosts) -> None:
    hosts.dst.set_fault("probe", "slow", seconds=3600)
    proc = run_cli(
        "submit", "vm1", "--src", hosts.src_uri, "--dst", hosts.dst_uri, "--timeout", "1",
        db=db_url, timeout=120,
    )  # fmt: skip
    assert (proc.returncode, proc.stdout) == (1, ""), proc.stderr
    assert "did not return within 1 s" in proc.stderr
    assert _journaled(db_url) == 0


def test_a_host_json_that_is_a_fifo_fails_migrate_at_once(db_url: str, hosts: Hosts) -> None:
    """Without a writer a FIFO blocks a reader for ever: it is refused unread."""
    hosts.dst.dir.mkdir()
    os.mkfifo(hosts.dst.dir / "host.json")
    proc = run_cli(
        "migrate", "vm1", "--src", hosts.src_uri, "--dst", hosts.dst_uri, "--timeout", "5",
        db=db_url, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().endswith(
        "host.json is not a host state: not a regular file (a FIFO)"
    )
    assert _journaled(db_url) == 0


def test_a_host_json_linked_to_dev_zero_is_refused_unread(tmp_path: Path) -> None:
    """Run under a 1 GiB address-space limit: reading ``/dev/zero`` whole would exhaust it
    (the process grew to 1.4 GB before); it is refused by its kind, not its size."""
    host = tmp_path / "zero-host"
    host.mkdir()
    (host / "host.json").symlink_to("/dev/zero")
    proc = _limited("test-host", "list", f"test://{host}", db=f"sqlite:///{tmp_path / 'j.db'}")
    assert (proc.returncode, proc.stderr) == (
        2,
        f"migrator: error: {host}/host.json is not a host state: not a regular file"
        " (a character device)\n",
    )


def test_a_limits_file_that_is_a_fifo_is_refused_at_start_up(db_url: str, tmp_path: Path) -> None:
    fifo = tmp_path / "limits.toml"
    os.mkfifo(fifo)
    proc = run_cli("worker", "--limits", str(fifo), db=db_url, timeout=120)
    assert (proc.returncode, proc.stderr) == (
        2,
        f"migrator: error: limits file {fifo}: not a regular file (a FIFO)\n",
    )


def test_db_upgrade_restamps_an_empty_stamp_whose_tables_are_heads(db_url: str) -> None:
    """An emptied ``alembic_version`` is named, then repaired by ``db upgrade`` when the
    tables are exactly HEAD's (it used to fail "table migrations already exists")."""
    with Journal.open(db_url) as journal, journal.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM alembic_version"))
    refused = run_cli("list", db=db_url)
    assert refused.returncode == 2 and "alembic_version table is empty" in refused.stderr
    repaired = run_cli("db", "upgrade", db=db_url)
    assert repaired.returncode == 0, repaired.stderr
    assert run_cli("db", "current", db=db_url).stdout.endswith("(up to date)\n")
    assert run_cli("list", db=db_url).returncode == 0


def _journaled(db_url: str) -> int:
    with Journal.open(db_url) as journal:
        return len(journal.list(limit=10))


def _limited(*args: str, db: str) -> subprocess.CompletedProcess[str]:
    """``migrator ARGS`` in a new interpreter whose address space is capped at 1 GiB."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    env = {**os.environ, "MIGRATOR_DB": db}
    return subprocess.run(
        [sys.executable, "-m", "migrator", *args],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, preexec_fn=cap,
    )  # fmt: skip
