"""Migrations per second through the engine, the raw commit ceiling and DBOS, by threads.

One measurement runs ``per_thread`` migrations in each of ``threads`` threads, started
together, and divides all of them by the wall time:

- **engine**: ``Coordinator.migrate`` between two ``null://`` hosts per thread (in-process,
  zero-latency drivers: only the engine and the journal cost time), every thread sharing
  one ``Journal`` and one ``Coordinator``; SQLite in WAL mode with ``synchronous=FULL`` (a
  fresh file per measurement) or PostgreSQL. Each thread first migrates one domain before
  the clock starts, as the ceiling opens its connections before it starts: the journal's
  connections are opened and its statements compiled and prepared;
- **ceiling**: per migration ``CEILING_COMMITS`` raw INSERT+COMMITs of one small row, each
  thread on its own connection (``sqlite3`` on the same kind of file, WAL+FULL, ``BEGIN
  IMMEDIATE``; ``psycopg``), to the same database;
- **dbos**: DBOS Transact's workflow of five steps, in a worker process (``dbos_worker``).
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from migrator import Coordinator, Journal, State, connect
from tests.benchmarks.common import CEILING_COMMITS, Backend


def _in_threads(threads: int, work: Callable[[int], None]) -> float:
    """Seconds from a common start until every ``work(i)`` returned; re-raises the first error."""
    barrier = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            work(i)
        except BaseException as exc:  # noqa: BLE001 -- handed to the main thread
            errors.append(exc)

    pool = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return elapsed


def engine(backend: Backend, threads: int, per_thread: int) -> tuple[float, int]:
    """Migrations per second, and the events one migration journaled (in 6 commits:
    docs/journal.md, "Commits")."""
    url = backend.journal_url("engine")
    with Journal.open(url, upgrade=True) as journal:
        coordinator = Coordinator(journal)
        hosts = []
        for _ in range(threads):
            src, dst = connect(f"null://{uuid.uuid4()}"), connect(f"null://{uuid.uuid4()}")
            for i in range(per_thread):
                src.define(f"vm{i}")  # type: ignore[attr-defined]
            src.define("warm-up")  # type: ignore[attr-defined]
            hosts.append((src, dst))
        last: list[Any] = [None] * threads

        def warm_up(t: int) -> None:
            src, dst = hosts[t]
            coordinator.migrate("warm-up", src=src, dst=dst)

        _in_threads(threads, warm_up)  # untimed, as the ceiling's connections are opened

        def work(t: int) -> None:
            src, dst = hosts[t]
            for i in range(per_thread):
                m = coordinator.migrate(f"vm{i}", src=src, dst=dst)
                if m.state is not State.CONFIRMED:
                    raise AssertionError(f"{m.id} ended {m.state}")
                last[t] = m

        elapsed = _in_threads(threads, work)
        coordinator.close()
    return threads * per_thread / elapsed, last[0].last_seq


def _sqlite_ceiling(path: str, threads: int, commits: int) -> float:
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute("PRAGMA journal_mode = WAL")
    setup.execute("CREATE TABLE IF NOT EXISTS t (id TEXT, seq INTEGER, payload BLOB)")
    setup.close()

    def work(_t: int) -> None:
        conn = sqlite3.connect(path, isolation_level=None, timeout=60)
        conn.execute("PRAGMA synchronous = FULL")
        row = (str(uuid.uuid4()), 0, b"x" * 64)
        for _ in range(commits):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t VALUES (?, ?, ?)", row)
            conn.execute("COMMIT")
        conn.close()

    return _in_threads(threads, work)


def _pg_ceiling(conninfo: str, threads: int, commits: int) -> float:
    import psycopg

    table = f"t_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(conninfo, autocommit=True) as setup:
        setup.execute(f"CREATE TABLE {table} (id TEXT, seq INTEGER, payload BYTEA)")  # type: ignore[arg-type]
    conns = [psycopg.connect(conninfo) for _ in range(threads)]
    insert = f"INSERT INTO {table} VALUES (%s, %s, %s)"

    def work(t: int) -> None:
        conn, row = conns[t], (str(uuid.uuid4()), 0, b"x" * 64)
        for _ in range(commits):
            conn.execute(insert, row)  # type: ignore[arg-type]
            conn.commit()

    try:
        return _in_threads(threads, work)
    finally:
        for conn in conns:
            conn.close()


def ceiling(backend: Backend, threads: int, per_thread: int) -> float:
    """Migrations per second at ``CEILING_COMMITS`` raw INSERT+COMMITs per migration."""
    target = backend.raw_target("ceiling")
    commits = per_thread * CEILING_COMMITS
    run = _sqlite_ceiling if backend.name == "sqlite" else _pg_ceiling
    return threads * per_thread / run(target, threads, commits)
