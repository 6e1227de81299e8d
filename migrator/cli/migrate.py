"""``migrator migrate`` and ``migrator demo``: run a migration and print its outcome."""

from __future__ import annotations

import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from migrator.cli import context, exits
from migrator.cli.convergence import policy_of, policy_options
from migrator.cli.options import (
    NAME,
    PROBE_PATIENCE_DEFAULT,
    SECONDS,
    URI,
    Count,
    hook_option,
    hooks_from,
    json_option,
    probe_patience_option,
)
from migrator.cli.testhost import test_host_driver
from migrator.errors import FenceLost, JournalError, JournalReplaced, UsageError

REPLACED_ADVICE = (
    "the migration's record went with the journal it was written to: check both hosts"
    " (the source may be paused, the destination may hold an incoming copy) before"
    " migrating the domain again"
)
NOTHING_STARTED = "no migration was started"
MAX_DEMO_MIB = 4096
"""The largest test domain ``demo`` and ``test-host define`` write (its image is that big)."""

F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:
    from migrator.convergence.policy import Policy
    from migrator.flags import MigrateFlags
    from migrator.journal.store import Journal
    from migrator.records import Migration, Progress


_REQUEST: tuple[Callable[[Any], Any], ...] = (
    click.argument("domain", type=NAME),
    click.option(
        "--src", type=URI, required=True, metavar="URI", help="Source host, e.g. test:///srv/hostA."
    ),
    click.option("--dst", type=URI, required=True, metavar="URI", help="Destination host."),
    click.option("--live", is_flag=True, help="Migrate while the domain runs (flag LIVE)."),
    click.option(
        "--tunnelled", is_flag=True, help="Relay the data through the coordinator (flag TUNNELLED)."
    ),
    click.option(
        "--flag",
        "flag_names",
        multiple=True,
        metavar="NAME",
        help="A migration flag by name, e.g. persist-dest; repeatable.",
    ),
    click.option(
        "--bandwidth", type=Count(0), default=0, metavar="MIB", help="Cap in MiB/s (0: none)."
    ),
    click.option(
        "--dname", type=NAME, metavar="NAME", help="Name of the domain on the destination."
    ),
    click.option(
        "--protocol",
        type=Count(1, 3),
        help="Force a protocol version (default: v3, else v2, else v1).",
    ),
)


def request_options(f: F) -> F:
    """The options that describe a migration, shared by ``migrate`` and ``submit``."""
    for decorate in reversed(_REQUEST):
        f = decorate(f)
    return f


@click.command()
@request_options
@click.option(
    "--timeout", type=SECONDS, default=600.0, show_default=True, help="Per-step timeout, s."
)
@probe_patience_option
@hook_option
@json_option
@policy_options
def migrate(
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
    probe_patience: float,
    hook_commands: tuple[str, ...],
    as_json: bool,
    policy_args: dict[str, Any],
) -> None:
    """Migrate DOMAIN from --src to --dst and print the outcome.

    The policy options (docs/convergence.md) say how Perform converges."""
    with context.errors():
        flags = flags_of(flag_names, live=live, tunnelled=tunnelled)
        policy = policy_of(policy_args, domain=domain, src=src, dst=dst)
        outcome = run(
            domain,
            src=src,
            dst=dst,
            flags=flags,
            bandwidth=bandwidth,
            dname=dname,
            protocol=protocol,
            timeout=timeout,
            progress=not as_json,
            hook_commands=hook_commands,
            probe_patience=probe_patience,
            policy=policy,
        )
    if as_json:
        context.print_json(outcome)
    else:
        print_outcome(outcome)
    sys.exit(outcome["exit_code"])


def flags_of(names: tuple[str, ...], *, live: bool, tunnelled: bool) -> MigrateFlags:
    from migrator.flags import MigrateFlags, parse_flags

    try:
        flags = parse_flags(names)
    except ValueError as exc:
        raise UsageError(f"--flag: {exc}") from None
    if live:
        flags |= MigrateFlags.LIVE
    if tunnelled:
        flags |= MigrateFlags.TUNNELLED
    return flags


def run(
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
    probe_patience: float = PROBE_PATIENCE_DEFAULT,
    policy: Policy | None = None,
) -> dict[str, Any]:
    """One migration from the command's options; its summary and exit code."""
    hooks = hooks_from(hook_commands)
    src_driver = context.connect(src, timeout=timeout)
    dst_driver = context.connect(dst, timeout=timeout)
    journal = context.journal()
    with _progress_bar(progress) as on_progress:
        coordinator = context.coordinator(
            journal,
            step_timeout=timeout,
            on_progress=on_progress,
            hooks=hooks,
            connect=context.connecting(timeout),
            probe_patience=probe_patience,
        )
        try:
            with terminated_as_interrupt():
                migration = coordinator.migrate(
                    domain,
                    src=src_driver,
                    dst=dst_driver,
                    flags=flags,
                    dname=dname,
                    bandwidth=bandwidth,
                    protocol=protocol,
                    policy=policy,
                )
        except KeyboardInterrupt as exc:
            how = "terminated" if isinstance(exc, Terminated) else "interrupted"
            click.echo(f"migrator: {how}: {_left_behind(journal, coordinator.id)}", err=True)
            raise
        except JournalReplaced as exc:
            if context.settings().traceback:
                raise
            context.fail(f"{exc}; {REPLACED_ADVICE}", exits.ExitCode.FAILED)
        except FenceLost as exc:
            if context.settings().traceback:
                raise
            migration = _taken_over(journal, exc)
        except JournalError as exc:
            if context.settings().traceback:
                raise
            left = _left_behind(journal, coordinator.id)
            code = exits.ExitCode.USAGE if left == NOTHING_STARTED else exits.ExitCode.FAILED
            context.fail(f"{exc}; {left}", code)
    return outcome_of(migration)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be, so that a migration ends the same way."""


@contextmanager
def terminated_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM raises ``Terminated`` (in the main thread only)."""

    def handler(_signum: int, _frame: object) -> None:
        raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave SIGTERM alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def outcome_of(migration: Migration) -> dict[str, Any]:
    """A migration's summary (as ``list --json``) and the exit code of its state."""
    from migrator.inspect import migration_dict

    return {**migration_dict(migration), "exit_code": int(exits.for_state(migration.state))}


