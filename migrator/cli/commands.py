"""The work behind CLI commands that need more than one library call to render."""

from __future__ import annotations

import json
import logging
import os
import shutil
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
from migrator.failpoints import Failpoints
from migrator.flags import MigrateFlags
from migrator.inspect import migration_dict
from migrator.journal.store import Journal
from migrator.records import Migration, Progress
from migrator.states import TERMINAL, State

EXIT_BY_STATE = {State.CONFIRMED: 0, State.IN_DOUBT: 3}
AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(text: str, option: str) -> timedelta:
    """A duration such as ``30s``, ``15m``, ``2h``, ``3d``, ``1w``; else a UsageError."""
    value = text.strip()
    if value[:-1].isdigit() and value[-1:] in AGE_UNITS:
        return timedelta(seconds=int(value[:-1]) * AGE_UNITS[value[-1]])
    raise UsageError(f"{option} {text!r}: expected a duration like 30s, 2h, 3d")


def parse_time(text: str, option: str = "--since") -> datetime:
    """An ISO time (naive means UTC) or an age such as ``30s``, ``15m``, ``2h``, ``3d``."""
    value = text.strip()
    if value[:-1].isdigit() and value[-1:] in AGE_UNITS:
        return datetime.now(UTC) - parse_age(value, option)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"{option} {text!r}: expected an ISO time or an age like 30s, 2h, 3d"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def parse_since(text: str) -> datetime:
    return parse_time(text, "--since")


def hooks_from(commands: tuple[str, ...]) -> list[Any]:
    """``--hook-command`` values as hooks; an empty or unparsable one is a UsageError."""
    from migrator.hooks import CommandHook

    hooks = []
    for command in commands:
        try:
            hook = CommandHook(command)
        except ValueError as exc:
            raise UsageError(f"--hook-command {command!r}: {exc}") from None
        if shutil.which(hook.argv[0]) is None:
            raise UsageError(f"--hook-command {command!r}: {hook.argv[0]!r} not found")
        hooks.append(hook)
    if hooks:
        _show_hook_warnings()
    return hooks


class _WarningLine(logging.Handler):
    """Log records as one escaped line on stderr: ``migrator: warning: ...``."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"migrator: warning: {safe(record.getMessage(), 1000)}", err=True)


def _show_hook_warnings() -> None:
    logger = logging.getLogger("migrator.hooks")
    if not any(isinstance(h, _WarningLine) for h in logger.handlers):
        logger.addHandler(_WarningLine(logging.WARNING))


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
    hook_commands: tuple[str, ...] = (),
) -> dict[str, Any]:
    hooks = hooks_from(hook_commands)
    src_driver, dst_driver = connect(src), connect(dst)
    journal = Journal.open(db)
    with _progress_bar(progress) as on_progress:
        coordinator = Coordinator(
            journal, step_timeout=timeout, on_progress=on_progress, hooks=hooks,
            failpoints=Failpoints.from_env(),
        )  # fmt: skip
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
            coordinator = Coordinator(
                journal, on_progress=on_progress, failpoints=Failpoints.from_env()
            )
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


def recover(
    db: str, *, dry_run: bool, steal: bool, timeout: float, hook_commands: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    hooks = hooks_from(hook_commands)
    journal = Journal.open(db)
    coordinator = Coordinator(
        journal, step_timeout=timeout, hooks=hooks, failpoints=Failpoints.from_env()
    )
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


def resolve(
    db: str, migration_id: str, *, running_on: str, hook_commands: tuple[str, ...] = ()
) -> dict[str, Any]:
    hooks = hooks_from(hook_commands)
    coordinator = Coordinator(Journal.open(db), hooks=hooks, failpoints=Failpoints.from_env())
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


# -- export, stats, prune, metrics --------------------------------------------------------------


def export_lines(
    journal: Journal,
    migration_id: str | None,
    *,
    everything: bool,
    states: tuple[str, ...],
    since: str | None,
) -> Iterator[str]:
    """One indented JSON document for an ID, or JSON Lines (one per migration) for --all."""
    from migrator import inspect

    if everything == (migration_id is not None):
        raise UsageError("give a migration ID or --all, not both")
    if not everything and (states or since):
        raise UsageError("--state and --since go with --all")
    if migration_id is not None:
        yield json.dumps(inspect.export(journal, migration_id), indent=2) + "\n"
        return
    wanted = [State(s.upper()) for s in states]
    after = parse_time(since) if since else None
    for doc in inspect.export_all(journal, states=wanted, since=after):
        yield json.dumps(doc, separators=(",", ":")) + "\n"


def write_text(lines: Iterator[str], output: str | None) -> None:
    """To stdout, or to ``output`` whole: written to a sibling file, then renamed over it."""
    if output is None:
        for line in lines:
            click.echo(line, nl=False)
        return
    _write_atomically(Path(output), lambda f: f.writelines(s.encode() for s in lines))


def write_bytes(data: bytes, output: str | None) -> None:
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    _write_atomically(Path(output), lambda f: f.write(data))


def _write_atomically(path: Path, write: Callable[[Any], object]) -> None:
    if not path.parent.is_dir():
        raise UsageError(f"-o {path}: no such directory {path.parent}")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def print_stats(data: dict[str, Any]) -> None:
    from rich.table import Table
    from rich.text import Text

    out = console()
    since = f" since {data['since']}" if data["since"] else ""
    out.print(f"{data['total']} migrations{since}, {data['in_flight']} in flight", markup=False)
    if data["outcomes"]:
        outcomes = Table(box=None, header_style="bold")
        outcomes.add_column("STATE")
        outcomes.add_column("COUNT", justify="right")
        for state, n in data["outcomes"].items():
            outcomes.add_row(state, str(n))
        out.print(outcomes)
    if data["steps"]:
        steps = Table(box=None, header_style="bold")
        for column in ("STEP", "CALLS", "ERRORS", "P50", "P95", "MAX"):
            steps.add_column(column, justify="left" if column == "STEP" else "right")
        for step, s in data["steps"].items():
            times = [f"{s[k] * 1000:.1f} ms" for k in ("p50", "p95", "max")]
            steps.add_row(step, str(s["count"]), str(s["errors"]), *times)
        out.print(steps)
    if data["top_reasons"]:
        reasons = Table(box=None, header_style="bold")
        reasons.add_column("COUNT", justify="right")
        reasons.add_column("TOP FAILURE REASONS")
        for r in data["top_reasons"]:
            reasons.add_row(str(r["count"]), Text(safe(r["reason"], 160)))
        out.print(reasons)


def print_pruned(rows: list[dict[str, Any]], *, dry_run: bool) -> None:
    out = console()
    verb = "would delete" if dry_run else "deleted"
    out.print(f"{verb} {len(rows)} migrations with their events", markup=False)
    for m in rows:
        out.print(f"  {m['id']}  {m['state']:<12} {safe(m['domain'], 60)}", markup=False)


def serve_metrics(journal: Journal, *, port: int, bind: str) -> None:
    """Serve /metrics until interrupted; without prometheus-client, one clear error."""
    from migrator import metrics

    server = metrics.serve_journal(journal, port=port, addr=bind)
    click.echo(f"serving metrics of {journal.url} on http://{bind}:{server.port}/metrics", err=True)
    try:
        server.wait()
    finally:
        server.close()
