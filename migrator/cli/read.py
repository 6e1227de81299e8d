"""The read commands: ``list``, ``show``, ``export``, ``stats`` and ``diagram``.

Each one reads the journal (never writes it) and prints a table, or JSON with ``--json``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click

from migrator.cli import context
from migrator.cli.options import STATE_CHOICE, json_option, parse_time, states_of
from migrator.errors import UsageError

if TYPE_CHECKING:
    from migrator.journal.store import Journal

DIAGRAM_FORMATS = click.Choice(["mermaid", "dot", "svg", "png"])


@click.command("list")
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
@click.option("--owner", metavar="TEXT", help="Only where the owner's id (a worker's) has TEXT.")
@json_option
def list_(
    states: tuple[str, ...],
    domain: str | None,
    host: str | None,
    since: str | None,
    until: str | None,
    limit: int | None,
    owner: str | None,
    as_json: bool,
) -> None:
    """List migrations, newest first, with the reason of each failure."""
    from migrator.inspect import migration_dict

    with context.errors():
        after = parse_time(since, "--since") if since else None
        before = parse_time(until, "--until") if until else None
        chosen = context.journal().list(
            states=states_of(states),
            since=after,
            until=before,
            domain=domain,
            host=host,
            limit=limit,
            owner=owner,
        )
        rows = [migration_dict(m) for m in chosen]
    if as_json:
        context.print_json(rows)
        return
    from migrator.cli.render import console, migrations_table

    console().print(migrations_table(rows) if rows else "no migrations")


@click.command()
@click.argument("migration_id", metavar="ID")
@json_option
def show(migration_id: str, as_json: bool) -> None:
    """Show one migration's timeline: every event, durations, cookies, errors."""
    from migrator import inspect

    with context.errors():
        data = inspect.show(context.journal(), migration_id)
    if as_json:
        context.print_json(data)
        return
    print_timeline(data)


def print_timeline(data: dict[str, Any]) -> None:
    from migrator.cli.render import console, header, timeline

    out = console()
    out.print(header(data))
    out.print()
    out.print(timeline(data))


@click.command()
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
    from migrator.cli.output import write_text

    with context.errors():
        lines = export_lines(
            context.journal(), migration_id, everything=everything, states=states, since=since
        )
        write_text(lines, output)


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
    after = parse_time(since) if since else None
    for doc in inspect.export_all(journal, states=states_of(states), since=after):
        yield json.dumps(doc, separators=(",", ":")) + "\n"


@click.command()
@click.option("--since", metavar="T", help="Only migrations created at or after T.")
@json_option
def stats(since: str | None, as_json: bool) -> None:
    """Counts by outcome, step durations (p50/p95/max), top failure reasons."""
    from migrator import inspect

    with context.errors():
        data = inspect.stats(context.journal(), since=parse_time(since) if since else None)
    if as_json:
        context.print_json(data)
        return
    print_stats(data)


def print_stats(data: dict[str, Any]) -> None:
    from rich.table import Table
    from rich.text import Text

    from migrator.cli.render import console, safe

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


@click.command()
@click.argument("migration_id", metavar="[ID]", required=False)
@click.option(
    "--format", "fmt", type=DIAGRAM_FORMATS, default="mermaid", show_default=True,
    help="svg and png need graphviz (dot).",
)  # fmt: skip
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to FILE.")
def diagram(migration_id: str | None, fmt: str, output: str | None) -> None:
    """Draw the state machine (with ID: the path that migration took, highlighted)."""
    from migrator import diagram as drawing
    from migrator.cli.output import write_bytes

    path = None
    with context.errors():
        if fmt == "png" and output is None and sys.stdout.isatty():
            raise UsageError("--format png is binary: give -o FILE, or pipe it")
        if migration_id:
            from migrator.inspect import path as taken

            _migration, path = taken(context.journal(), migration_id)
        data = drawing.render(drawing.Format(fmt), path)
        write_bytes(data, output)
