"""Live-migrate a real QEMU guest between two qmp:/// hosts on this machine.

    python examples/qmp_live_migration.py [--memory MIB] [--bandwidth MIB] [--busy]

Needs ``qemu-system-x86_64`` (``apt-get install --no-install-recommends qemu-system-x86``)
and ``pip install 'migrator[qemu]'``. Two hosts are made in a temporary directory: a guest
is started on the first (its memory filled with a known pattern), migrated live over
loopback to the second with progress shown, its memory compared with what the source held,
and QEMU's statistics printed. Everything is stopped and removed at the end.
Exit status: 0 if the migration was confirmed and the memory is equal, 1 if not, 2 if QEMU
is missing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from migrator import Coordinator, Journal, MigrateFlags, Migration, Progress, State
from migrator.drivers.qmphost import QmpDriver, pattern_of, qemu_binary
from migrator.errors import DriverError
from migrator.states import Step


def show_progress(_m: Migration, p: Progress) -> None:
    done = 100 * p.transferred / p.total if p.total else 0
    print(f"\r  pass {p.passes}: {p.transferred >> 20} of {p.total >> 20} MiB ({done:.0f} %)",
          end="", flush=True)  # fmt: skip


def run(root: Path, memory: int, bandwidth: int, busy: bool) -> int:
    src, dst = QmpDriver(f"qmp://{root / 'a'}"), QmpDriver(f"qmp://{root / 'b'}")
    info = src.define("vm1", memory_mib=memory, busy=busy)
    print(f"vm1 runs on {src.uri}: pid {info['pid']}, {memory} MiB, {info['touch_mib']} touched")
    pattern = pattern_of(src.config("vm1"))
    before = None if busy else src.read_memory("vm1", pattern.start, pattern.size)
    stats: dict[str, object] = {}
    with Journal.open(f"sqlite:///{root / 'journal.db'}") as journal:
        coordinator = Coordinator(journal, on_progress=show_progress)
        m = coordinator.migrate(
            "vm1", src=src, dst=dst, flags=MigrateFlags.LIVE, bandwidth=bandwidth
        )
        print()
        coordinator.close()
        print(f"migration {m.id}: {m.state}{f' ({m.reason})' if m.reason else ''}")
        if m.state is not State.CONFIRMED:
            return 1
        for event in journal.history(m.id):
            if event.kind == "ok" and event.step is not None:
                print(f"  {event.step:<8} {event.duration or 0:7.3f} s")
            if event.step is Step.PERFORM and event.kind == "ok" and event.detail:
                stats = event.detail
    sent = int(stats["transferred_bytes"])  # type: ignore[call-overload]
    print(
        f"QEMU: {sent / 2**20:.1f} MiB in {stats['total_time_ms']} ms,"
        f" downtime {stats['downtime_ms']} ms, {stats['passes']} passes"
    )
    print(f"vm1 now runs on {dst.uri}: pid {dst.pid_of('vm1')}")
    if before is not None:
        equal = dst.read_memory("vm1", pattern.start, pattern.size) == before
        print(f"guest memory on the destination equals the source's: {equal}")
        if not equal:
            return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory", type=int, default=128, help="guest RAM, MiB")
    parser.add_argument("--bandwidth", type=int, default=0, help="cap in MiB/s (0: none)")
    parser.add_argument("--busy", action="store_true", help="a guest that keeps writing")
    args = parser.parse_args()
    try:
        qemu_binary()
    except DriverError as exc:
        print(f"qmp_live_migration: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="migrator-qemu-") as tmp:
        root = Path(tmp)
        try:
            return run(root, args.memory, args.bandwidth, args.busy)
        finally:
            for host in (QmpDriver(f"qmp://{root / 'a'}"), QmpDriver(f"qmp://{root / 'b'}")):
                for domain in host.domains():
                    host.destroy(domain["name"])


if __name__ == "__main__":
    sys.exit(main())
