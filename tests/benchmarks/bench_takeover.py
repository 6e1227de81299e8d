"""Takeover latency: from a worker's death or stall to another worker's claim (on demand).

    python -m tests.benchmarks.bench_takeover [--trials N] [--lease S] [--poll S] [--url URL]

Each trial starts a worker process that claims one migration with a slow Perform, a second
worker (in this process) that waits, then SIGKILLs the first (``dead``: the owner's
process is gone, which a worker on the same machine sees at its next poll) or SIGSTOPs it
(``stalled``: only its lease lapsing tells, as for a worker on another machine). The
latency is the time from the signal to the journal's recovery note of the taker. Without
``--url`` the journal is a fresh schema of the local PostgreSQL ``test`` database.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from urllib.parse import quote

import sqlalchemy as sa

from migrator.drivers.test import TestDriver
from migrator.engine.coordinator import Coordinator
from migrator.journal.store import Journal
from migrator.states import State
from migrator.workers import Worker

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _wait(predicate: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("the trial did not get there")
        time.sleep(0.01)


def trial(url: str, mode: str, lease: float, poll: float) -> float:
    """Seconds from the signal to the taker's recovery note."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-takeover-") as tmp,
        Journal.open(url, lease_seconds=lease) as journal,
    ):
        src, dst = TestDriver(f"test://{tmp}/a"), TestDriver(f"test://{tmp}/b")
        src.define("vm", memory_mib=1)
        src.set_fault("perform", "slow", seconds=lease * 4, count=1)
        coordinator = Coordinator(journal)
        mid = coordinator.submit("vm", src=src, dst=dst).id
        coordinator.close()
        cmd = [sys.executable, "-m", "migrator", "--db", url, "worker", "--quiet",
               "--lease", str(lease), "--poll", str(poll)]  # fmt: skip
        first = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
        _wait(lambda: journal.get(mid).state is State.PERFORMING)
        taker = Worker(journal, poll=poll).start()
        time.sleep(poll * 1.5)  # the taker is polling: the signal lands at a random phase
        signalled = datetime.now(UTC)
        os.kill(first.pid, signal.SIGKILL if mode == "dead" else signal.SIGSTOP)
        if mode == "dead":
            first.wait()

        def note() -> datetime | None:
            events = journal.history(mid)
            found = [e.at for e in events if "previous_owner" in (e.detail or {})]
            return found[0] if found else None

        _wait(lambda: note() is not None)
        latency = (note() - signalled).total_seconds()  # type: ignore[operator]
        _wait(lambda: journal.get(mid).state in (State.CONFIRMED, State.ROLLED_BACK))
        taker.stop()
        taker.join(30)
        if mode == "stalled":
            os.kill(first.pid, signal.SIGCONT)
            first.kill()
            first.wait()
        return latency


def _fresh_pg_schema() -> tuple[str, sa.Engine, str]:
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    return f"{PG}?options={quote(f'-csearch_path={schema}')}", admin, schema


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--poll", type=float, default=0.2)
    parser.add_argument("--url")
    args = parser.parse_args()
    url, admin, schema = (args.url, None, "") if args.url else _fresh_pg_schema()
    try:
        Journal.open(url, upgrade=True).close()
        report: dict[str, object] = {"lease": args.lease, "poll": args.poll}
        for mode in ("dead", "stalled"):
            times = sorted(trial(url, mode, args.lease, args.poll) for _ in range(args.trials))
            report[mode] = {
                "trials": len(times),
                "p50": round(statistics.median(times), 3),
                "p95": round(times[min(len(times) - 1, round(0.95 * (len(times) - 1)))], 3),
                "max": round(times[-1], 3),
            }
        print(json.dumps(report, indent=2))
    finally:
        if admin is not None:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
            admin.dispose()


if __name__ == "__main__":
    main()
