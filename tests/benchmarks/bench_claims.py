"""Claim latency with 1, 2 and 4 worker processes on PostgreSQL (on demand).

    python -m tests.benchmarks.bench_claims [--migrations 2000] [--hosts 40]
        [--max-outgoing 2] [--workers 1 2 4] [--concurrency 4 | --in-flight 8] [--rounds 1]

Each run journals ``--migrations`` QUEUED migrations between ``--hosts`` test hosts (each
source chosen at random, seeded, so hosts fill up and the limit binds), starts that many
real worker processes (a ``Worker`` in ``python -m tests.benchmarks.bench_claims --child``,
``--max-outgoing`` as ``migrator worker`` gives it, ``--concurrency`` each, or
``--in-flight`` shared among them: the same load of migrations driven at once, whatever the
number of workers) and waits until every migration ended.
Each worker times every claim it makes (``Queue.claim``: the claim transaction, with the
ones that found nothing to take) and hands the figures back when it stops. Afterwards the
limits are checked from the journal: from each claim event to the end that followed it, no
host ever had more migrations leaving it than ``--max-outgoing``. Each run has a fresh
schema of the local PostgreSQL ``test`` database.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from migrator import HostLimits, Journal, Worker
from migrator.drivers.test import TestDriver
from migrator.journal.queue import Queue
from migrator.records import Migration
from migrator.states import TERMINAL, State
from tests.benchmarks.common import backend, pg_available
from tests.workers.chaos import peak_load

ENDED = TERMINAL | {State.IN_DOUBT}


class TimedQueue(Queue):
    """The queue, timing each claim transaction."""

    def __init__(self, journal: Journal) -> None:
        super().__init__(journal)
        self.seconds: list[float] = []
        self.taken: list[bool] = []

    def claim(self, worker_id: str, limits: HostLimits) -> Migration | None:
        started = time.perf_counter()
        found = super().claim(worker_id, limits)
        self.seconds.append(time.perf_counter() - started)
        self.taken.append(found is not None)
        return found


def child(url: str, out: Path, max_outgoing: int, concurrency: int) -> None:
    """A worker process: runs until SIGTERM, then writes its claim timings to ``out``."""
    journal = Journal.open(url)
    worker = Worker(
        journal, concurrency=concurrency, limits=HostLimits(max_outgoing=max_outgoing), poll=0.05
    )
    timed = TimedQueue(journal)
    worker.queue = worker.jobs.queue = timed
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    worker.run()
    journal.close()
    out.write_text(json.dumps({"seconds": timed.seconds, "taken": timed.taken}))


def submit(url: str, root: Path, migrations: int, hosts: int) -> None:
    drivers = [TestDriver(f"test://{root / f'h{i}'}") for i in range(hosts)]
    chooser = random.Random(migrations)
    with Journal.open(url, upgrade=True) as journal:
        queue = Queue(journal)
        for i in range(migrations):
            src = chooser.randrange(hosts)
            dst = (src + 1 + chooser.randrange(hosts - 1)) % hosts
            drivers[src].define(f"vm{i}", memory_mib=1)
            queue.submit(
                domain=f"vm{i}",
                src=drivers[src].uri,
                dst=drivers[dst].uri,
                protocol=3,
                flags=0,
                bandwidth=0,
            )


def ended(journal: Journal) -> bool:
    return all(m.state in ENDED for m in journal.list())


def peak_outgoing(journal: Journal) -> tuple[int, int]:
    shown = [
        {
            "src": m.src,
            "dst": m.dst,
            "events": [
                {"detail": e.detail, "at": e.at, "state": str(e.state)}
                for e in journal.history(m.id)
            ],
        }
        for m in journal.list()
    ]
    return peak_load(shown)


def run(workers: int, args: argparse.Namespace) -> dict[str, Any]:
    with backend("postgresql") as b, tempfile.TemporaryDirectory(prefix="bench-claims-") as tmp:
        url = b.journal_url("claims")
        submit(url, Path(tmp), args.migrations, args.hosts)
        outs = [Path(tmp) / f"w{k}.json" for k in range(workers)]
        each = max(1, args.in_flight // workers) if args.in_flight else args.concurrency
        cmd = [sys.executable, "-m", "tests.benchmarks.bench_claims", "--child", url]
        procs = [
            subprocess.Popen(
                [*cmd, str(out), str(args.max_outgoing), str(each)],
                stderr=subprocess.DEVNULL,
            )
            for out in outs
        ]
        started = time.monotonic()
        with Journal.open(url) as journal:
            while not ended(journal):
                time.sleep(0.5)
            seconds = time.monotonic() - started
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(120)
            states = {str(m.state) for m in journal.list()}
            most_out, most_in = peak_outgoing(journal)
        timings = [json.loads(out.read_text()) for out in outs]
    all_ms = [s * 1000 for t in timings for s in t["seconds"]]
    taken = sum(sum(t["taken"]) for t in timings)
    cuts = statistics.quantiles(all_ms, n=100)
    figures: dict[str, Any] = {
        "workers": workers,
        "concurrency": each,
        "claims": len(all_ms),
        "taken": taken,
        "p50_ms": statistics.median(all_ms),
        "p95_ms": cuts[94],
        "max_ms": max(all_ms),
        "seconds": seconds,
        "max_outgoing_seen": most_out,
        "max_incoming_seen": most_in,
        "states": sorted(states),
    }
    return figures


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        url, out, max_outgoing, concurrency = sys.argv[2:6]
        child(url, Path(out), int(max_outgoing), int(concurrency))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--migrations", type=int, default=2000)
    parser.add_argument("--hosts", type=int, default=40)
    parser.add_argument("--max-outgoing", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--concurrency", type=int, default=4, help="per worker")
    parser.add_argument("--in-flight", type=int, default=0, help="shared among the workers")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    if not pg_available():
        sys.exit("PostgreSQL is not reachable")
    for _ in range(args.rounds):
        for n in args.workers:
            figures = run(n, args)
            print(json.dumps(figures), flush=True)
            assert figures["max_outgoing_seen"] <= args.max_outgoing, figures


if __name__ == "__main__":
    main()
