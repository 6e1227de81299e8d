"""Hook events survive a SIGKILL of the coordinator: ``migrator recover`` delivers what was
committed but not delivered (at least once), each migration's events in order."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from migrator.journal.store import Journal
from tests.conftest import ROOT, Hosts, run_cli

WAIT = 60.0
"""Seconds the test waits for the killed command to reach its point (a deadline only)."""


def hook_command(tmp_path: Path, log: Path, *, block: bool) -> str:
    """A hook command that appends ``HOOK SEQ STATE`` to ``log``; with ``block``, its first
    call then sleeps (its delivery never completes)."""
    script = tmp_path / "hook.py"
    script.write_text(
        "import json, sys, time\n"
        "log, block, name = sys.argv[1], sys.argv[2], sys.argv[3]\n"
        "e = json.load(sys.stdin)\n"
        "with open(log, 'a') as f:\n"
        "    f.write(f\"{name} {e['event']['seq']} {e['migration']['state']}\\n\")\n"
        "if block == 'block':\n"
        "    time.sleep(600)\n"
    )
    return f"{sys.executable} {script} {log} {'block' if block else '-'}"


def delivered(log: Path) -> list[tuple[str, int, str]]:
    if not log.exists():
        return []
    lines = [line.split() for line in log.read_text().splitlines()]
    return [(name, int(seq), state) for name, seq, state in lines]


def killed_when(db: str, args: list[str], reached: str, log: Path) -> None:
    """Run ``migrator ARGS``, SIGKILL it (and its hook) once its migration is ``reached``
    and its first hook call wrote to ``log`` (then sleeps)."""
    env = {**os.environ, "MIGRATOR_DB": db, "PYTHONPATH": str(ROOT)}
    env.pop("MIGRATOR_FAILPOINTS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "migrator", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + WAIT
        while _state(db) != reached or not delivered(log):
            assert proc.poll() is None, f"the command ended before {reached}"
            assert time.monotonic() < deadline, f"not {reached} after {WAIT} s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _state(db: str) -> str | None:
    if not Path(db.removeprefix("sqlite:///")).exists():
        return None
    with Journal.open(db) as journal:
        found = journal.list()
    return str(found[0].state) if found else None


def test_events_committed_before_a_sigkill_in_perform_are_delivered_by_recover(
    tmp_path: Path, hosts: Hosts
) -> None:
    """The first hook call never returns; Perform's intent commits and Perform runs when the
    coordinator is killed. ``recover``'s hooks get every event from the first (its delivery
    never completed), Perform's intent included, then the recovery and the end."""
    db = f"sqlite:///{tmp_path / 'journal.db'}"
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    hosts.src.set_fault("perform", "slow", seconds=120)
    migrate = ["migrate", "vm1", "--src", hosts.src_uri, "--dst", hosts.dst_uri]
    hook = hook_command(tmp_path, first, block=True)
    killed_when(db, [*migrate, "--hook-command", hook], "PERFORMING", first)
    assert delivered(first) == [("migration_started", 1, "BEGINNING")]
    hosts.src.clear_faults()

    proc = run_cli("recover", "--hook-command", hook_command(tmp_path, second, block=False), db=db)
    assert proc.returncode == 0, proc.stderr
    got = delivered(second)
    assert got[:2] == [("migration_started", 1, "BEGINNING"), ("step_started", 1, "BEGINNING")]
    assert ("step_started", 5, "PERFORMING") in got  # committed just before the kill
    assert [seq for _, seq, _ in got] == sorted(seq for _, seq, _ in got)
    assert "recovered" in [name for name, _, _ in got]
    assert got[-1] == ("migration_finished", got[-1][1], "ROLLED_BACK")
    with Journal.open(db) as journal:
        [m] = journal.list()
        assert got[-1][1] == m.last_seq
        assert journal.delivered(m.id) is None  # finished, every event delivered


def test_a_finished_migration_whose_delivery_a_sigkill_cut_short_is_delivered_by_recover(
    tmp_path: Path, hosts: Hosts
) -> None:
    """The migration ends while its first hook call sleeps; the command, waiting to
    deliver the rest before it exits, is killed. ``recover`` (nothing to recover) delivers
    all of it, in order, once."""
    db = f"sqlite:///{tmp_path / 'journal.db'}"
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    migrate = ["migrate", "vm1", "--src", hosts.src_uri, "--dst", hosts.dst_uri]
    hook = hook_command(tmp_path, first, block=True)
    killed_when(db, [*migrate, "--hook-command", hook], "CONFIRMED", first)
    assert delivered(first) == [("migration_started", 1, "BEGINNING")]

    proc = run_cli("recover", "--hook-command", hook_command(tmp_path, second, block=False), db=db)
    assert proc.returncode == 0, proc.stderr
    got = delivered(second)
    steps = [(name, seq) for name, seq, _ in got]
    assert steps[0] == ("migration_started", 1)
    assert [seq for _, seq in steps] == sorted(seq for _, seq in steps)
    started = [seq for name, seq in steps if name == "step_started"]
    assert started == [1, 3, 5, 7, 9]
    assert got[-1] == ("migration_finished", 10, "CONFIRMED")
    assert len(got) == 12
    again = run_cli("recover", "--hook-command", hook_command(tmp_path, second, block=False), db=db)
    assert again.returncode == 0 and len(delivered(second)) == 12  # nothing owed any more
