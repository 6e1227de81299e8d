"""SIGKILL while a group commit is in flight: no hook ran on an intent the journal lacks.

A process migrates in 16 threads at once through one ``Coordinator`` (on SQLite their
writes share commits, ``docs/journal.md``); every driver hook writes a line to a side file
when it is called, and an observer one for every event it is told was committed
(``group_commit_child``). The process is killed with SIGKILL at a random instant. Then,
for every line of the side file, the journal must hold what it claims: the intent of the
step whose hook was called (the write-ahead rule: no hook before its own intent is
durable), and every event an observer was told of (no outcome reported before it is
durable). Seeded: kill ``i`` draws from ``random.Random(f"{SEED}:{backend}:{i}")``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from migrator.journal.schema import events
from migrator.journal.store import Journal
from tests.crash.harness import ROOT, sqlite_url

SEED = int(os.environ.get("MIGRATOR_SOAK_SEED", "20250611"))
KILLS = int(os.environ.get("MIGRATOR_GROUP_KILLS", "4"))
THREADS = 16
CASES = [pytest.param("sqlite", i, id=f"sqlite-kill-{i}") for i in range(KILLS)] + [
    pytest.param("postgres", i, id=f"postgres-kill-{i}") for i in range(max(1, KILLS // 2))
]


def _journaled(db: str) -> tuple[set[tuple[str, str, int]], set[tuple[str, int]]]:
    """The intents ``(migration, step, attempt)`` and the events ``(migration, seq)``."""
    journal = Journal.open(db)
    try:
        with journal.engine.connect() as conn:
            found = conn.execute(
                sa.select(
                    events.c.migration_id,
                    events.c.seq,
                    events.c.step,
                    events.c.kind,
                    events.c.attempt,
                )
            ).all()
    finally:
        journal.close()
    intents = {(m, str(step), attempt) for m, _, step, kind, attempt in found if kind == "intent"}
    return intents, {(m, seq) for m, seq, *_ in found}


@pytest.mark.parametrize(("backend", "kill"), CASES)
def test_sigkill_during_group_commits_leaves_no_hook_without_its_intent(
    backend: str, kill: int, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    rng = random.Random(f"{SEED}:{backend}:{kill}")
    if backend == "sqlite":
        db = sqlite_url(tmp_path)
    else:
        db = request.getfixturevalue("pg_url")
        Journal.open(db, upgrade=True).close()
    side = tmp_path / "side.txt"
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.crash.group_commit_child", db, str(side), str(THREADS)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.2, 1.5))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    lines = side.read_text().splitlines()
    hooks = [line.split() for line in lines if line.startswith("hook ")]
    told = [line.split() for line in lines if line.startswith("event ")]
    assert len(hooks) >= THREADS, "the kill came before the threads got going"
    intents, journaled = _journaled(db)
    called_blind = [h for h in hooks if (h[1], h[2], int(h[3])) not in intents]
    assert called_blind == [], f"hooks called without their intent journaled: {called_blind[:5]}"
    told_blind = [e for e in told if (e[1], int(e[2])) not in journaled]
    assert told_blind == [], f"events reported but not journaled: {told_blind[:5]}"
