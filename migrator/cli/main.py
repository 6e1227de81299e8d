"""``migrator``: the command line. Each command makes one library call and renders it.

Exit codes (DESIGN §9): 0 success, 1 rolled back or failed, 2 bad usage or bad input,
3 in doubt, 130 interrupted.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import click

from migrator.drivers.test import FaultMode
from migrator.errors import JournalError, MigratorError, UsageError
from migrator.states import State, Step

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_IN_DOUBT, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
DEFAULT_DB = "sqlite:///./migrator.db"
F = TypeVar("F", bound=Callable[..., Any])

EXIT_BY_STATE = {
    State.CONFIRMED: EXIT_OK,
    State.IN_DOUBT: EXIT_IN_DOUBT,
}


class Settings:
    def __init__(self, db: str, traceback: bool) -> None:
        self.db = db
        self.traceback = traceback


def _fail(message: str, code: int) -> NoReturn:
    from migrator.cli.render import safe

    click.echo(f"migrator: error: {safe(message, 2000)}", err=True)
    sys.exit(code)


@contextmanager
def _errors(settings: Settings) -> Iterator[None]:
    """Turn library errors into one line on stderr and the exit code of DESIGN §9."""
    try:
        yield
    except (UsageError, JournalError) as exc:
        if settings.traceback:
            raise
        _fail(str(exc), EXIT_USAGE)
    except MigratorError as exc:
        if settings.traceback:
            raise
        _fail(str(exc), EXIT_FAILED)


def _settings() -> Settings:
    obj = click.get_current_context().find_object(Settings)
    assert obj is not None
    return obj


def _journal(*, check: bool = True, upgrade: bool | None = None) -> Any:
    from migrator.journal.store import Journal

    return Journal.open(_settings().db, check=check, upgrade=upgrade)


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, ensure_ascii=True))


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(f)


def hook_option(f: F) -> F:
    return click.option(
        "--hook-command",
        "hook_commands",
        multiple=True,
        metavar="CMD",
        help="Run CMD HOOK ID after each journal commit, the event as JSON on stdin.",
    )(f)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--db",
    envvar="MIGRATOR_DB",
    default=DEFAULT_DB,
    show_default=True,
    help="Journal URL (sqlite:///FILE or postgresql+psycopg://...); env MIGRATOR_DB.",
)
@click.option("--traceback", is_flag=True, help="Show Python tracebacks (for developers).")
@click.version_option(package_name="migrator")
@click.pass_context
def cli(ctx: click.Context, db: str, traceback: bool) -> None:
    """Crash-safe live migration of VMs with libvirt's five-step protocol (v3)."""
    ctx.obj = Settings(db=db, traceback=traceback)


# -- migrate -------------------------------------------------------------------------------


@cli.command()
@click.argument("domain")
@click.option("--src", required=True, metavar="URI", help="Source host, e.g. test:///srv/hostA.")
@click.option("--dst", required=True, metavar="URI", help="Destination host.")
@click.option("--live", is_flag=True, help="Migrate while the domain runs (flag LIVE).")
@click.option(
    "--tunnelled", is_flag=True, help="Relay the data through the coordinator (flag TUNNELLED)."
)
@click.option(
    "--flag",
    "flag_names",
    multiple=True,
    metavar="NAME",
    help="A migration flag by name, e.g. persist-dest; repeatable.",
)
@click.option("--bandwidth", type=int, default=0, metavar="MIB", help="Cap in MiB/s (0: none).")
@click.option("--dname", metavar="NAME", help="Name of the domain on the destination.")
@click.option(
    "--protocol",
    type=click.IntRange(1, 3),
    help="Force a protocol version (default: v3, else v2, else v1).",
)
@click.option(
    "--timeout", type=float, default=600.0, show_default=True, help="Per-step timeout, s."
)
@hook_option
@json_option
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
    hook_commands: tuple[str, ...],
    as_json: bool,
) -> None:
    """Migrate DOMAIN from --src to --dst and print the outcome."""
    from migrator.cli import commands
    from migrator.flags import MigrateFlags, parse_flags

    settings = _settings()
    with _errors(settings):
        if bandwidth < 0:
            raise UsageError(f"--bandwidth must be >= 0 MiB/s, not {bandwidth}")
        try:
            flags = parse_flags(flag_names)
        except ValueError as exc:
            raise UsageError(f"--flag: {exc}") from None
        if live:
            flags |= MigrateFlags.LIVE
        if tunnelled:
            flags |= MigrateFlags.TUNNELLED
        outcome = commands.migrate(
            settings.db,
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
        )
    if as_json:
        _print_json(outcome)
    else:
        commands.print_outcome(outcome)
    sys.exit(outcome["exit_code"])


