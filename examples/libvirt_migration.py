"""Live-migrate a guest between two real libvirt hosts, journaled, from Python.

    python examples/libvirt_migration.py DOMAIN --src URI --dst URI [--db URL] [--bandwidth MIB]

e.g. ``vm1 --src qemu+tcp://hostA/system --dst qemu+tcp://hostB/system``, or two daemons on
this machine: ``--src 'qemu+unix:///session?socket=/run/a.sock' --dst
'qemu+unix:///session?socket=/run/b.sock&migrate_uri=tcp://127.0.0.1:49152'`` (see
docs/libvirt.md). The five steps run with progress shown, each step's time is printed from
the journal, then what each host says of the guest. Exit status: 0 if the migration was
confirmed, 1 if not (the journal says why; ``migrator show ID``).
"""

from __future__ import annotations

import argparse
import sys

from migrator import Coordinator, Journal, MigrateFlags, Migration, Progress, State, connect


def show_progress(_m: Migration, p: Progress) -> None:
    done = 100 * p.transferred / p.total if p.total else 0
    print(f"\r  pass {p.passes}: {p.transferred >> 20} of {p.total >> 20} MiB ({done:.0f} %)",
          end="", flush=True)  # fmt: skip


def run(domain: str, src_uri: str, dst_uri: str, db: str, bandwidth: int) -> int:
    src, dst = connect(src_uri), connect(dst_uri)
    with Journal.open(db) as journal:
        coordinator = Coordinator(journal, on_progress=show_progress)
        try:
            m = coordinator.migrate(
                domain, src=src, dst=dst, flags=MigrateFlags.LIVE, bandwidth=bandwidth
            )
        finally:
            coordinator.close()
        print()
        print(f"migration {m.id}: {m.state}{f' ({m.reason})' if m.reason else ''}")
        for event in journal.history(m.id):
            if event.kind == "ok" and event.step is not None:
                print(f"  {event.step:<8} {event.duration or 0:7.3f} s")
    for name, host in (("source", src), ("destination", dst)):
        print(f"{name:<12} {host.probe(domain).state}")
        host.close()
    return 0 if m.state is State.CONFIRMED else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("domain")
    parser.add_argument("--src", required=True, help="source host URI")
    parser.add_argument("--dst", required=True, help="destination host URI")
    parser.add_argument("--db", default="sqlite:///migrator.db", help="journal URL")
    parser.add_argument("--bandwidth", type=int, default=0, help="cap in MiB/s (0: none)")
    args = parser.parse_args()
    return run(args.domain, args.src, args.dst, args.db, args.bandwidth)


if __name__ == "__main__":
    sys.exit(main())
