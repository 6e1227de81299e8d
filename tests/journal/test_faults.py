"""Journal faults with real parts: PostgreSQL restarting behind a TCP proxy, a SQLite
journal replaced under a running migration, a full disk (a tiny tmpfs), a journal held
locked by another process (docs/errors.md, "Journal faults")."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from migrator.drivers.api import PerformResult
from migrator.drivers.test import TestDriver
from migrator.engine.coordinator import Coordinator
from migrator.engine.observers import HookEvent, HookName
from migrator.errors import JournalReplaced
from migrator.failpoints import Crash, Failpoints
from migrator.journal.store import Journal
from migrator.records import EventDraft
from migrator.states import State, Step
from tests.conftest import Hosts, run_cli
from tests.journal.proxy import Proxy

pytestmark = pytest.mark.no_replay

V3_STEPS = [Step.BEGIN, Step.PREPARE, Step.PERFORM, Step.FINISH, Step.CONFIRM]


# -- PostgreSQL restarting -----------------------------------------------------------------


@pytest.fixture
def proxy(pg_url: str) -> Iterator[Proxy]:
    url = sa.make_url(pg_url)
    made = Proxy((url.host or "127.0.0.1", url.port or 5432))
    yield made
    made.close()


@pytest.fixture
def proxied(pg_url: str, proxy: Proxy) -> Iterator[Journal]:
    """A journal whose every connection goes through ``proxy``."""
    url = sa.make_url(pg_url).set(host="127.0.0.1", port=proxy.port)
    journal = Journal.open(url.render_as_string(hide_password=False), upgrade=True)
    yield journal
    journal.close()


def _restart_at(
    proxy: Proxy, step: Step, seconds: float
) -> tuple[list[int], Callable[[HookEvent], None]]:
    """A hook restarting the database when ``step`` starts, and the seqs it fired at."""
    fired: list[int] = []

    def hook(event: HookEvent) -> None:
        if event.name is HookName.STEP_STARTED and event.event.step is step and not fired:
            fired.append(event.event.seq)
            proxy.restart(seconds)

    return fired, hook


@pytest.mark.parametrize("step", V3_STEPS, ids=str)
def test_a_database_restart_during_any_step_still_confirms(
    step: Step, proxied: Journal, proxy: Proxy, hosts: Hosts
) -> None:
    fired, hook = _restart_at(proxy, step, 1.0)
    coordinator = Coordinator(proxied, hooks=[hook])
    try:
        migration = coordinator.migrate("vm1", src=hosts.src, dst=hosts.dst)
    finally:
        coordinator.close()
    assert fired and migration.state is State.CONFIRMED
    assert hosts.states("vm1") == ("absent", "running")
    seqs = [e.seq for e in proxied.history(migration.id)]
    assert seqs == list(range(1, len(seqs) + 1))


def test_a_five_second_restart_during_perform_still_confirms(
    proxied: Journal, proxy: Proxy, hosts: Hosts
) -> None:
    fired, hook = _restart_at(proxy, Step.PERFORM, 5.0)
    coordinator = Coordinator(proxied, hooks=[hook])
    started = time.monotonic()
    try:
        migration = coordinator.migrate("vm1", src=hosts.src, dst=hosts.dst)
    finally:
        coordinator.close()
    assert fired and migration.state is State.CONFIRMED
    assert time.monotonic() - started >= 5.0


@pytest.mark.parametrize("forward", [True, False], ids=["committed", "lost"])
def test_a_commit_without_an_answer_is_read_back_not_repeated(
    forward: bool, proxied: Journal, proxy: Proxy
) -> None:
    """Cut after the statement that commits reached the server (it committed) or before
    (it did not): either way the state change is journaled exactly once. A state change
    is one statement in autocommit mode (docs/journal.md, "Commits"): it is the commit."""
    m = proxied.create(
        domain="vm1", src="test:///a", dst="test:///b", protocol=3, flags=0, bandwidth=0,
        owner="c1",
    )  # fmt: skip
    cuts = proxy.cuts
    proxy.cut_at(b"INSERT INTO migration_events", forward=forward)
    moved = proxied.record(
        m, EventDraft(kind="intent", step=Step.BEGIN), state=State.BEGINNING, coordinator="c1"
    )
    assert proxy.cuts == cuts + 1
    assert (moved.state, moved.last_seq) == (State.BEGINNING, 1)
    assert [(e.seq, e.state) for e in proxied.history(m.id)] == [(1, State.BEGINNING)]


# -- a SQLite journal replaced or deleted --------------------------------------------------


def test_a_journal_deleted_and_recreated_under_a_migration_stops_it(
    tmp_path: Path, hosts: Hosts
) -> None:
    path = tmp_path / "journal.db"
    journal = Journal.open(f"sqlite:///{path}")

    class DeletesJournal(TestDriver):
        def perform(self, *args: Any, **kwargs: Any) -> PerformResult:
            for p in tmp_path.glob("journal.db*"):
                p.unlink()
            Journal.open(f"sqlite:///{path}").close()  # another command creates it again
            return super().perform(*args, **kwargs)

    src = DeletesJournal(hosts.src_uri)
    coordinator = Coordinator(journal)
    try:
        with pytest.raises(JournalReplaced, match="replaced by another file"):
            coordinator.migrate("vm1", src=src, dst=hosts.dst)
    finally:
        coordinator.close()
        journal.close()
    with Journal.open(f"sqlite:///{path}") as fresh:
        assert fresh.list() == []


def test_migrate_stops_with_one_line_when_its_journal_is_deleted(
    tmp_path: Path, hosts: Hosts
) -> None:
    path = tmp_path / "journal.db"
    hook = tmp_path / "rm-journal.py"
    hook.write_text(
        textwrap.dedent(f"""
        import json, pathlib, sys
        event = json.load(sys.stdin)
        if sys.argv[1] == "step_started" and event["event"]["step"] == "perform":
            for p in pathlib.Path({str(tmp_path)!r}).glob("journal.db*"):
                p.unlink()
        """)
    )
    hosts.src.set_fault("perform", "slow", seconds=5)  # the hook, off the step path, in time
    proc = run_cli(
        "migrate", "vm1", "--src", hosts.src_uri, "--dst", hosts.dst_uri,
        "--hook-command", f"{sys.executable} {hook}", db=f"sqlite:///{path}",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr
    assert "deleted since" in line and "check both hosts" in line, line


# -- disk full -----------------------------------------------------------------------------


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (skipped where mounting is not allowed)."""
    where = tmp_path / "fs"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(directory: Path) -> None:
    """Write to ``directory`` until its file system is full."""
    with contextlib.suppress(OSError), open(directory / "filler", "wb") as f:
        while True:
            f.write(b"\0" * 4096)
            f.flush()


