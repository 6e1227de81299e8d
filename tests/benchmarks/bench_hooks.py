"""What a slow hook adds to the blackout (run on demand, not in the test run).

    python -m tests.benchmarks.bench_hooks [--rounds R] [--seconds S] [--qemu]

A guest migrates back and forth between two test:/// hosts (with ``--qemu``, two qmp:///
hosts: 64 MiB, 32 MiB touched, live), journaled in SQLite, ``R`` times without hooks and
``R`` times with a hook command that sleeps ``S`` seconds (5) on Perform's outcome and on
Finish's intent, alternately. For each migration the journal gives the seconds from
Perform's outcome to the start of the Finish call (``tests/blackout.py``); the report is
the median and the maximum of each kind, and what the hook adds (difference of medians;
the goal: under 50 ms).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from migrator import Coordinator, Journal, MigrateFlags
from migrator.drivers.api import Driver
from migrator.drivers.qmphost import QmpDriver
from migrator.drivers.test import TestDriver
from migrator.hooks import CommandHook
from tests.blackout import gap, slow_hook
from tests.qemu.rig import stop_processes


def hosts(root: Path, qemu: bool) -> tuple[Driver, Driver]:
    if qemu:
        a, b = QmpDriver(f"qmp://{root / 'a'}"), QmpDriver(f"qmp://{root / 'b'}")
        a.define("vm1", memory_mib=64, touch_mib=32)
        return a, b
    ta, tb = TestDriver(f"test://{root / 'a'}"), TestDriver(f"test://{root / 'b'}")
    ta.define("vm1", memory_mib=16)
    return ta, tb


def run(rounds: int, seconds: float, qemu: bool) -> dict[str, list[float]]:
    gaps: dict[str, list[float]] = {"plain": [], "hooked": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        src, dst = hosts(root, qemu)
        flags = MigrateFlags.LIVE
        with Journal.open(f"sqlite:///{root / 'journal.db'}") as journal:
            plain = Coordinator(journal)
            hooked = Coordinator(journal, hooks=[CommandHook(slow_hook(root, seconds))])
            try:
                for k in range(2 * rounds):
                    kind, coordinator = ("hooked", hooked) if k % 2 else ("plain", plain)
                    m = coordinator.migrate("vm1", src=src, dst=dst, flags=flags)
                    gaps[kind].append(gap(journal, m.id).outcome_to_call)
                    src, dst = dst, src
            finally:
                plain.close()
                hooked.close()
        if qemu:
            stop_processes(root)
    return gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--qemu", action="store_true")
    args = parser.parse_args()
    gaps = run(args.rounds, args.seconds, args.qemu)
    for kind, values in gaps.items():
        ms = [v * 1000 for v in values]
        print(
            f"{kind:6}  median {statistics.median(ms):7.2f} ms  max {max(ms):7.2f} ms  n={len(ms)}"
        )
    added = statistics.median(gaps["hooked"]) - statistics.median(gaps["plain"])
    print(f"a {args.seconds:g} s hook adds {added * 1000:+.2f} ms (goal: under 50 ms)")


if __name__ == "__main__":
    main()
