"""``migrator migrate`` against ``virsh migrate`` between two real libvirt daemons (on demand).

    python -m tests.benchmarks.bench_libvirt [--rounds R] [--memory MIB] [--touch MIB]
                                             [--init-reaps] [--json]

Two session daemons start in a fresh directory (``tests/libvirt/daemons.py``); one guest
(64 MiB by default, the tiny one with no touched memory; ``--touch`` boots the pattern
payload so that many MiB go on the wire) migrates back and forth between them, the two
clients taking turns, in an order that rotates each round: ``virsh migrate`` and
``migrator migrate``, each timed as a whole process (start, imports and connections
included), and ``Coordinator.migrate`` called in this process (connections included),
what a controller that embeds migrator pays. All get a loopback ``migrate_uri``; migrator
journals in SQLite. A first, untimed migration each way (one by ``virsh``, one by
``migrator``) warms the daemons up, and the command's bytecode: ``migrator`` runs with a
bytecode cache of its own (``PYTHONPYCACHEPREFIX``, written even where the environment
says ``PYTHONDONTWRITEBYTECODE``), as an installed package has its ``.pyc`` files.
Medians are reported, with migrator's per-step times from its journal.

The daemons' exited QEMUs are reaped at once, as a libvirt host's init does
(``tests/libvirt/reaper.py``): libvirt's Confirm3 lasts until the source's QEMU is reaped,
which this machine's PID 1 does only once a second. ``--init-reaps`` leaves them to PID 1.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from migrator import Coordinator, MigrateFlags, State, connect
from migrator.drivers import payload
from migrator.journal.store import Journal
from tests.libvirt import guests
from tests.libvirt.daemons import Daemon, Pair, migrate_uri

NAME = "bench"
ROOT = Path(__file__).resolve().parents[2]


CPU: dict[str, list[float]] = {}
"""CPU seconds (user + system) of each timed run, by client: unlike wall time, not
stretched by whatever else the machine runs."""


def _children_cpu() -> float:
    """CPU seconds of this process's waited-for children (the QEMUs are not among them)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed_process(client: str, argv: list[str], **kwargs: Any) -> tuple[float, str]:
    cpu = _children_cpu()
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    took = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    CPU.setdefault(client, []).append(_children_cpu() - cpu)
    return took, proc.stdout


def _virsh(src: Daemon, dst: Daemon) -> float:
    argv = ["virsh", "-c", src.uri, "migrate", "--live", NAME, dst.uri,
            "--migrateuri", migrate_uri()]  # fmt: skip
    return _timed_process("virsh", argv)[0]