def _filling_hook(tmp_path: Path, fs: Path, step: Step) -> str:
    script = tmp_path / "fill.py"
    script.write_text(
        textwrap.dedent(f"""
        import contextlib, json, pathlib, sys
        event = json.load(sys.stdin)
        done = pathlib.Path({str(tmp_path / "filled")!r})
        if sys.argv[1] == "step_started" and event["event"]["step"] == {str(step)!r}:
            if not done.exists():
                done.touch()
                with contextlib.suppress(OSError), open({str(fs / "filler")!r}, "wb") as f:
                    while True:
                        f.write(bytes(4096))
                        f.flush()
        """)
    )
    return f"{sys.executable} {script}"


RECOVERED_FROM = {
    State.BEGINNING: State.ROLLED_BACK,  # Confirm(cancelled=1)
    State.BEGUN: State.ROLLED_BACK,
    State.PREPARING: State.ROLLED_BACK,  # Finish(cancelled=1), Confirm(cancelled=1)
    State.PREPARED: State.ROLLED_BACK,
    # The disk filled as Perform started: its first progress sample could not be written,
    # which stops Perform, so the source reports no completed transfer and recovery cancels.
    State.PERFORMING: State.ROLLED_BACK,
    State.PERFORMED: State.CONFIRMED,  # Finish(cancelled=0), then Confirm
    State.FINISHING: State.CONFIRMED,  # Finish replayed: the destination runs it
    State.FINISHED: State.CONFIRMED,
    State.CONFIRMING: State.CONFIRMED,  # Confirm(cancelled=0) replayed
}
"""What recovery must make of a migration whose journal stopped in each state, as
docs/recovery.md's table decides it for a migration that was succeeding."""
HOSTS_AFTER = {State.CONFIRMED: ("absent", "running"), State.ROLLED_BACK: ("running", "absent")}


