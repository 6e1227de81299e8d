"""Two workers with different limits starting at once: the check of their limits and their
registration are one transaction, so exactly one is refused, in one line (docs/workers.md,
"Per-host limits").

Both processes are held just before they register: the test holds the lock every write
of the ``workers`` table needs (SQLite's write lock; on PostgreSQL a ``SHARE`` lock of the
table) until both are waiting, then lets them go together. A check made apart from the
registration passes in both (neither sees the other), and both would be accepted.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

from migrator.journal.store import Journal
from migrator.workers import fleet

START_TIMEOUT = 60.0
SQLITE_MARGIN = 1.5
"""Seconds the SQLite write lock is still held once both processes opened the journal:
SQLite shows no waiter, so this is how long they have to reach their registration."""


def _worker(url: str, max_outgoing: int) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "migrator", "--db", url, "worker", "--poll", "0.2",
           "--max-outgoing", str(max_outgoing)]  # fmt: skip
    return subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)


def _opened(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has the file ``path`` open."""
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) == str(path):
                    return True
    return False


def _until(condition: object, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not {what} within {START_TIMEOUT} s"
        time.sleep(0.05)


@contextlib.contextmanager
def _held(url: str, procs: list[subprocess.Popen[str]]) -> Iterator[None]:
    """The ``workers`` table's write lock, held until each of ``procs`` is about to
    register, then released."""
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            _until(lambda: all(_opened(p.pid, path) for p in procs), "opened the journal")
            time.sleep(SQLITE_MARGIN)
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    engine = sa.create_engine(url)
    waiting = sa.text("SELECT count(*) FROM pg_locks WHERE relation = 'workers'::regclass"
                      " AND NOT granted")  # fmt: skip
    try:
        with engine.connect() as holder, engine.connect() as watcher:
            holder.exec_driver_sql("BEGIN")
            holder.exec_driver_sql("LOCK TABLE workers IN SHARE MODE")
            yield
            _until(lambda: watcher.execute(waiting).scalar_one() >= 2, "both waiting")
            holder.exec_driver_sql("ROLLBACK")
    finally:
        engine.dispose()


def test_two_workers_with_other_limits_starting_together_one_is_refused(db_url: str) -> None:
    procs: list[subprocess.Popen[str]] = []
    try:
        with _held(db_url, procs):
            procs += [_worker(db_url, 1), _worker(db_url, 3)]
        with Journal.open(db_url) as journal:
            registered = lambda: len(fleet.seen(journal, lease=30))  # noqa: E731
            _until(lambda: any(p.poll() is not None for p in procs) or registered() == 2,
                   "one refused or both registered")  # fmt: skip
            assert registered() == 1
        [refused] = [p for p in procs if p.poll() is not None]
        [running] = [p for p in procs if p is not refused]
        assert refused.returncode == 2
        assert refused.stderr is not None
        lines = refused.stderr.read().strip().splitlines()
        assert len(lines) == 1 and "limits differ from those of running worker" in lines[0], lines
        assert running.poll() is None
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
            proc.wait(30)