# -- read commands ---------------------------------------------------------------------------

STATE_CHOICE = click.Choice([s.value for s in State], case_sensitive=False)


@cli.command("list")
@click.option(
    "--state", "states", multiple=True, type=STATE_CHOICE, help="Only this state (repeatable)."
)
@click.option("--domain", metavar="NAME", help="Only this domain (its name on either host).")
@click.option("--host", metavar="TEXT", help="Only where the source or destination URI has TEXT.")
@click.option(
    "--since", metavar="T", help="Created at or after T: ISO time, or an age (30s, 2h, 3d)."
)
@click.option("--until", metavar="T", help="Created at or before T (as --since).")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many, newest first.")
@json_option
def list_(
    states: tuple[str, ...],
    domain: str | None,
    host: str | None,
    since: str | None,
    until: str | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """List migrations, newest first, with the reason of each failure."""
    from migrator.cli.commands import parse_time
    from migrator.inspect import migration_dict

    with _errors(_settings()):
        after = parse_time(since, "--since") if since else None
        before = parse_time(until, "--until") if until else None
        journal = _journal()
        chosen = journal.list(
            states=[State(s.upper()) for s in states],
            since=after,
            until=before,
            domain=domain,
            host=host,
            limit=limit,
        )
        rows = [migration_dict(m) for m in chosen]
    if as_json:
        _print_json(rows)
        return
    from migrator.cli.render import console, migrations_table

    console().print(migrations_table(rows) if rows else "no migrations")


@cli.command()
@click.argument("migration_id", metavar="ID")
@json_option
def show(migration_id: str, as_json: bool) -> None:
    """Show one migration's timeline: every event, durations, cookies, errors."""
    from migrator import inspect

    with _errors(_settings()):
        data = inspect.show(_journal(), migration_id)
    if as_json:
        _print_json(data)
        return
    from migrator.cli import commands

    commands.print_timeline(data)


@cli.command()
@click.argument("migration_id", metavar="[ID]", required=False)
@click.option("--all", "everything", is_flag=True, help="Every migration, as JSON Lines.")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=STATE_CHOICE,
    metavar="STATE",
    help="With --all: only this state (repeatable; as for list).",
)
@click.option("--since", metavar="T", help="With --all: created at or after T.")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), help="Write to FILE (whole, or nothing)."
)
def export(
    migration_id: str | None,
    everything: bool,
    states: tuple[str, ...],
    since: str | None,
    output: str | None,
) -> None:
    """Everything the journal holds about a migration, as one JSON document."""
    from migrator.cli import commands

    with _errors(_settings()):
        lines = commands.export_lines(
            _journal(), migration_id, everything=everything, states=states, since=since
        )
        commands.write_text(lines, output)


@cli.command()
@click.option("--since", metavar="T", help="Only migrations created at or after T.")
@json_option
def stats(since: str | None, as_json: bool) -> None:
    """Counts by outcome, step durations (p50/p95/max), top failure reasons."""
    from migrator import inspect
    from migrator.cli.commands import parse_time

    with _errors(_settings()):
        data = inspect.stats(_journal(), since=parse_time(since) if since else None)
    if as_json:
        _print_json(data)
        return
    from migrator.cli.commands import print_stats

    print_stats(data)


DIAGRAM_FORMATS = click.Choice(["mermaid", "dot", "svg", "png"])


@cli.command()
@click.argument("migration_id", metavar="[ID]", required=False)
@click.option(
    "--format", "fmt", type=DIAGRAM_FORMATS, default="mermaid", show_default=True,
    help="svg and png need graphviz (dot).",
)  # fmt: skip
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to FILE.")
def diagram(migration_id: str | None, fmt: str, output: str | None) -> None:
    """Draw the state machine (with ID: the path that migration took, highlighted)."""
    from migrator import diagram as drawing
    from migrator.cli import commands

    path = None
    with _errors(_settings()):
        if fmt == "png" and output is None and sys.stdout.isatty():
            raise UsageError("--format png is binary: give -o FILE, or pipe it")
        if migration_id:
            from migrator.inspect import path as taken

            _migration, path = taken(_journal(), migration_id)
        data = drawing.render(drawing.Format(fmt), path)
        commands.write_bytes(data, output)


# -- recovery and operators' commands ---------------------------------------------------------


