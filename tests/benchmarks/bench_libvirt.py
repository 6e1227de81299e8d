"""``migrator migrate`` against ``virsh migrate`` between two real libvirt daemons (on demand).

    python -m tests.benchmarks.bench_libvirt [--rounds R] [--touch MIB] [--json]

Two session daemons start in a fresh directory (``tests/libvirt/daemons.py``); one guest
(64 MiB, by default the tiny one with no touched memory; ``--touch`` boots the pattern
payload so that many MiB go on the wire) migrates back and forth between them, the two
clients taking turns: each round is ``virsh`` one way and ``migrator`` back, the next
round the other order, so each client moves the guest in both directions equally often.
Both get the same loopback ``migrate_uri``, both are timed as whole processes (start,
imports and connections included), ``migrator`` journaling in SQLite. A first, untimed
migration each way warms the daemons up. Medians are reported, with migrator's per-step
times from its journal.
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

from migrator.drivers import payload
from migrator.journal.store import Journal
from tests.libvirt import guests
from tests.libvirt.daemons import Daemon, Pair, migrate_uri

NAME = "bench"
MEMORY_MIB = 64
ROOT = Path(__file__).resolve().parents[2]


def _virsh(src: Daemon, dst: Daemon) -> float:
    argv = ["virsh", "-c", src.uri, "migrate", "--live", NAME, dst.uri,
            "--migrateuri", migrate_uri()]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    return took


def _migrator(db: str, src: Daemon, dst: Daemon) -> tuple[float, str]:
    argv = [sys.executable, "-m", "migrator", "--db", db, "migrate", NAME, "--src", src.uri,
            "--dst", f"{dst.uri}&migrate_uri={migrate_uri()}", "--live", "--json"]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=ROOT)
    took = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    return took, str(json.loads(proc.stdout)["id"])


def _steps(db: str, migration_id: str) -> dict[str, float]:
    with Journal.open(db) as journal:
        return {
            str(e.step): e.duration
            for e in journal.history(migration_id)
            if e.kind == "ok" and e.step is not None and e.duration is not None
        }


def _guest(pair: Pair, touch_mib: int) -> None:
    if touch_mib:
        pattern = payload.Pattern(touch_mib=touch_mib, seed=0x62656E63)
        guests.create_pattern_guest(pair.src, pair.root, NAME, pattern, MEMORY_MIB)
    else:
        guests.create(pair.src, NAME, guests.domain_xml(NAME, MEMORY_MIB))


def run(rounds: int, touch_mib: int) -> dict[str, Any]:
    pair = Pair.start()
    here = [pair.src, pair.dst]  # here[0] holds the guest
    virsh_s: list[float] = []
    migrator_s: list[float] = []
    steps: list[dict[str, float]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            db = f"sqlite:///{tmp}/journal.db"
            Journal.open(db, upgrade=True).close()
            _guest(pair, touch_mib)
            for _ in range(2):  # warm-up, untimed
                _virsh(here[0], here[1])
                here.reverse()
            for round_ in range(rounds):
                for client in ("virsh", "migrator") if round_ % 2 == 0 else ("migrator", "virsh"):
                    if client == "virsh":
                        virsh_s.append(_virsh(here[0], here[1]))
                    else:
                        took, mid = _migrator(db, here[0], here[1])
                        migrator_s.append(took)
                        steps.append(_steps(db, mid))
                    here.reverse()
    finally:
        pair.stop()
    v, m = statistics.median(virsh_s), statistics.median(migrator_s)
    return {
        "rounds": rounds,
        "touch_mib": touch_mib,
        "virsh_s": virsh_s,
        "migrator_s": migrator_s,
        "virsh_median_s": v,
        "migrator_median_s": m,
        "migrator_over_virsh": m / v - 1,
        "migrator_steps_median_s": {
            step: statistics.median(s[step] for s in steps) for step in steps[0]
        },
    }


def report(result: dict[str, Any]) -> str:
    lines = [
        f"{result['rounds']} rounds, {result['touch_mib']} MiB touched"
        ", medians of whole processes:",
        f"  virsh migrate     {result['virsh_median_s']:.3f} s",
        f"  migrator migrate  {result['migrator_median_s']:.3f} s"
        f"  ({result['migrator_over_virsh']:+.1%} against virsh)",
        "  migrator's steps (journal): "
        + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in result["migrator_steps_median_s"].items()),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6, help="migrations per client")
    parser.add_argument("--touch", type=int, default=0, help="MiB the guest writes (0: tiny)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run(args.rounds, args.touch)
    print(json.dumps(result, indent=2) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
