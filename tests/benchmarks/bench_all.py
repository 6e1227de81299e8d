"""Every performance figure with its baseline and ratio, in one run (on demand, not in tests).

    python -m tests.benchmarks.bench_all --quick | --full [--only SECTION,...]
        [--json FILE] [--plot FILE] [--rounds R]

Sections: ``throughput`` (the engine, the raw commit ceiling and DBOS Transact by threads,
on SQLite and PostgreSQL), ``recover`` (orphans on ``null://`` and ``test:///`` hosts),
``inspect`` (read commands on a large journal, and start-up), each goal of
``docs/performance.md`` printed with its measured figure, baseline, ratio and whether it
is met. Throughput rounds alternate engine, ceiling and DBOS (their order rotating each
round) so that noise hits all alike; figures are medians. ``--quick`` is a smoke run of a
few minutes on smaller sizes; ``--full`` measures the sizes the goals name. PostgreSQL is
skipped when unreachable, DBOS when not installed (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.benchmarks import (
    bench_inspect,
    bench_recover,
    bench_throughput,
    dbos_peer,
    goals,
    plot,
)
from tests.benchmarks.common import backend, median, pg_available


@dataclass(frozen=True)
class Sizes:
    threads: tuple[int, ...]
    migrations: int  # per throughput measurement, spread over the threads
    rounds: int
    null_orphans: tuple[int, ...]
    test_orphans: tuple[int, int]
    journal: int  # migrations in the inspection journal (ten events each)


QUICK = Sizes((1, 8, 32), 48, 3, (500,), (30, 100), 5_000)
FULL = Sizes((1, 2, 4, 8, 16, 32), 400, 3, (2_000, 10_000), (300, 2_000), 100_000)


def _per_thread(sizes: Sizes, threads: int) -> int:
    return max(2, sizes.migrations // threads)


def _sweep(name: str, sizes: Sizes, with_dbos: bool) -> dict[str, dict[int, float]]:
    """Medians of migrations/s by kind and thread count on one database."""
    samples: dict[str, dict[int, list[float]]] = {"engine": {}, "ceiling": {}, "dbos": {}}
    events: list[int] = []
    with backend(name) as be:
        peer = dbos_peer.DbosPeer(be) if with_dbos else None
        kinds = {
            "engine": lambda t, n: _engine(be, t, n, events),
            "ceiling": lambda t, n: bench_throughput.ceiling(be, t, n),
        }
        if peer is not None:
            kinds["dbos"] = peer.rate
        try:
            for r in range(sizes.rounds):
                for threads in sizes.threads:
                    order = list(kinds)
                    order = order[r % len(order) :] + order[: r % len(order)]
                    for kind in order:
                        rate = kinds[kind](threads, _per_thread(sizes, threads))
                        samples[kind].setdefault(threads, []).append(rate)
                    print(f"  {name} round {r + 1} threads {threads}: done", flush=True)
        finally:
            if peer is not None:
                peer.close()
    result = {k: {t: median(v) for t, v in by.items()} for k, by in samples.items() if by}
    result["events_per_migration"] = {1: median(events)}
    return result


def _engine(be: Any, threads: int, per_thread: int, events: list[int]) -> float:
    rate, made = bench_throughput.engine(be, threads, per_thread)
    events.append(made)
    return rate


def throughput(sizes: Sizes) -> dict[str, Any]:
    names = ["sqlite"] + (["postgresql"] if pg_available() else [])
    with_dbos = dbos_peer.installed()
    return {"threads": list(sizes.threads), **{n: _sweep(n, sizes, with_dbos) for n in names}}


def recover(sizes: Sizes) -> dict[str, Any]:
    out: dict[str, Any] = {"null": {}, "test": {}}
    with tempfile.TemporaryDirectory(prefix="migrator-bench-recover-") as tmp:
        for n in sizes.null_orphans:
            out["null"][n] = bench_recover.null_hosts(Path(tmp), n)
            print(f"  recover null:// {n}: {out['null'][n]}", flush=True)
        for n in sizes.test_orphans:
            out["test"][n] = bench_recover.test_hosts(Path(tmp), n)
            print(f"  recover test:/// {n}: {out['test'][n]}", flush=True)
    return out


def _timed(args: list[str], db: str | None, rounds: int) -> dict[str, float]:
    """Median seconds and peak MiB; a command slower than 10 s runs once."""
    runs = [bench_inspect.run_command(args, db)]
    while len(runs) < rounds and runs[0][0] < 10:
        runs.append(bench_inspect.run_command(args, db))
    return {
        "seconds": median([s for s, _ in runs]),
        "peak_mib": max(m for _, m in runs),
        "runs": len(runs),
    }


def inspect(sizes: Sizes) -> dict[str, Any]:
    start = time.perf_counter()
    db, events, some = bench_inspect.cached_journal(sizes.journal)
    out: dict[str, Any] = {
        "migrations": sizes.journal,
        "events": events,
        "journal_ready_s": time.perf_counter() - start,
    }
    commands = {
        "list": ["list"],
        "list --limit 20": ["list", "--limit", "20"],
        "show ID": ["show", some],
        "stats": ["stats"],
        "export --all": ["export", "--all"],
    }
    for label, args in commands.items():
        out[label] = _timed(args, db, sizes.rounds)
        print(f"  {label}: {out[label]}", flush=True)
    out["export --all"]["events_per_s"] = events / out["export --all"]["seconds"]
    with tempfile.TemporaryDirectory(prefix="migrator-bench-small-") as tmp:
        small = bench_inspect.small_journal(Path(tmp))
        out["--help"] = _timed(["--help"], None, max(5, sizes.rounds))
        out["small list"] = _timed(["list"], small, max(5, sizes.rounds))
        out["small export --all"] = _timed(["export", "--all"], small, sizes.rounds)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a smoke run on smaller sizes")
    mode.add_argument("--full", action="store_true", help="the sizes the goals name")
    parser.add_argument("--only", default="throughput,recover,inspect")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument("--plot", type=Path, default=None, help="draw throughput by threads")
    args = parser.parse_args()
    sizes = FULL if args.full else QUICK
    if args.rounds:
        sizes = Sizes(**{**sizes.__dict__, "rounds": args.rounds})
    sections = {"throughput": throughput, "recover": recover, "inspect": inspect}
    results: dict[str, Any] = {"mode": "full" if args.full else "quick"}
    for name in args.only.split(","):
        print(f"{name} ...", flush=True)
        results[name] = sections[name](sizes)
        if args.json:  # after each section, so a long run interrupted keeps what it measured
            args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print()
    print(goals.markdown(goals.evaluate(results)))
    if args.plot and "throughput" in results:
        plot.draw(results["throughput"], args.plot)


if __name__ == "__main__":
    main()
