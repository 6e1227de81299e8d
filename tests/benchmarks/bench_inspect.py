"""Read commands on a large journal, timed as whole ``migrator`` processes.

The journal is built fast: one real migration between ``null://`` hosts gives a template
(its row and its events, as the engine wrote them), then SQLAlchemy Core bulk-inserts
copies of it, ten events per migration, with fresh ids and times one minute apart; one in
ten ended otherwise (rolled back, failed, in doubt) with a reason. It is built once per
schema revision and size, and kept under the temporary directory.

Each command runs as a new process (interpreter start and imports included); its peak
resident memory comes from ``/usr/bin/time``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from migrator import Coordinator, Journal, connect

CHUNK = 5_000
TIME = "/usr/bin/time"
OTHER_ENDS = (
    ("ROLLED_BACK", "perform failed: connection reset by peer"),
    ("FAILED", "prepare failed: no space left on device"),
    ("IN_DOUBT", "finish failed: host unreachable"),
)
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def _template(url: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One migration's row and events, as the engine journals them."""
    with Journal.open(url) as journal:
        src, dst = connect(f"null://{uuid.uuid4()}"), connect(f"null://{uuid.uuid4()}")
        src.define("vm")  # type: ignore[attr-defined]
        coordinator = Coordinator(journal)
        mid = coordinator.migrate("vm", src=src, dst=dst).id
        coordinator.close()
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    meta.reflect(engine, only=["migrations", "migration_events"])
    m, e = meta.tables["migrations"], meta.tables["migration_events"]
    with engine.begin() as conn:
        row = dict(conn.execute(sa.select(m).where(m.c.id == mid)).mappings().one())
        events = [dict(r) for r in conn.execute(sa.select(e).order_by(e.c.seq)).mappings()]
        conn.execute(e.delete())
        conn.execute(m.delete())
    engine.dispose()
    return row, events


def _chunk(
    start: int, count: int, row: dict[str, Any], events: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows, evs = [], []
    for n in range(start, start + count):
        mid, created = str(uuid.uuid4()), EPOCH + timedelta(minutes=n)
        state, reason = ("CONFIRMED", None) if n % 10 else OTHER_ENDS[(n // 10) % 3]
        rows.append(
            {
                **row,
                "id": mid,
                "domain": f"vm{n % 500}",
                "state": state,
                "reason": reason,
                "created_at": created,
                "updated_at": created + timedelta(seconds=2),
                "finished_at": created + timedelta(seconds=2),
            }
        )
        for ev in events:
            at = created + timedelta(seconds=ev["seq"] / 5)
            evs.append({**ev, "migration_id": mid, "at": at})
    return rows, evs


def build(path: Path, migrations: int) -> None:
    url = f"sqlite:///{path}"
    row, events = _template(url)
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    meta.reflect(engine, only=["migrations", "migration_events"])
    m, e = meta.tables["migrations"], meta.tables["migration_events"]
    with engine.begin() as conn:
        conn.exec_driver_sql("PRAGMA synchronous = OFF")
        for start in range(0, migrations, CHUNK):
            rows, evs = _chunk(start, min(CHUNK, migrations - start), row, events)
            conn.execute(m.insert(), rows)
            conn.execute(e.insert(), evs)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")  # no ANALYZE: journals have none
    engine.dispose()


def cached_journal(migrations: int) -> tuple[str, int, str]:
    """A journal of ``migrations`` finished migrations at this schema revision: its URL, its
    number of events, and the id of a migration in its middle."""
    probe = Path(tempfile.gettempdir()) / f"migrator-bench-probe-{os.getpid()}.db"
    with Journal.open(f"sqlite:///{probe}") as journal:
        revision = journal.revision()
    for leftover in probe.parent.glob(probe.name + "*"):
        leftover.unlink()
    path = Path(tempfile.gettempdir()) / f"migrator-bench-journal-{revision}-{migrations}.db"
    if not path.exists():
        building = path.with_suffix(f".building-{os.getpid()}")
        build(building, migrations)
        building.rename(path)
        Path(f"{building}.upgrade-lock").unlink(missing_ok=True)
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        count = conn.exec_driver_sql("SELECT count(*) FROM migration_events").scalar_one()
        some = conn.exec_driver_sql(
            "SELECT id FROM migrations ORDER BY created_at LIMIT 1 OFFSET ?", (migrations // 2,)
        ).scalar_one()
    engine.dispose()
    return f"sqlite:///{path}", int(count), str(some)


def migrator_argv() -> list[str]:
    script = Path(sys.executable).parent / "migrator"
    return [str(script)] if script.exists() else [sys.executable, "-m", "migrator"]


def run_command(args: list[str], db: str | None) -> tuple[float, float]:
    """Seconds and peak RSS (MiB) of one ``migrator ARGS`` process; its output is dropped.

    The peak comes from ``/usr/bin/time`` (a child of this process would report this
    process's own peak: Linux keeps it across fork and exec)."""
    env = {**os.environ, "MIGRATOR_DB": db} if db else dict(os.environ)
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        argv = [TIME, "-f", "%M", "-o", rss.name, *migrator_argv(), *args]
        start = time.perf_counter()
        proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        elapsed = time.perf_counter() - start
        peak_kib = int(rss.read().split()[-1])
    if proc.returncode not in (0, 1, 3):
        raise RuntimeError(f"migrator {' '.join(args)}: exit {proc.returncode}: {proc.stderr!r}")
    return elapsed, peak_kib / 1024


def small_journal(tmp: Path) -> str:
    url = f"sqlite:///{tmp / 'small.db'}"
    with Journal.open(url) as journal:
        src, dst = connect(f"null://{uuid.uuid4()}"), connect(f"null://{uuid.uuid4()}")
        coordinator = Coordinator(journal)
        for i in range(20):
            src.define(f"vm{i}")  # type: ignore[attr-defined]
            coordinator.migrate(f"vm{i}", src=src, dst=dst)
        coordinator.close()
    return url
