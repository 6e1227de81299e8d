"""``migrator webhooks run``: deliver the journal's events to the configured webhook
endpoints until SIGTERM (docs/webhooks.md)."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from migrator.cli import context
from migrator.cli.exits import ExitCode
from migrator.cli.options import Seconds

if TYPE_CHECKING:
    from migrator.webhooks import Webhooks


@click.group()
def webhooks() -> None:
    """POST each committed event to configured URLs, signed, in order, at least once."""


@webhooks.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The endpoints: a JSON or TOML file (docs/webhooks.md).",
)
@click.option(
    "--poll",
    type=Seconds(least=0.01),
    default=0.5,
    show_default=True,
    help="Seconds between two reads of the journal when it has nothing new.",
)
@click.option("--quiet", is_flag=True, help="Log only warnings (each failed attempt).")
def run(config_file: Path, poll: float, quiet: bool) -> None:
    """Deliver events to the endpoints of --config until SIGTERM or SIGINT.

    Each endpoint resumes from its cursor in the journal: a deliverer that was killed
    repeats at most the events delivered since its last save, and loses none.
    """
    from migrator.webhooks import Webhooks, load

    with context.errors():
        endpoints = load(config_file)  # checked before the journal opens
        running = Webhooks(context.journal(), endpoints, poll=poll)
        _log_to_stderr(logging.WARNING if quiet else logging.INFO)
        _on_signals(running)
        click.echo(f"delivering to {len(endpoints)} endpoint(s)", err=True)
        running.run()
    sys.exit(ExitCode.OK)


def _on_signals(running: Webhooks) -> None:
    def stop(_signum: int, _frame: Any) -> None:
        running.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def _log_to_stderr(level: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("migrator.webhooks")
    logger.addHandler(handler)
    logger.setLevel(level)
