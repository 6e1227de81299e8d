"""``migrator submit``, ``migrator worker`` and ``migrator workers``: queue migrations, run a
worker that drives them, and see the live workers (docs/workers.md)."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from migrator.cli import context
from migrator.cli.convergence import policy_of, policy_options
from migrator.cli.exits import ExitCode
from migrator.cli.migrate import flags_of, request_options
from migrator.cli.options import (
    SECONDS,
    Count,
    Seconds,
    Text,
    hook_option,
    hooks_from,
    json_option,
)
from migrator.errors import UsageError

F = TypeVar("F", bound=Callable[..., Any])
LEASE_SECONDS = 30.0
"""A worker's lease unless told (``Journal.open``'s default, without importing it)."""
MIN_LEASE = 0.5
"""The shortest lease a worker takes: shorter, a busy journal write would lose it."""
MIN_POLL = 0.01
"""The shortest poll interval: shorter, a worker polls the journal in a busy loop."""

if TYPE_CHECKING:
    from migrator.hostlimits import HostLimits
    from migrator.workers import Worker
    from migrator.workers.fleet import Seen


@click.command()
@request_options
@click.option(
    "--timeout",
    type=SECONDS,
    default=600.0,
    show_default=True,
    help="Seconds each pre-flight check of a host may take (the worker's --timeout bounds"
    " the steps).",
)
@json_option
@policy_options
def submit(
    domain: str,
    src: str,
    dst: str,
    live: bool,
    tunnelled: bool,
    flag_names: tuple[str, ...],
    bandwidth: int,
    dname: str | None,
    protocol: int | None,
    timeout: float,
    as_json: bool,
    policy_args: dict[str, Any],
) -> None:
    """Queue a migration of DOMAIN for a worker to drive; print its id at once.

    The policy options (docs/convergence.md) are journaled with it for the worker."""
    from migrator.drivers.registry import connect
    from migrator.inspect import migration_dict

    with context.errors():
        if bandwidth < 0:
            raise UsageError(f"--bandwidth must be >= 0 MiB/s, not {bandwidth}")
        flags = flags_of(flag_names, live=live, tunnelled=tunnelled)
        policy = policy_of(policy_args, domain=domain, src=src, dst=dst)
        coordinator = context.coordinator(context.journal(), step_timeout=timeout)
        migration = coordinator.submit(
            domain,
            src=connect(src),
            dst=connect(dst),
            flags=flags,
            dname=dname,
            bandwidth=bandwidth,
            protocol=protocol,
            policy=policy,
        )
    if as_json:
        context.print_json(migration_dict(migration))
    else:
        click.echo(migration.id)


@click.command()
@click.option(
    "--concurrency",
    type=Count(1),
    default=4,
    show_default=True,
    help="Migrations driven at once by this worker.",
)
@click.option(
    "--max-outgoing",
    type=Count(1),
    metavar="N",
    help="At most N migrations leaving any one host at once, across all workers.",
)
@click.option(
    "--max-incoming",
    type=Count(1),
    metavar="M",
    help="At most M migrations entering any one host at once, across all workers.",
)
@click.option(
    "--limits",
    "limits_file",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Per-host limits, TOML or .json (the options above override its defaults).",
)
@click.option(
    "--lease",
    type=Seconds(least=MIN_LEASE),
    default=LEASE_SECONDS,
    show_default=True,
    help="Seconds (at least 0.5) a held migration stays ours without a heartbeat.",
)
@click.option(
    "--poll",
    type=Seconds(least=MIN_POLL),
    default=1.0,
    show_default=True,
    help="Seconds (at least 0.01) between looks at the queue and for lapsed leases.",
)
@click.option(
    "--timeout", type=SECONDS, default=600.0, show_default=True, help="Per-step timeout, s."
)
@hook_option
@click.option(
    "--by-lease-only",
    is_flag=True,
    help="Take a migration over only once its lease lapsed, never by its owner's PID.",
)
@click.option("--quiet", is_flag=True, help="Log only warnings to stderr.")
def worker(
    concurrency: int,
    max_outgoing: int | None,
    max_incoming: int | None,
    limits_file: Path | None,
    lease: float,
    poll: float,
    timeout: float,
    hook_commands: tuple[str, ...],
    by_lease_only: bool,
    quiet: bool,
) -> None:
    """Claim queued migrations and drive them until SIGTERM; take over orphaned ones.

    SIGTERM: claim nothing new, finish what is past the point of no return, hand the rest
    over at a step boundary. A second SIGTERM, or SIGINT: hand everything over at its next
    step boundary.
    """
    from migrator.failpoints import Failpoints
    from migrator.journal.store import Journal
    from migrator.workers import Worker

    with context.errors():
        limits = _limits(limits_file, max_outgoing, max_incoming)
        hooks = hooks_from(hook_commands)  # every option checked before the journal opens
        opened = Journal.open(context.settings().db, lease_seconds=lease)
        click.get_current_context().with_resource(opened)
        running = Worker(
            opened,
            concurrency=concurrency,
            limits=limits,
            poll=poll,
            step_timeout=timeout,
            connect=context.connecting(timeout),
            hooks=hooks,
            failpoints=Failpoints.from_env(),
            by_lease_only=by_lease_only,
        )
        running.register()  # limits that differ from the running workers': refused here
        context.trace(opened, running.id)
        _log_to_stderr(logging.WARNING if quiet else logging.INFO)
        _on_signals(running)
        click.echo(f"worker {running.id} started", err=True)
        running.run()
    sys.exit(ExitCode.OK)


def _limits(path: Path | None, out: int | None, into: int | None) -> HostLimits:
    from migrator.hostlimits import UNLIMITED, HostLimits

    loaded = HostLimits.load(path) if path is not None else UNLIMITED
    return loaded.with_defaults(max_outgoing=out, max_incoming=into)


def _on_signals(running: Worker) -> None:
    def terminate(_signum: int, _frame: Any) -> None:
        running.stop()

    def interrupt(_signum: int, _frame: Any) -> None:
        running.stop(now=True)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, interrupt)


def _log_to_stderr(level: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    for name in ("migrator.workers", "migrator.engine"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(level)


def _lease_option(f: F) -> F:
    return click.option(
        "--lease",
        type=Seconds(least=MIN_LEASE),
        default=LEASE_SECONDS,
        show_default=True,
        help="The workers' --lease: a worker silent this long is dead.",
    )(f)


@click.group(invoke_without_command=True)
@click.option(
    "--within",
    type=Seconds(zero=True),
    default=60.0,
    show_default=True,
    help="Only workers that heartbeat within this many seconds.",
)
@_lease_option
@click.option("--all", "everything", is_flag=True, help="Every registered worker, dead too.")
@json_option
@click.pass_context
def workers(
    ctx: click.Context, within: float, lease: float, everything: bool, as_json: bool
) -> None:
    """List the live workers: id, host, pid, started, last heartbeat, what each holds."""
    from migrator.workers import fleet

    if ctx.invoked_subcommand is not None:
        return
    with context.errors():
        found = fleet.seen(
            context.journal(existing=True), lease=lease, within=None if everything else within,
            dead=everything,
        )  # fmt: skip
        rows = [_worker_dict(s) for s in found]
    if as_json:
        context.print_json(rows)
        return
    _print_workers(rows)


@workers.command("forget")
@click.argument("ids", nargs=-1, type=Text(255), metavar="[ID]...")
@_lease_option
def forget(ids: tuple[str, ...], lease: float) -> None:
    """Forget dead workers' rows: those named, else every dead one."""
    from migrator.workers import fleet

    with context.errors():
        gone = fleet.forget(context.journal(), ids, lease=lease)
    click.echo(f"forgot {len(gone)} dead worker{'s' if len(gone) != 1 else ''}")


def _worker_dict(s: Seen) -> dict[str, Any]:
    from migrator.jsonform import iso

    w = s.info
    return {
        "id": w.id,
        "hostname": w.hostname,
        "pid": w.pid,
        "concurrency": w.concurrency,
        "started_at": iso(w.started_at),
        "heartbeat_at": iso(w.heartbeat_at),
        "stopping": w.stopping,
        "lease_seconds": w.lease_seconds,
        "limits": w.limits,
        "state": str(s.status),
        "holds": list(w.holds),
    }


def _print_workers(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table
    from rich.text import Text

    from migrator.cli.render import console, safe

    if not rows:
        console().print("no live workers")
        return
    table = Table(box=None, header_style="bold")
    for column in ("ID", "HOST", "PID", "STARTED", "HEARTBEAT", "STATE", "HOLDS"):
        table.add_column(column)
    for w in rows:
        table.add_row(
            Text(safe(w["id"], 60)),
            Text(safe(w["hostname"], 40)),
            str(w["pid"]),
            w["started_at"],
            w["heartbeat_at"],
            w["state"],
            f"{len(w['holds'])}: " + " ".join(m[:8] for m in w["holds"]) if w["holds"] else "-",
        )
    console().print(table)
