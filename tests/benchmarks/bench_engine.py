"""Engine throughput against the SQLite commit ceiling (run on demand, not in the test run).

    python -m tests.benchmarks.bench_engine [--migrations N] [--rounds R] [--prefill M]

Migrations per second through the whole engine (``Coordinator.migrate`` between two
``null://`` hosts: zero-latency drivers, so only the engine and the journal cost time) on a
SQLite WAL file with synchronous=FULL, next to the ceiling measured in the same run: the
same number of raw INSERT+COMMITs per migration with the ``sqlite3`` module on the same kind
of file. Rounds alternate between the two so that disk noise hits both alike; medians are
reported. ``--prefill`` repeats the engine measurement on a journal that already holds M
migrations (10 events each), to show that the cost of one migration does not grow with it.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from migrator import Coordinator, Journal, connect


def _engine_round(path: Path, n: int) -> tuple[float, int]:
    """Seconds for ``n`` migrations, and the journal commits each one made."""
    with Journal.open(f"sqlite:///{path}") as journal:
        src, dst = connect(f"null://{uuid.uuid4()}"), connect(f"null://{uuid.uuid4()}")
        for i in range(n):
            src.define(f"vm{i}")  # type: ignore[attr-defined]
        coordinator = Coordinator(journal)
        committer = journal._writer.committer
        run, commits = committer.run, [0]

        def counted(work: Any, **kw: Any) -> Any:  # each call is one durable commit
            commits[0] += 1
            return run(work, **kw)

        committer.run = counted  # type: ignore[method-assign]
        start = time.perf_counter()
        for i in range(n):
            coordinator.migrate(f"vm{i}", src=src, dst=dst)
        elapsed = time.perf_counter() - start
        coordinator.close()
    return elapsed, round(commits[0] / n)  # docs/journal.md, "Commits"


def _raw_round(path: Path, commits: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (id TEXT, seq INTEGER, payload BLOB)")
    row = (str(uuid.uuid4()), 0, b"x" * 64)
    start = time.perf_counter()
    for _ in range(commits):
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t VALUES (?, ?, ?)", row)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


_SAME_SQL_COMMITS = (1, 2, 2, 2, 2, 1)
"""Events per commit of a v3 migration that succeeds (docs/journal.md, "Commits")."""


def _same_sql_round(path: Path, n: int) -> float:
    """The engine's own statements in its own commits (the migration row with Begin's
    intent, then per commit one UPDATE ... RETURNING and the INSERT of its events, as
    ``_SAME_SQL_COMMITS`` says) through the ``sqlite3`` module, without Python
    bookkeeping: what the journal's schema and commits cost by themselves."""
    Journal.open(f"sqlite:///{path}").close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    ts = "2026-01-01 00:00:00.000000"
    insert_event = (
        "INSERT INTO migration_events (migration_id, seq, step, kind, state, at,"
        " coordinator, attempt, duration) VALUES (?, ?, 'begin', ?, 'X', ?, 'c', 1, ?)"
    )
    start = time.perf_counter()
    for _ in range(n):
        mid = str(uuid.uuid4())
        conn.execute("BEGIN")
        conn.execute(
            "INSERT INTO migrations (id, domain, src, dst, protocol, flags, bandwidth, state,"
            " fence, last_seq, abort_requested, created_at, updated_at) VALUES"
            " (?, 'vm', 'null://a', 'null://b', 3, 0, 0, 'X', 1, 1, 0, ?, ?)",
            (mid, ts, ts),
        )
        conn.execute(insert_event, (mid, 1, "intent", ts, None))
        conn.execute("COMMIT")
        for events in _SAME_SQL_COMMITS[1:]:
            conn.execute("BEGIN")
            seq = conn.execute(
                "UPDATE migrations SET state = 'X', last_seq = last_seq + ?, updated_at = ?,"
                " lease_expires_at = ? WHERE id = ? AND fence = 1 RETURNING last_seq,"
                " abort_requested",
                (events, ts, ts, mid),
            ).fetchone()[0]
            kinds = ("ok", "intent")[:events]  # an outcome, then the next intent
            for k, kind in enumerate(kinds):
                duration = 1e-5 if kind == "ok" else None
                conn.execute(insert_event, (mid, seq - events + 1 + k, kind, ts, duration))
            conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def _prefill(path: Path, migrations: int) -> None:
    """Fill a journal with finished migrations, straight through SQL (fast)."""
    Journal.open(f"sqlite:///{path}").close()
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    conn = sqlite3.connect(path)
    ids = [str(uuid.uuid4()) for _ in range(migrations)]
    conn.executemany(
        "INSERT INTO migrations (id, domain, src, dst, protocol, flags, bandwidth, state, fence,"
        " last_seq, abort_requested, created_at, updated_at) VALUES"
        " (?, 'vm', 'null://a', 'null://b', 3, 0, 0, 'CONFIRMED', 1, 10, 0, ?, ?)",
        [(i, now, now) for i in ids],
    )
    conn.executemany(
        "INSERT INTO migration_events (migration_id, seq, step, kind, state, at, attempt)"
        " VALUES (?, ?, 'begin', 'ok', 'CONFIRMED', ?, 1)",
        [(i, seq, now) for i in ids for seq in range(1, 11)],
    )
    conn.commit()
    conn.close()


def run(n: int, rounds: int, prefill: int) -> dict[str, float]:
    engine, raw, same, full = [], [], [], []
    commits = 0
    with tempfile.TemporaryDirectory(prefix="migrator-bench-") as tmp:
        for r in range(rounds):
            seconds, commits = _engine_round(Path(tmp) / f"engine{r}.db", n)
            engine.append(n / seconds)
            raw.append(n / _raw_round(Path(tmp) / f"raw{r}.db", n * commits))
            same.append(n / _same_sql_round(Path(tmp) / f"same{r}.db", n))
            if prefill:
                path = Path(tmp) / f"full{r}.db"
                _prefill(path, prefill)
                full.append(n / _engine_round(path, n)[0])
    result = {
        "migrations_per_round": n,
        "rounds": rounds,
        "commits_per_migration": commits,
        "engine_migrations_per_s": statistics.median(engine),
        "ceiling_migrations_per_s": statistics.median(raw),
        "ceiling_commits_per_s": statistics.median(raw) * commits,
    }
    result["ratio"] = result["engine_migrations_per_s"] / result["ceiling_migrations_per_s"]
    result["same_sql_migrations_per_s"] = statistics.median(same)
    result["same_sql_ratio"] = statistics.median(same) / result["ceiling_migrations_per_s"]
    result["engine_to_same_sql"] = result["engine_migrations_per_s"] / statistics.median(same)
    if prefill:
        result["prefilled_migrations"] = prefill
        result["engine_migrations_per_s_prefilled"] = statistics.median(full)
        result["prefilled_ratio_to_empty"] = statistics.median(full) / statistics.median(engine)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--migrations", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--prefill", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(run(args.migrations, args.rounds, args.prefill), indent=2))


if __name__ == "__main__":
    main()
