"""After a crash or a doubt: ``recover``, ``resolve``, ``abort`` and ``replay``."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from migrator.cli import context
from migrator.cli.exits import ExitCode
from migrator.cli.migrate import outcome_of, print_outcome
from migrator.cli.options import (
    MIGRATION_ID,
    SECONDS,
    hook_option,
    hooks_from,
    json_option,
    probe_patience_option,
)
from migrator.states import State

if TYPE_CHECKING:
    from migrator.engine.orphans import Recovered

SAFE_ENDS = {State.CONFIRMED.value, State.ROLLED_BACK.value, State.FAILED.value}


@click.command()
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--steal", is_flag=True, help="Also take migrations whose owner seems alive.")
@click.option(
    "--timeout", type=SECONDS, default=600.0, show_default=True, help="Per-step timeout, s."
)
@click.option(
    "--by-lease-only",
    is_flag=True,
    help="Take a migration only once its lease lapsed, never by its owner's PID.",
)
@click.option(
    "--host-map",
    "host_maps",
    multiple=True,
    metavar="OLD=NEW",
    help="Reach the journaled host OLD at NEW (re-addressed, tunnel gone); repeatable.",
)
@probe_patience_option
@hook_option
@json_option
def recover(
    dry_run: bool,
    steal: bool,
    timeout: float,
    by_lease_only: bool,
    host_maps: tuple[str, ...],
    probe_patience: float,
    hook_commands: tuple[str, ...],
    as_json: bool,
) -> None:
    """Bring every orphaned migration to a safe end (or show the plan)."""
    with context.errors():
        from migrator.engine import hostmap

        hooks = hooks_from(hook_commands)
        journal = context.journal()
        moved = (
            hostmap.parse(host_maps, hostmap.hosts_of(hostmap.pending(journal)))
            if host_maps
            else {}
        )
        coordinator = context.coordinator(
            journal,
            step_timeout=timeout,
            hooks=hooks,
            connect=context.connecting(timeout),
            probe_patience=probe_patience,
        )
        found = coordinator.recover(
            dry_run=dry_run, steal=steal, by_lease_only=by_lease_only, host_map=moved
        )
        rows = [_recovered_dict(r) for r in found]
    if as_json:
        context.print_json(rows)
    else:
        print_recovery(rows, dry_run=dry_run)
    sys.exit(recover_exit_code(rows, dry_run=dry_run))


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


def recover_exit_code(rows: list[dict[str, Any]], *, dry_run: bool) -> ExitCode:
    """OK if all claimed reached a safe end (or nothing to do), IN_DOUBT if any is, else
    FAILED."""
    if dry_run:
        return ExitCode.OK
    results = [r["result"] for r in rows if r["claimed"]]
    if any(r == State.IN_DOUBT.value for r in results):
        return ExitCode.IN_DOUBT
    if any(r not in SAFE_ENDS for r in results):
        return ExitCode.FAILED
    return ExitCode.OK


def print_recovery(rows: list[dict[str, Any]], *, dry_run: bool) -> None:
    from rich.table import Table
    from rich.text import Text

    from migrator.cli.render import console, safe

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
        elif r["claimed"] and r["note"]:
            result = f"{r['result'] or 'not finished'}: {r['note']}"
        elif r["claimed"]:
            result = r["result"] or "not finished"
        else:
            result = r["note"] or "owner alive: left alone (--steal takes it)"
        table.add_row(r["id"][:8], r["state"], Text(r["action"]), Text(safe(result)))
    out.print(table)


@click.command()
@click.argument("migration_id", metavar="ID", type=MIGRATION_ID)
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
    with context.errors():
        hooks = hooks_from(hook_commands)
        coordinator = context.coordinator(context.journal(), hooks=hooks)
        outcome = outcome_of(coordinator.resolve(migration_id, running_on=running_on))
    if as_json:
        context.print_json(outcome)
    else:
        print_outcome(outcome)
    sys.exit(outcome["exit_code"])


@click.command()
@click.argument("migration_id", metavar="ID", type=MIGRATION_ID)
def abort(migration_id: str) -> None:
    """Ask a running migration to stop; Perform fails and the migration rolls back."""
    with context.errors():
        migration = context.coordinator(context.journal()).abort(migration_id)
    click.echo(f"abort requested for {migration.id} ({migration.state})")


@click.command()
@click.argument("migration_id", metavar="ID", type=MIGRATION_ID)
@json_option
def replay(migration_id: str, as_json: bool) -> None:
    """Re-run the engine's decisions against the journal; report the first divergence."""
    from migrator import replay as replaying

    with context.errors():
        result = replaying.replay(context.journal(existing=True), migration_id)
    data = result.as_dict()
    if as_json:
        context.print_json(data)
    elif result.consistent:
        click.echo(f"{result.migration_id}: consistent ({data['events']} events)")
    else:
        print_divergence(data)
    sys.exit(ExitCode.OK if result.consistent else ExitCode.FAILED)


def print_divergence(data: dict[str, Any]) -> None:
    from migrator.cli.render import console, safe

    at = data["divergence"]
    out = console()
    out.print(f"{data['id']}: DIVERGES at seq {at['seq']}", markup=False)
    for label in ("recorded", "replayed"):
        sig = at[label]
        text = "nothing" if sig is None else " ".join(f"{k}={v}" for k, v in sig.items())
        out.print(f"  {label:9} {safe(text)}", markup=False)
    if data["note"]:
        out.print(f"  note      {safe(data['note'])}", markup=False)