def _bytecode_env(cache: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPYCACHEPREFIX": cache}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _migrator(db: str, src: Daemon, dst: Daemon, env: dict[str, str]) -> tuple[float, str]:
    argv = [sys.executable, "-m", "migrator", "--db", db, "migrate", NAME, "--src", src.uri,
            "--dst", f"{dst.uri}&migrate_uri={migrate_uri()}", "--live", "--json"]  # fmt: skip
    took, out = _timed_process("migrator", argv, cwd=ROOT, env=env)
    return took, str(json.loads(out)["id"])


def _steps(db: str, migration_id: str) -> dict[str, float]:
    with Journal.open(db) as journal:
        return {
            str(e.step): e.duration
            for e in journal.history(migration_id)
            if e.kind == "ok" and e.step is not None and e.duration is not None
        }


def _guest(pair: Pair, memory_mib: int, touch_mib: int) -> None:
    if touch_mib:
        pattern = payload.Pattern(touch_mib=touch_mib, seed=0x62656E63)
        guests.create_pattern_guest(pair.src, pair.root, NAME, pattern, memory_mib)
    else:
        guests.create(pair.src, NAME, guests.domain_xml(NAME, memory_mib))


def _library(journal: Journal, src: Daemon, dst: Daemon) -> tuple[float, str]:
    """``Coordinator.migrate`` in this process: what a controller embedding migrator pays."""
    cpu = time.process_time()
    start = time.perf_counter()
    hosts = [connect(src.uri), connect(f"{dst.uri}&migrate_uri={migrate_uri()}")]
    coordinator = Coordinator(journal)
    try:
        m = coordinator.migrate(NAME, src=hosts[0], dst=hosts[1], flags=MigrateFlags.LIVE)
    finally:
        coordinator.close()
        for host in hosts:
            host.close()
    took = time.perf_counter() - start
    CPU.setdefault("library", []).append(time.process_time() - cpu)
    assert m.state is State.CONFIRMED, m.reason
    return took, m.id


CLIENTS = ("virsh", "migrator", "library")


def run(rounds: int, memory_mib: int, touch_mib: int, init_reaps: bool = False) -> dict[str, Any]:
    pair = Pair.start(reaped=not init_reaps)
    here = [pair.src, pair.dst]  # here[0] holds the guest
    times: dict[str, list[float]] = {client: [] for client in CLIENTS}
    steps: dict[str, list[dict[str, float]]] = {"migrator": [], "library": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            db = f"sqlite:///{tmp}/journal.db"
            env = _bytecode_env(f"{tmp}/pycache")
            journal = Journal.open(db, upgrade=True)
            _guest(pair, memory_mib, touch_mib)
            _virsh(here[0], here[1])  # warm-up, untimed: the daemons, the bytecode cache
            _migrator(db, here[1], here[0], env)
            CPU.clear()
            for round_ in range(rounds):
                for client in CLIENTS[round_ % 3 :] + CLIENTS[: round_ % 3]:
                    if client == "virsh":
                        times[client].append(_virsh(here[0], here[1]))
                    else:
                        if client == "migrator":
                            took, mid = _migrator(db, here[0], here[1], env)
                        else:
                            took, mid = _library(journal, here[0], here[1])
                        times[client].append(took)
                        steps[client].append(_steps(db, mid))
                    here.reverse()
            journal.close()
    finally:
        pair.stop()
    medians = {client: statistics.median(t) for client, t in times.items()}
    return {
        "rounds": rounds,
        "memory_mib": memory_mib,
        "touch_mib": touch_mib,
        "qemu_reaped_by": "PID 1" if init_reaps else "reaper.py",
        "seconds": times,
        "median_s": medians,
        "over_virsh": {c: medians[c] / medians["virsh"] - 1 for c in CLIENTS[1:]},
        "cpu_s": dict(CPU),
        "cpu_median_s": {client: statistics.median(t) for client, t in CPU.items()},
        "steps_s": steps,
        "steps_median_s": {
            client: {step: statistics.median(s[step] for s in runs) for step in runs[0]}
            for client, runs in steps.items()
        },
    }


def report(result: dict[str, Any]) -> str:
    med, over, cpu = result["median_s"], result["over_virsh"], result["cpu_median_s"]
    lines = [
        f"{result['rounds']} rounds, {result['memory_mib']} MiB guest,"
        f" {result['touch_mib']} MiB touched, exited QEMUs reaped by"
        f" {result.get('qemu_reaped_by', 'PID 1')}; medians:",
        f"  virsh migrate (process)              {med['virsh']:.3f} s, CPU {cpu['virsh']:.3f} s",
        f"  migrator migrate (process)           {med['migrator']:.3f} s"
        f"  ({over['migrator']:+.1%} against virsh), CPU {cpu['migrator']:.3f} s",
        f"  Coordinator.migrate (in a process)   {med['library']:.3f} s"
        f"  ({over['library']:+.1%} against virsh), CPU {cpu['library']:.3f} s",
    ]
    for client, by_step in result["steps_median_s"].items():
        lines.append(
            f"  {client} steps (journal): "
            + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in by_step.items())
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6, help="migrations per client")
    parser.add_argument("--memory", type=int, default=64, help="guest RAM, MiB")
    parser.add_argument("--touch", type=int, default=0, help="MiB the guest writes (0: tiny)")
    parser.add_argument(
        "--init-reaps", action="store_true", help="leave the exited QEMUs to PID 1 to reap"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run(args.rounds, args.memory, args.touch, args.init_reaps)
    print(json.dumps(result, indent=2) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