@cli.command()
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--steal", is_flag=True, help="Also take migrations whose owner seems alive.")
@click.option(
    "--timeout", type=float, default=600.0, show_default=True, help="Per-step timeout, s."
)
@hook_option
@json_option
def recover(
    dry_run: bool, steal: bool, timeout: float, hook_commands: tuple[str, ...], as_json: bool
) -> None:
    """Bring every orphaned migration to a safe end (or show the plan)."""
    from migrator.cli import commands

    settings = _settings()
    with _errors(settings):
        rows = commands.recover(
            settings.db,
            dry_run=dry_run,
            steal=steal,
            timeout=timeout,
            hook_commands=hook_commands,
        )
    if as_json:
        _print_json(rows)
    else:
        commands.print_recovery(rows, dry_run=dry_run, steal=steal)
    sys.exit(commands.recover_exit_code(rows, dry_run=dry_run))


@cli.command()
@click.argument("migration_id", metavar="ID")
@click.option(
    "--running-on",
    type=click.Choice(["src", "dst"]),
    required=True,
    help="Where the domain really runs, as the operator established.",
)
@hook_option
@json_option
def resolve(
    migration_id: str, running_on: str, hook_commands: tuple[str, ...], as_json: bool
) -> None:
    """Settle an IN_DOUBT migration: Confirm on the source as the operator decides."""
    from migrator.cli import commands

    settings = _settings()
    with _errors(settings):
        outcome = commands.resolve(
            settings.db, migration_id, running_on=running_on, hook_commands=hook_commands
        )
    if as_json:
        _print_json(outcome)
    else:
        commands.print_outcome(outcome)
    sys.exit(outcome["exit_code"])


@cli.command()
@click.argument("migration_id", metavar="ID")
@json_option
def replay(migration_id: str, as_json: bool) -> None:
    """Re-run the engine's decisions against the journal; report the first divergence."""
    from migrator import replay as replaying

    with _errors(_settings()):
        result = replaying.replay(_journal(), migration_id)
    data = result.as_dict()
    if as_json:
        _print_json(data)
    elif result.consistent:
        click.echo(f"{result.migration_id}: consistent ({data['events']} events)")
    else:
        from migrator.cli.commands import print_divergence

        print_divergence(data)
    sys.exit(EXIT_OK if result.consistent else EXIT_FAILED)


@cli.command()
@click.argument("migration_id", metavar="ID")
def abort(migration_id: str) -> None:
    """Ask a running migration to stop; Perform fails and the migration rolls back."""
    from migrator.cli import commands

    settings = _settings()
    with _errors(settings):
        migration = commands.abort(settings.db, migration_id)
    click.echo(f"abort requested for {migration['id']} ({migration['state']})")


def _terminal_choice() -> click.Choice[str]:
    from migrator.states import TERMINAL

    return click.Choice(sorted(s.value for s in TERMINAL), case_sensitive=False)


@cli.command()
@click.option(
    "--older-than", required=True, metavar="DURATION", help="Finished longer ago: 30d, 12h..."
)
@click.option(
    "--state",
    "states",
    multiple=True,
    type=_terminal_choice(),
    metavar="STATE",
    help="Only this end state (repeatable), e.g. rolled_back.",
)
@click.option("--dry-run", is_flag=True, help="Print what would go; delete nothing.")
@json_option
def prune(older_than: str, states: tuple[str, ...], dry_run: bool, as_json: bool) -> None:
    """Delete finished migrations and their events; never one that has not ended."""
    from datetime import UTC, datetime

    from migrator import inspect
    from migrator.cli.commands import parse_age, print_pruned

    with _errors(_settings()):
        before = datetime.now(UTC) - parse_age(older_than, "--older-than")
        rows = inspect.prune(
            _journal(), before=before, states=[State(s.upper()) for s in states], dry_run=dry_run
        )
    if as_json:
        _print_json(rows)
    else:
        print_pruned(rows, dry_run=dry_run)


@cli.command()
@click.option("--port", type=click.IntRange(0, 65535), required=True, help="TCP port.")
@click.option("--bind", default="127.0.0.1", show_default=True, help="Address to listen on.")
def metrics(port: int, bind: str) -> None:
    """Serve Prometheus metrics computed from the journal (needs the metrics extra)."""
    from migrator.cli import commands

    settings = _settings()
    with _errors(settings):
        commands.serve_metrics(_journal(), port=port, bind=bind)


# -- the journal database ------------------------------------------------------------------


@cli.group()
def db() -> None:
    """The journal's schema (Alembic)."""


@db.command()
def upgrade() -> None:
    """Create or upgrade the journal schema to this version of migrator."""
    with _errors(_settings()):
        journal = _journal(check=False)
        journal.upgrade()
        click.echo(f"journal {journal.url} at revision {journal.revision()}")


