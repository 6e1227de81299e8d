"""The coordinator's overhead on a real QEMU migration (run on demand, not in the test run).

    python -m tests.benchmarks.bench_qemu [--rounds R] [--bandwidth MIB ...] [--cli]

A 128 MiB guest with 96 MiB touched migrates back and forth between two ``qmp:///`` hosts
in a temporary directory, ``R`` times per bandwidth (0: uncapped), journaled in SQLite
(WAL, synchronous=FULL). For each migration it records the wall time of the whole
``Coordinator.migrate`` call (Begin to CONFIRMED: five hooks, eleven commits) next to
QEMU's own migration time (``total-time`` of ``query-migrate`` on the source), and the
time of each step as the journal measured it. The difference is the coordinator's
overhead: the journal, the QMP round trips, starting the destination QEMU, checking it
loaded the state, ``cont`` and ``quit``. With ``--cli`` it also times ``migrator migrate``
as a new process (interpreter start and imports included). Medians are reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from migrator import Coordinator, Driver, Journal, MigrateFlags, State, Step, connect

MEMORY, TOUCH = 128, 96


def _steps(journal: Journal, migration_id: str) -> dict[str, float]:
    durations: dict[str, float] = {}
    for event in journal.history(migration_id):
        if event.kind == "ok" and event.step is not None and event.duration is not None:
            durations[str(event.step)] = event.duration
    return durations


def _perform_stats(journal: Journal, migration_id: str) -> dict[str, Any]:
    for event in journal.history(migration_id):
        if event.step is Step.PERFORM and event.kind == "ok":
            return dict(event.detail or {})
    raise AssertionError("no Perform outcome")


def _round(
    coordinator: Coordinator, journal: Journal, hosts: list[Driver], bandwidth: int
) -> dict[str, Any]:
    src, dst = hosts
    start = time.perf_counter()
    m = coordinator.migrate("vm1", src=src, dst=dst, flags=MigrateFlags.LIVE, bandwidth=bandwidth)
    wall = time.perf_counter() - start
    assert m.state is State.CONFIRMED, m.reason
    hosts.reverse()
    stats = _perform_stats(journal, m.id)
    return {
        "wall_s": wall,
        "qemu_total_s": stats["total_time_ms"] / 1000,
        "qemu_downtime_ms": stats["downtime_ms"],
        "transferred_mib": stats["transferred_bytes"] / 2**20,
        "steps_s": _steps(journal, m.id),
    }


def _cli_round(db: str, hosts: list[Driver], bandwidth: int) -> float:
    src, dst = hosts
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "migrator", "--db", db, "migrate", "vm1", "--src", src.uri,
         "--dst", dst.uri, "--live", "--bandwidth", str(bandwidth), "--json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"migrator migrate failed: {proc.stdout} {proc.stderr}")
    hosts.reverse()
    return time.perf_counter() - start


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(float(r[key]) for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--bandwidth", type=int, nargs="+", default=[0, 64])
    parser.add_argument("--cli", action="store_true", help="Also time `migrator migrate`.")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-qemu-") as tmp:
        root = Path(tmp)
        hosts = [connect(f"qmp://{root / 'a'}"), connect(f"qmp://{root / 'b'}")]
        hosts[0].define("vm1", memory_mib=MEMORY, touch_mib=TOUCH)
        db = f"sqlite:///{root / 'journal.db'}"
        try:
            with Journal.open(db) as journal:
                coordinator = Coordinator(journal)
                for bandwidth in args.bandwidth:
                    rows = [
                        _round(coordinator, journal, hosts, bandwidth) for _ in range(args.rounds)
                    ]
                    steps = {
                        s: statistics.median(r["steps_s"].get(s, 0.0) for r in rows)
                        for s in ("begin", "prepare", "perform", "finish", "confirm")
                    }
                    entry: dict[str, Any] = {
                        "rounds": args.rounds,
                        "wall_s": _median(rows, "wall_s"),
                        "qemu_total_s": _median(rows, "qemu_total_s"),
                        "overhead_s": statistics.median(
                            r["wall_s"] - r["qemu_total_s"] for r in rows
                        ),
                        "qemu_downtime_ms": _median(rows, "qemu_downtime_ms"),
                        "transferred_mib": _median(rows, "transferred_mib"),
                        "steps_s": steps,
                    }
                    if args.cli:
                        entry["cli_wall_s"] = statistics.median(
                            _cli_round(db, hosts, bandwidth) for _ in range(args.rounds)
                        )
                    results[f"bandwidth={bandwidth or 'uncapped'}"] = entry
                coordinator.close()
        finally:
            for host in hosts:
                for d in host.domains():
                    host.destroy(d["name"])
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