@contextmanager
def _progress_bar(enabled: bool) -> Iterator[Callable[[Migration, Progress], None] | None]:
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich import progress as rp

    from migrator.cli.render import console

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
            bar.update(task, total=p.total, completed=p.transferred, description=job_text(p))

        yield update


def job_text(p: Progress) -> str:
    """The progress bar's text: the pass, and the job statistics the driver gave."""
    parts = [f"perform pass {p.passes}"]
    if p.dirty_rate is not None:
        parts.append(f"dirty {p.dirty_rate / 2**20:.1f} MiB/s")
    if p.expected_downtime_ms is not None:
        parts.append(f"downtime ~{p.expected_downtime_ms} ms")
    if p.throttle_pct:
        parts.append(f"throttle {p.throttle_pct} %")
    if p.postcopy_requests:
        parts.append(f"post-copy requests {p.postcopy_requests}")
    return ", ".join(parts)


def _taken_over(journal: Journal, lost: FenceLost) -> Migration:
    """The migration another coordinator took from this command (``recover --steal``, a
    worker's takeover), as it ended: one line says who took it; one still under way there
    ends the command (exit 1)."""
    from migrator.cli.render import safe
    from migrator.states import TERMINAL

    try:
        taken = journal.get(lost.migration_id)
        drivers = [e.coordinator for e in journal.history(taken.id) if e.coordinator]
    except JournalError as exc:
        context.fail(f"{lost}; it cannot be read now ({exc})", exits.ExitCode.FAILED)
    who = safe(drivers[-1] if drivers else "another coordinator", 200)
    if taken.state not in TERMINAL:
        context.fail(
            f"migration {taken.id} was taken over by {who} and is {taken.state} there;"
            f" `migrator show {taken.id[:8]}` follows it",
            exits.ExitCode.FAILED,
        )
    click.echo(
        f"migrator: migration {taken.id} was taken over by {who}, which ended it {taken.state}",
        err=True,
    )
    return taken


def _left_behind(journal: Journal, coordinator_id: str) -> str:
    """Which migration this command leaves unfinished, and what brings it to an end."""
    from migrator.states import TERMINAL

    advice = "`migrator recover` brings it to a safe end"
    try:
        mine = [m for m in journal.list(limit=20) if m.owner == coordinator_id]
    except JournalError:
        return f"the migration it started may be unfinished: once the journal works, {advice}"
    for m in mine:
        if m.state not in TERMINAL:
            return f"migration {m.id} left in {m.state}; {advice}"
    return "no migration left unfinished" if mine else NOTHING_STARTED


def print_outcome(outcome: dict[str, Any]) -> None:
    from migrator.cli.render import console, safe

    out = console()
    out.print(f"migration {outcome['id']}")
    out.print(f"state     {outcome['state']}")
    if outcome["reason"]:
        out.print(f"reason    {safe(outcome['reason'])}", markup=False)


# -- demo ---------------------------------------------------------------------------------------


@click.command()
@click.option("--memory", type=Count(1, MAX_DEMO_MIB), default=64, show_default=True, help="MiB.")
@click.option("--bandwidth", type=Count(0), default=256, show_default=True, help="MiB/s.")
def demo(memory: int, bandwidth: int) -> None:
    """Two test hosts, one domain, one live migration, then its timeline."""
    with context.errors():
        code = _demo(memory=memory, bandwidth=bandwidth)
    sys.exit(code)


def _demo(*, memory: int, bandwidth: int) -> exits.ExitCode:
    from migrator import inspect
    from migrator.cli.read import print_timeline
    from migrator.cli.render import console
    from migrator.flags import MigrateFlags

    out = console()
    with tempfile.TemporaryDirectory(prefix="migrator-demo-") as tmp:
        src_uri, dst_uri = f"test://{Path(tmp) / 'host-a'}", f"test://{Path(tmp) / 'host-b'}"
        src, dst = test_host_driver(src_uri), test_host_driver(dst_uri)
        src.define("demo-vm", memory_mib=memory)
        out.print(f"hosts   {src_uri}  {dst_uri}", markup=False)
        out.print(
            f"domain  demo-vm ({memory} MiB) running on host-a; live migration at {bandwidth} MiB/s"
        )
        journal = context.journal()
        with _progress_bar(True) as on_progress:
            coordinator = context.coordinator(journal, on_progress=on_progress)
            migration = coordinator.migrate(
                "demo-vm", src=src, dst=dst, flags=MigrateFlags.LIVE, bandwidth=bandwidth
            )
        out.print(f"journal {journal.url}\n", markup=False)
        print_timeline(inspect.show(journal, migration.id))
        where = {d["name"]: d["state"] for d in dst.domains()}
        out.print(
            f"\nhost-a: {len(src.domains())} domains; "
            f"host-b: demo-vm {where.get('demo-vm', 'absent')}"
        )
        out.print(f"see it again with: migrator show {migration.id[:8]}")
    return exits.for_state(migration.state)
