"""Keeping a journal: ``prune`` old migrations, serve ``metrics`` computed from it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from migrator.cli import context
from migrator.cli.options import Count, json_option, parse_age, states_of
from migrator.states import TERMINAL

if TYPE_CHECKING:
    from migrator.journal.store import Journal


TERMINAL_CHOICE = click.Choice(sorted(s.value for s in TERMINAL), case_sensitive=False)


@click.command()
@click.option(
    "--older-than", required=True, metavar="DURATION", help="Finished longer ago: 30d, 12h..."
)
@click.option(
    "--state",
    "states",
    multiple=True,
    type=TERMINAL_CHOICE,
    metavar="STATE",
    help="Only this end state (repeatable), e.g. rolled_back.",
)
@click.option("--dry-run", is_flag=True, help="Print what would go; delete nothing.")
@json_option
def prune(older_than: str, states: tuple[str, ...], dry_run: bool, as_json: bool) -> None:
    """Delete finished migrations and their events; never one that has not ended."""
    from datetime import UTC, datetime

    from migrator import inspect

    with context.errors():
        before = datetime.now(UTC) - parse_age(older_than, "--older-than")
        rows = inspect.prune(
            context.journal(), before=before, states=states_of(states), dry_run=dry_run
        )
    if as_json:
        context.print_json(rows)
    else:
        print_pruned(rows, dry_run=dry_run)


def print_pruned(rows: list[dict[str, Any]], *, dry_run: bool) -> None:
    from migrator.cli.render import console, safe

    out = console()
    verb = "would delete" if dry_run else "deleted"
    out.print(f"{verb} {len(rows)} migrations with their events", markup=False)
    for m in rows:
        out.print(f"  {m['id']}  {m['state']:<12} {safe(m['domain'], 60)}", markup=False)


@click.command()
@click.option("--port", type=Count(0, 65535), required=True, help="TCP port.")
@click.option("--bind", default="127.0.0.1", show_default=True, help="Address to listen on.")
def metrics(port: int, bind: str) -> None:
    """Serve Prometheus metrics computed from the journal (needs the metrics extra)."""
    with context.errors():
        serve_metrics(context.journal(existing=True), port=port, bind=bind)


def serve_metrics(journal: Journal, *, port: int, bind: str) -> None:
    """Serve /metrics until interrupted; without prometheus-client, one clear error."""
    from migrator import metrics as metering

    server = metering.serve_journal(journal, port=port, addr=bind)
    click.echo(f"serving metrics of {journal.url} on http://{bind}:{server.port}/metrics", err=True)
    try:
        server.wait()
    finally:
        server.close()