@db.command()
def current() -> None:
    """Print the journal's schema revision."""
    from migrator.journal.schema import KNOWN_REVISIONS, SCHEMA_HEAD

    with _errors(_settings()):
        journal = _journal(check=False)
        found = journal.revision()
    if found == SCHEMA_HEAD:
        state = "up to date"
    elif found is not None and found not in KNOWN_REVISIONS:
        state = f"newer than this migrator (knows up to {SCHEMA_HEAD}): upgrade migrator"
    else:
        state = f"expected {SCHEMA_HEAD}: run `migrator db upgrade`"
    click.echo(f"{found or 'none'} ({state})")


# -- test hosts -------------------------------------------------------------------------------


@cli.group("test-host")
def test_host() -> None:
    """Simulated hosts (test:///ABS/DIR) whose state lives in a directory."""


@test_host.command("define")
@click.argument("uri")
@click.argument("domain")
@click.option("--memory", type=click.IntRange(min=1), default=4, show_default=True, help="MiB.")
@click.option("--paused", is_flag=True, help="Define the domain paused.")
@click.option(
    "--persistent", is_flag=True, help="Keep its definition on a source it leaves (else transient)."
)
def test_host_define(uri: str, domain: str, memory: int, paused: bool, persistent: bool) -> None:
    """Define DOMAIN, running (or paused), on the test host URI."""
    from migrator.cli import commands

    with _errors(_settings()):
        info = commands.test_host(uri).define(
            domain, memory_mib=memory, paused=paused, persistent=persistent
        )
    click.echo(f"defined {domain} ({info['state']}, {memory} MiB) on {uri}")


@test_host.command("list")
@click.argument("uri")
@json_option
def test_host_list(uri: str, as_json: bool) -> None:
    """List the domains of a test host."""
    from migrator.cli import commands

    with _errors(_settings()):
        domains = commands.test_host(uri).domains()
    if as_json:
        _print_json(domains)
        return
    commands.print_domains(domains)


FAULT_STEPS = [str(step) for step in Step]
FAULT_MODES = [str(mode) for mode in FaultMode]


@test_host.command("fault")
@click.argument("uri")
@click.option("--step", type=click.Choice(FAULT_STEPS), help="The hook to break.")
@click.option("--mode", type=click.Choice(FAULT_MODES), help="How it breaks.")
@click.option("--seconds", type=float, help="For slow: how long the hook takes.")
@click.option("--message", help="For error: the error text.")
@click.option("--count", type=click.IntRange(min=1), help="Fire this many times, then clear.")
@click.option("--clear", is_flag=True, help="Remove every fault of the host.")
def test_host_fault(
    uri: str,
    step: str | None,
    mode: str | None,
    seconds: float | None,
    message: str | None,
    count: int | None,
    clear: bool,
) -> None:
    """Inject a fault into one step of a test host (or --clear them)."""
    from migrator.cli import commands

    with _errors(_settings()):
        host = commands.test_host(uri)
        if clear:
            host.clear_faults()
            click.echo(f"cleared faults on {uri}")
            return
        if step is None or mode is None:
            raise UsageError("give --step and --mode, or --clear")
        try:
            host.set_fault(step, mode, seconds=seconds, message=message, count=count)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    click.echo(f"{uri}: {step} will {mode}")


# -- demo ---------------------------------------------------------------------------------------


@cli.command()
@click.option("--memory", type=click.IntRange(min=1), default=64, show_default=True, help="MiB.")
@click.option(
    "--bandwidth", type=click.IntRange(min=0), default=256, show_default=True, help="MiB/s."
)
def demo(memory: int, bandwidth: int) -> None:
    """Two test hosts, one domain, one live migration, then its timeline."""
    from migrator.cli import commands

    settings = _settings()
    with _errors(settings):
        code = commands.demo(settings.db, memory=memory, bandwidth=bandwidth)
    sys.exit(code)


import migrator.cli.qmp_host  # noqa: E402, F401 -- registers `migrator qmp-host`


def main(argv: list[str] | None = None) -> None:
    """The console script: click's own usage errors become one line too, exit 2."""
    try:
        cli.main(args=argv, prog_name="migrator", standalone_mode=False)
    except click.UsageError as exc:
        if type(exc).__name__.startswith("NoArgsIsHelp") and exc.ctx is not None:
            click.echo(exc.ctx.get_help())  # a bare `migrator` or group: help, as usual
            sys.exit(EXIT_OK)
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        _fail(exc.format_message() + hint, EXIT_USAGE)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except click.exceptions.Abort:
        click.echo("migrator: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        click.echo("migrator: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