@pytest.mark.parametrize("step", V3_STEPS, ids=str)
def test_a_full_disk_at_any_step_names_the_migration_and_recover_finishes_it(
    step: Step, tmp_path: Path, tiny_fs: Path, hosts: Hosts
) -> None:
    db = f"sqlite:///{tiny_fs / 'journal.db'}"
    host = hosts.dst if step in (Step.PREPARE, Step.FINISH) else hosts.src
    host.set_fault(str(step), "slow", seconds=3, count=1)  # the hook, off the step path, in time
    proc = run_cli(
        "migrate", "vm1", "--src", hosts.src_uri, "--dst", hosts.dst_uri,
        "--hook-command", _filling_hook(tmp_path, tiny_fs, step), db=db,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr
    assert (tmp_path / "filled").exists()
    line = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1, proc.stderr
    assert "database or disk is full" in line, line
    assert "left in" in line and "`migrator recover`" in line, line
    (tiny_fs / "filler").unlink()
    recovered = run_cli("recover", "--json", db=db)
    assert recovered.returncode == 0, recovered.stderr
    rows = json.loads(recovered.stdout)
    left = re.search(r"left in (\w+);", line)
    assert left is not None, line
    result = RECOVERED_FROM[State(left.group(1))]
    assert [(r["state"], r["result"]) for r in rows] == [(left.group(1), str(result))]
    assert hosts.states("vm1") == HOSTS_AFTER[result]


# -- a journal held locked by another process -----------------------------------------------


@pytest.fixture
def locked_journal(tmp_path: Path) -> Iterator[Path]:
    """A journal another process holds a write lock on until the test ends."""
    path = tmp_path / "journal.db"
    Journal.open(f"sqlite:///{path}").close()
    with _held_lock(path):
        yield path


@contextlib.contextmanager
def _held_lock(path: Path) -> Iterator[None]:
    """Another process holds the write lock of the SQLite file ``path`` meanwhile."""
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sqlite3, sys, time
            conn = sqlite3.connect({str(path)!r}, isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            print("locked", flush=True)
            time.sleep(120)
        """)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    try:
        yield
    finally:
        holder.kill()
        holder.wait()


def test_migrate_on_a_locked_journal_stops_once_with_the_cause(
    locked_journal: Path, hosts: Hosts
) -> None:
    started = time.monotonic()
    proc = run_cli(
        "migrate", "vm1", "--src", hosts.src_uri, "--dst", hosts.dst_uri,
        db=f"sqlite:///{locked_journal}",
    )  # fmt: skip
    assert time.monotonic() - started < 15
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 2, proc.stderr  # its first write failed: nothing changed
    line = proc.stderr.strip().splitlines()[-1]
    assert "database is locked" in line and "no migration was started" in line, line
    assert hosts.states("vm1") == ("running", "absent")


def test_errno_of_a_full_tmpfs_is_enospc(tiny_fs: Path) -> None:
    """The premise of the disk-full tests: the tmpfs really fills up."""
    fill(tiny_fs)
    with pytest.raises(OSError) as info, open(tiny_fs / "more", "wb") as f:
        f.write(b"\0" * 65536)
        f.flush()
        os.fsync(f.fileno())
    assert info.value.errno == errno.ENOSPC


# -- recover under journal faults: the cause in the table, and one stop --------------------


def _orphan(hosts: Hosts, db: str, domain: str = "vm1") -> None:
    """A migration whose coordinator crashed in Perform (exit 137), left for recover."""
    proc = run_cli(
        "migrate", domain, "--src", hosts.src_uri, "--dst", hosts.dst_uri, db=db,
        env={"MIGRATOR_FAILPOINTS": "perform.called=crash"},
    )  # fmt: skip
    assert proc.returncode == 137, proc.stderr


def test_recover_on_a_full_disk_shows_the_cause_in_its_table(tiny_fs: Path, hosts: Hosts) -> None:
    db = f"sqlite:///{tiny_fs / 'journal.db'}"
    _orphan(hosts, db)
    fill(tiny_fs)
    proc = run_cli("recover", db=db)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "database or disk is full" in " ".join(proc.stdout.split()), proc.stdout
    (tiny_fs / "filler").unlink()
    assert run_cli("recover", db=db).returncode == 0


def test_recover_under_a_held_lock_stops_once_with_the_cause(tmp_path: Path, hosts: Hosts) -> None:
    db = f"sqlite:///{tmp_path / 'journal.db'}"
    hosts.src.define("vm2", memory_mib=1)
    _orphan(hosts, db, "vm1")
    _orphan(hosts, db, "vm2")
    with _held_lock(tmp_path / "journal.db"):
        started = time.monotonic()
        proc = run_cli("recover", "--json", db=db)
        elapsed = time.monotonic() - started
    assert elapsed < 15, elapsed  # one busy timeout (10 s), not one per migration
    assert proc.returncode == 1, proc.stderr
    rows = json.loads(proc.stdout)
    assert len(rows) == 2
    assert all("database is locked" in r["note"] for r in rows), rows
    assert [r["note"].startswith("not attempted") for r in rows] == [False, True]


def test_a_database_restart_during_recover_does_not_end_it(
    proxied: Journal, proxy: Proxy, hosts: Hosts
) -> None:
    crashed = Coordinator(proxied, failpoints=Failpoints({"perform.intent": "raise"}))
    with pytest.raises(Crash):
        crashed.migrate("vm1", src=hosts.src, dst=hosts.dst)
    restarts = proxy.cuts

    def hook(event: HookEvent) -> None:
        if event.name is HookName.RECOVERED:
            proxy.restart(1.0)

    connect = {hosts.src_uri: hosts.src, hosts.dst_uri: hosts.dst}.__getitem__
    [report] = Coordinator(proxied, hooks=[hook], connect=connect).recover(steal=True)
    assert proxy.cuts == restarts + 1
    assert report.note is None, report.note
    # An intent without its hook: the source never started the transfer, so recovery's
    # probe finds none and cancels (docs/recovery.md, "PERFORMING").
    assert report.result is State.ROLLED_BACK
    assert hosts.states("vm1") == ("running", "absent")
