"""The work behind CLI commands that need more than one library call to render."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from migrator.cli.render import console, header, safe, timeline
from migrator.coordinator import Coordinator, Recovered
from migrator.drivers.base import connect
from migrator.drivers.test import TestDriver
from migrator.errors import InvalidURI, UsageError
from migrator.flags import MigrateFlags
from migrator.inspect import migration_dict
from migrator.journal.store import Journal
from migrator.records import Migration, Progress
from migrator.states import TERMINAL, State

EXIT_BY_STATE = {State.CONFIRMED: 0, State.IN_DOUBT: 3}
AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str) -> datetime:
    """An ISO time (naive means UTC) or an age such as ``30s``, ``15m``, ``2h``, ``3d``."""
    value = text.strip()
    if value[:-1].isdigit() and value[-1:] in AGE_UNITS:
        return datetime.now(UTC) - timedelta(seconds=int(value[:-1]) * AGE_UNITS[value[-1]])
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"--since {text!r}: expected an ISO time or an age like 30s, 2h, 3d"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def exit_code(state: State) -> int:
    return EXIT_BY_STATE.get(state, 1)


def test_host(uri: str) -> TestDriver:
    driver = connect(uri)
    if not isinstance(driver, TestDriver):
        raise InvalidURI(uri=uri, reason="not a test host (expected test:///ABS/DIR)")
    return driver


@contextmanager
def _progress_bar(enabled: bool) -> Iterator[Callable[[Migration, Progress], None] | None]:
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich import progress as rp

    with rp.Progress(
        "[progress.description]{task.description}",
        rp.BarColumn(),
        rp.DownloadColumn(binary_units=True),
        rp.TransferSpeedColumn(),
        console=console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("perform", total=None)

        def update(_m: Migration, p: Progress) -> None:
            bar.update(
                task, total=p.total, completed=p.transferred, description=f"perform pass {p.passes}"
            )

        yield update


def migrate(
    db: str,
    domain: str,
    *,
    src: str,
    dst: str,
    flags: MigrateFlags,
    bandwidth: int,
    dname: str | None,
    protocol: int | None,
    timeout: float,
    progress: bool,
) -> dict[str, Any]:
    src_driver, dst_driver = connect(src), connect(dst)
    journal = Journal.open(db)
    with _progress_bar(progress) as on_progress:
        coordinator = Coordinator(journal, step_timeout=timeout, on_progress=on_progress)
        try:
            migration = coordinator.migrate(
                domain,
                src=src_driver,
                dst=dst_driver,
                flags=flags,
                dname=dname,
                bandwidth=bandwidth,
                protocol=protocol,
            )
        except KeyboardInterrupt:
            _interrupted(journal, coordinator.id)
            raise
    return {**migration_dict(migration), "exit_code": exit_code(migration.state)}


def _interrupted(journal: Journal, coordinator_id: str) -> None:
    for m in journal.list(limit=20):
        if m.owner == coordinator_id and m.state not in TERMINAL:
            click.echo(
                f"migrator: interrupted: migration {m.id} left in {m.state}; "
                "`migrator recover` brings it to a safe end",
                err=True,
            )
            return


def print_outcome(outcome: dict[str, Any]) -> None:
    out = console()
    out.print(f"migration {outcome['id']}")
    out.print(f"state     {outcome['state']}")
    if outcome["reason"]:
        out.print(f"reason    {safe(outcome['reason'])}", markup=False)


def print_timeline(data: dict[str, Any]) -> None:
    out = console()
    out.print(header(data))
    out.print()
    out.print(timeline(data))


def print_domains(domains: list[dict[str, Any]]) -> None:
    from rich.table import Table
    from rich.text import Text

    if not domains:
        console().print("no domains")
        return
    table = Table(box=None, header_style="bold")
    for column in ("NAME", "STATE", "MEMORY", "LEASE", "JOB"):
        table.add_column(column)
    for d in domains:
        table.add_row(
            Text(safe(d["name"], 60)),
            d["state"],
            f"{d.get('memory_mib', '?')} MiB",
            "held" if d.get("lease_held") else "-",
            Text(safe(d.get("job") or "-", 40)),
        )
    console().print(table)


def demo(db: str, *, memory: int, bandwidth: int) -> int:
    out = console()
    with tempfile.TemporaryDirectory(prefix="migrator-demo-") as tmp:
        src_uri, dst_uri = f"test://{Path(tmp) / 'host-a'}", f"test://{Path(tmp) / 'host-b'}"
        src, dst = test_host(src_uri), test_host(dst_uri)
        src.define("demo-vm", memory_mib=memory)
        out.print(f"hosts   {src_uri}  {dst_uri}", markup=False)
        out.print(
            f"domain  demo-vm ({memory} MiB) running on host-a; live migration at {bandwidth} MiB/s"
        )
        journal = Journal.open(db)
        with _progress_bar(True) as on_progress:
            coordinator = Coordinator(journal, on_progress=on_progress)
            migration = coordinator.migrate(
                "demo-vm", src=src, dst=dst, flags=MigrateFlags.LIVE, bandwidth=bandwidth
            )
        out.print(f"journal {journal.url}\n", markup=False)
        from migrator import inspect

        print_timeline(inspect.show(journal, migration.id))
        where = {d["name"]: d["state"] for d in dst.domains()}
        out.print(
            f"\nhost-a: {len(src.domains())} domains; "
            f"host-b: demo-vm {where.get('demo-vm', 'absent')}"
        )
        out.print(f"see it again with: migrator show {migration.id[:8]}")
    return exit_code(migration.state)


# -- recovery -------------------------------------------------------------------------------


def recover(db: str, *, dry_run: bool, steal: bool, timeout: float) -> list[dict[str, Any]]:
    journal = Journal.open(db)
    coordinator = Coordinator(journal, step_timeout=timeout)
    return [_recovered_dict(r) for r in coordinator.recover(dry_run=dry_run, steal=steal)]


def _recovered_dict(r: Recovered) -> dict[str, Any]:
    return {
        "id": r.id,
        "state": r.state.value,
        "action": r.plan.text,
        "action_code": r.plan.action.value,
        "claimed": r.claimed,
        "because": r.claimed_because,
        "result": r.result.value if r.result else None,
        "reason": r.reason,
        "note": r.note,
    }


SAFE_ENDS = {State.CONFIRMED.value, State.ROLLED_BACK.value, State.FAILED.value}


def recover_exit_code(rows: list[dict[str, Any]], *, dry_run: bool) -> int:
    """0 all claimed reached a safe end (or nothing to do), 3 any IN_DOUBT, 1 a failure."""
    if dry_run:
        return 0
    results = [r["result"] for r in rows if r["claimed"]]
    if any(r == State.IN_DOUBT.value for r in results):
        return 3
    if any(r not in SAFE_ENDS for r in results):
        return 1
    return 0


def print_recovery(rows: list[dict[str, Any]], *, dry_run: bool, steal: bool) -> None:
    from rich.table import Table
    from rich.text import Text

    out = console()
    if not rows:
        out.print("nothing to recover")
        return
    table = Table(box=None, header_style="bold")
    for column in ("ID", "STATE", "PLAN" if dry_run else "ACTION", "RESULT"):
        table.add_column(column)
    for r in rows:
        if dry_run:
            result = "would claim: " + r["because"] if r["because"] else "owner alive: left alone"
        elif r["claimed"]:
            result = r["result"] or f"not finished: {r['note']}"
        else:
            result = r["note"] or "owner alive: left alone (--steal takes it)"
        table.add_row(r["id"][:8], r["state"], Text(r["action"]), Text(safe(result)))
    out.print(table)


def resolve(db: str, migration_id: str, *, running_on: str) -> dict[str, Any]:
    coordinator = Coordinator(Journal.open(db))
    migration = coordinator.resolve(migration_id, running_on=running_on)
    return {**migration_dict(migration), "exit_code": exit_code(migration.state)}


def abort(db: str, migration_id: str) -> dict[str, Any]:
    coordinator = Coordinator(Journal.open(db))
    return migration_dict(coordinator.abort(migration_id))


def print_divergence(data: dict[str, Any]) -> None:
    at = data["divergence"]
    out = console()
    out.print(f"{data['id']}: DIVERGES at seq {at['seq']}", markup=False)
    for label in ("recorded", "replayed"):
        sig = at[label]
        text = "nothing" if sig is None else " ".join(f"{k}={v}" for k, v in sig.items())
        out.print(f"  {label:9} {safe(text)}", markup=False)
    if data["note"]:
        out.print(f"  note      {safe(data['note'])}", markup=False)
