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
from migrator.cli.options import (
    MIGRATION_ID,
    NAME,
    STATE_CHOICE,
    URI,
    Count,
    json_option,
    parse_time,
    states_of,
)
from migrator.cli.output import write_text
from migrator.errors import UsageError

if TYPE_CHECKING:
    from migrator.journal.reading import Reads
    from migrator.records import Migration

DIAGRAM_FORMATS = click.Choice(["mermaid", "dot", "svg", "png"])
PAGE = 50
"""How many migrations ``list`` shows in its table without --limit or --all: the newest."""
LIST_CHUNK = 1000
"""Migrations ``list --all`` reads and prints at a time."""


@click.command("list")
@click.option(
    "--state", "states", multiple=True, type=STATE_CHOICE, help="Only this state (repeatable)."
)
@click.option(
    "--domain", type=NAME, metavar="NAME", help="Only this domain (its name on either host)."
)
@click.option(
    "--host", type=URI, metavar="TEXT", help="Only where the source or destination URI has TEXT."
)
@click.option(
    "--since", metavar="T", help="Created at or after T: ISO time, or an age (30s, 2h, 3d)."
)
@click.option("--until", metavar="T", help="Created at or before T (as --since).")
@click.option(
    "--limit",
    type=Count(1),
    help=f"At most this many, newest first (default for the table: {PAGE}).",
)
@click.option("--all", "everything", is_flag=True, help="Every match, streamed (no --limit).")
@click.option("--owner", metavar="TEXT", help="Only where the owner's id (a worker's) has TEXT.")
@json_option
def list_(
    states: tuple[str, ...],
    domain: str | None,
    host: str | None,
    since: str | None,
    until: str | None,
    limit: int | None,
    everything: bool,
    owner: str | None,
    as_json: bool,
) -> None:
    """List migrations, newest first, with the reason of each failure.

    The table shows a page (the newest ones) and says how many more match; --json lists
    every match unless --limit is given.
    """
    with context.errors():
        if everything and limit is not None:
            raise UsageError("give --limit or --all, not both")
        filters: dict[str, Any] = {
            "states": states_of(states),
            "since": parse_time(since, "--since") if since else None,
            "until": parse_time(until, "--until") if until else None,
            "domain": domain,
            "host": host,
            "owner": owner,
        }
        journal = context.reader()
        if everything or (as_json and limit is None):
            print_all(journal.stream(**filters), as_json)
            return
        page = limit or PAGE
        chosen = journal.list(**filters, limit=page)
        more = journal.count(**filters) - page if limit is None and len(chosen) == page else 0
    print_page(chosen, as_json)
    if more > 0:
        click.echo(f"... and {more} more (--limit N or --all shows them)", err=True)


def print_page(chosen: list[Migration], as_json: bool) -> None:
    from migrator.inspect import migration_dict

    rows = [migration_dict(m) for m in chosen]
    if as_json:
        context.print_json(rows)
        return
    from migrator.cli.render import console, migrations_table

    console().print(migrations_table(rows) if rows else "no migrations")


def print_all(migrations: Iterator[Migration], as_json: bool) -> None:
    """Every migration, printed as it is read: a JSON array, or tables of a chunk each."""
    from migrator.inspect import migration_dict

    chunks = _chunks((migration_dict(m) for m in migrations), LIST_CHUNK)
    if as_json:
        write_text(_json_array(chunks), None)
        return
    from migrator.cli.render import console, migrations_table

    out, first = console(), True
    for rows in chunks:
        out.print(migrations_table(rows, header=first))
        first = False
    if first:
        out.print("no migrations")


def _chunks(items: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _json_array(chunks: Iterator[list[dict[str, Any]]]) -> Iterator[str]:
    """A JSON array as ``print_json`` writes it, a chunk of elements at a time."""
    separator = "[\n"
    for rows in chunks:
        for row in rows:
            body = json.dumps(row, indent=2, ensure_ascii=True)
            yield separator + "\n".join("  " + line for line in body.splitlines())
            separator = ",\n"
    yield "[]\n" if separator == "[\n" else "\n]\n"


@click.command()
@click.argument("migration_id", metavar="ID", type=MIGRATION_ID)
@json_option
def show(migration_id: str, as_json: bool) -> None:
    """Show one migration's timeline: every event, durations, cookies, errors."""
    from migrator import inspect

    with context.errors():
        data = inspect.show(context.reader(), migration_id)
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
@click.argument("migration_id", metavar="[ID]", required=False, type=MIGRATION_ID)
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

    with context.errors():
        lines = export_lines(
            context.reader(), migration_id, everything=everything, states=states, since=since
        )
        write_text(lines, output)


def export_lines(
    journal: Reads,
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
    compact = json.JSONEncoder(separators=(",", ":")).encode  # json.dumps's, made once
    for doc in inspect.export_all(journal, states=states_of(states), since=after):
        yield compact(doc) + "\n"


@click.command()
@click.option("--since", metavar="T", help="Only migrations created at or after T.")
@json_option
def stats(since: str | None, as_json: bool) -> None:
    """Counts by outcome, step durations (p50/p95/max), top failure reasons."""
    from migrator import inspect

    with context.errors():
        data = inspect.stats(context.reader(), since=parse_time(since) if since else None)
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
@click.argument("migration_id", metavar="[ID]", required=False, type=MIGRATION_ID)
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
        if migration_id is not None:
            from migrator.inspect import path as taken

            _migration, path = taken(context.reader(), migration_id)
        data = drawing.render(drawing.Format(fmt), path)
        write_bytes(data, output)
