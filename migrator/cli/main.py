"""``migrator``: the command group, and the console script that runs it.

Each command group lives in its own module (``migrate``, ``read``, ``recover``,
``maintain``, ``db``, ``testhost``, ``qmp_host``, ``workers``, ``webhooks``, ``serve``) and
imports what its work needs inside the command, so ``migrator --help`` loads no database,
driver or rendering code. Exit codes are ``ExitCode`` (``migrator.cli.exits``, ``docs/cli.md``).
"""

from __future__ import annotations

import gc
import sys

import click

from migrator.cli import (
    convergence,
    db,
    maintain,
    migrate,
    qmp_host,
    read,
    recover,
    serve,
    testhost,
    webhooks,
    workers,
)
from migrator.cli.context import Settings, fail
from migrator.cli.exits import ExitCode
from migrator.cli.migrate import Terminated
from migrator.journal import DEFAULT_URL


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--db",
    envvar="MIGRATOR_DB",
    default=DEFAULT_URL,
    show_default=True,
    help="Journal URL (sqlite:///FILE or postgresql+psycopg://...); env MIGRATOR_DB.",
)
@click.option(
    "--otel",
    is_flag=True,
    help="Export OpenTelemetry traces of the migrations the command drives, over OTLP/HTTP"
    " (extra: tracing); env MIGRATOR_OTEL=1 or OTEL_EXPORTER_OTLP_ENDPOINT.",
)
@click.option("--traceback", is_flag=True, help="Show Python tracebacks (for developers).")
@click.version_option(package_name="migrator")
@click.pass_context
def cli(ctx: click.Context, db: str, otel: bool, traceback: bool) -> None:
    """Crash-safe live migration of VMs with libvirt's five-step protocol (v3)."""
    ctx.obj = Settings(db=db, traceback=traceback, otel=otel)


for command in (
    migrate.migrate,
    read.list_,
    read.show,
    read.export,
    read.stats,
    read.diagram,
    recover.recover,
    recover.resolve,
    recover.replay,
    recover.abort,
    maintain.prune,
    maintain.metrics,
    db.db,
    testhost.test_host,
    migrate.demo,
    qmp_host.qmp_host,
    workers.submit,
    workers.worker,
    workers.workers,
    webhooks.webhooks,
    convergence.set_downtime,
    convergence.set_speed,
    convergence.postcopy,
    serve.serve,
    serve.token,
):
    cli.add_command(command)


def entry() -> None:
    """The process (``migrator`` and ``python -m migrator``): ``main``, then an exit that
    does not collect garbage.

    Everything alive when the command ends (modules, SQLAlchemy's tables, the machine) is
    frozen out of the garbage collector before the interpreter finalizes: its final
    collections would otherwise walk every object once more, 0.1 s of CPU for
    ``migrator migrate`` (docs/performance.md). Exit handlers, thread joins and flushes
    run as usual; only cycles still alive at exit are left to the operating system.
    """
    try:
        main()
    finally:
        gc.freeze()


def main(argv: list[str] | None = None) -> None:
    """The command line (``entry`` runs it as a process): click's own usage errors become one
    line too, exit 2.

    An argument that is not valid UTF-8 is refused before any command runs, and an
    unexpected exception is one line too (``--traceback`` shows where it came from).
    """
    args = sys.argv[1:] if argv is None else argv
    _refuse_undecodable(args)
    try:
        _run(args)
    except Exception as exc:
        if "--traceback" in args:
            raise
        fail(f"unexpected {type(exc).__name__}: {exc} (`--traceback` shows where)", ExitCode.FAILED)


def _refuse_undecodable(args: list[str]) -> None:
    from migrator.limits import is_utf8

    for arg in args:
        if not is_utf8(arg):
            fail(f"argument {arg[:60]!r} is not valid UTF-8", ExitCode.USAGE)


def _run(argv: list[str]) -> None:
    try:
        cli.main(args=argv, prog_name="migrator", standalone_mode=False)
    except click.UsageError as exc:
        if type(exc).__name__.startswith("NoArgsIsHelp") and exc.ctx is not None:
            click.echo(exc.ctx.get_help())  # a bare `migrator` or group: help, as usual
            sys.exit(ExitCode.OK)
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        fail(exc.format_message() + hint, ExitCode.USAGE)
    except click.ClickException as exc:
        fail(exc.format_message(), ExitCode(exc.exit_code))
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:
        if isinstance(exc, Terminated) or isinstance(exc.__cause__, Terminated):
            sys.exit(ExitCode.TERMINATED)  # its message named the migration already
        click.echo("migrator: interrupted", err=True)
        sys.exit(ExitCode.INTERRUPTED)
