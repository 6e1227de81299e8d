"""How a convergence policy's action behaves on real QEMU (on demand, not in tests).

    python -m tests.benchmarks.bench_convergence [--rounds N]

The busy guest (``tests/qemu/busyguest/busy.S``, 64 MiB, rewriting 46 MiB for ever) migrates
at 16 MiB/s under a 2 s budget, once with ``abort`` and once with ``pause`` per round:
for each, the wall time, the time from the ``action`` event to Perform's outcome, and for
``pause`` the passes, the bytes sent, how long the guest was stopped (``paused_ms``) and
QEMU's own downtime. Medians over the rounds (docs/convergence.md).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from migrator.convergence.policy import Action, Policy
from migrator.drivers.qmphost.driver import QmpDriver
from migrator.engine.coordinator import Coordinator
from migrator.flags import MigrateFlags
from migrator.journal.store import Journal
from tests import busyguest


def one(root: Path, kernel: Path, action: Action) -> dict[str, Any]:
    src, dst = QmpDriver(f"qmp://{root / 'a'}"), QmpDriver(f"qmp://{root / 'b'}")
    src.define("busy", memory_mib=64, kernel=str(kernel))
    try:
        with Journal.open(f"sqlite:///{root / 'journal.db'}") as journal:
            c = Coordinator(journal, step_timeout=120)
            start = time.monotonic()
            try:
                m = c.migrate(
                    "busy", src=src, dst=dst, flags=MigrateFlags.LIVE, bandwidth=16,
                    policy=Policy(budget_s_per_gib=32.0, action=action),
                )  # fmt: skip
            finally:
                c.close()
            wall = time.monotonic() - start
            history = journal.history(m.id)
    finally:
        for host in (src, dst):
            for d in host.domains():
                host._stop(d["name"])
    acted = next(e for e in history if e.kind == "action")
    outcome = next(e for e in history if e.step == "perform" and e.kind in ("ok", "error"))
    stats = outcome.detail or {}
    return {
        "state": str(m.state),
        "wall_s": wall,
        "action_to_outcome_s": (outcome.at - acted.at).total_seconds(),
        **{
            k: stats[k]
            for k in ("passes", "transferred_bytes", "paused_ms", "downtime_ms")
            if k in stats
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds
    with tempfile.TemporaryDirectory(prefix="bench-convergence-") as tmp:
        kernel = busyguest.build(Path(tmp), required=True)
        for action in (Action.ABORT, Action.PAUSE):
            runs = [one(Path(tmp) / f"{action}-{k}", kernel, action) for k in range(rounds)]
            states = sorted({r["state"] for r in runs})
            medians = {
                k: statistics.median(float(r[k]) for r in runs) for k in runs[0] if k != "state"
            }
            shown = ", ".join(
                f"{k} {v:.3f}" if v < 1000 else f"{k} {v:.0f}" for k, v in medians.items()
            )
            print(f"{action}: {'/'.join(states)} x{rounds}; median {shown}")


if __name__ == "__main__":
    main()
