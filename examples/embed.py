"""Embed migrator in a controller: two test hosts, one live migration, its history.

    python examples/embed.py [JOURNAL_URL]

The hosts live in a temporary directory that is removed at the end; so is the journal,
unless JOURNAL_URL names one (``sqlite:///FILE`` or ``postgresql+psycopg://...``).
Exit status: 0 if the migration was confirmed, 1 if not, 2 if it was refused or the journal
cannot be used.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from migrator import (
    Coordinator,
    Event,
    Journal,
    JournalError,
    MigrateFlags,
    Migration,
    Progress,
    State,
    UsageError,
    connect,
)
from migrator.drivers.test import TestDriver


def on_progress(migration: Migration, progress: Progress) -> None:
    """Called from the driver's worker thread for each progress sample of Perform."""
    done = progress.transferred * 100 // max(progress.total, 1)
    print(f"  {migration.domain}: {done}% sent", file=sys.stderr)


def describe(event: Event) -> str:
    """One line: seq, step (with the cancelled flag of Finish and Confirm), kind, state..."""
    step = (event.step or "-") + ("" if event.cancelled is None else f"({int(event.cancelled)})")
    took = "" if event.duration is None else f"{event.duration * 1000:.1f} ms"
    error = f"  {event.error_type}: {event.error_message}" if event.error_type else ""
    line = f"{event.seq:>3}  {step:<11} {event.kind:<8} {event.state:<15} {took:>9}{error}"
    return line.rstrip()


def migrate(journal: Journal, hosts: Path) -> Migration:
    TestDriver(f"test://{hosts}/a").define("vm1", memory_mib=16)  # a running domain on a
    src, dst = connect(f"test://{hosts}/a"), connect(f"test://{hosts}/b")
    coordinator = Coordinator(journal, step_timeout=60, on_progress=on_progress)
    try:
        return coordinator.migrate("vm1", src=src, dst=dst, flags=MigrateFlags.LIVE, bandwidth=64)
    finally:
        coordinator.close()


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="migrator-embed-") as tmp:
        url = sys.argv[1] if len(sys.argv) > 1 else f"sqlite:///{tmp}/journal.db"
        try:
            journal = Journal.open(url)  # SQLite: created and upgraded on first use
        except JournalError as exc:  # unreachable, or a PostgreSQL journal not upgraded yet
            print(f"journal: {exc}", file=sys.stderr)
            return 2
        with journal:
            try:
                m = migrate(journal, Path(tmp))
            except UsageError as exc:  # refused before anything was journaled or called
                print(f"refused: {exc}", file=sys.stderr)
                return 2
            print(f"migration {m.id}: {m.state}" + (f" ({m.reason})" if m.reason else ""))
            for event in journal.history(m.id):
                print(describe(event))
    return 0 if m.state is State.CONFIRMED else 1


if __name__ == "__main__":
    sys.exit(main())
