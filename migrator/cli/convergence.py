"""Convergence policies on ``migrate`` and ``submit``, and the runtime requests:
``set-downtime``, ``set-speed`` and ``postcopy`` (docs/convergence.md)."""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from migrator.cli import context
from migrator.cli.exits import ExitCode
from migrator.cli.options import MIGRATION_ID, Count, Seconds, json_option

if TYPE_CHECKING:
    from migrator.convergence.policy import Policy
    from migrator.records import Request

F = TypeVar("F", bound=Callable[..., Any])
POLICY_FILE_ENV = "MIGRATOR_POLICY_FILE"
MAX_DOWNTIME_MS = 3_600_000
MAX_MIB = 1_048_576
POLL = 0.1
"""How often ``--wait`` reads the request back."""

_POLICY: tuple[click.Option, ...] = (
    click.Option(
        ["--max-downtime"], type=Count(1, MAX_DOWNTIME_MS), metavar="MS",
        help="Allowed downtime, ms; with --downtime-steps the end of a ramp.",
    ),
    click.Option(
        ["--downtime-steps"], type=Count(1, 100), metavar="N",
        help="Raise the downtime to --max-downtime in N equal steps.",
    ),
    click.Option(
        ["--downtime-delay"], type=Seconds(zero=True), metavar="S",
        help="Seconds of Perform between two steps of the downtime ramp.",
    ),
    click.Option(
        ["--postcopy-bandwidth"], type=Count(1, MAX_MIB), metavar="MIB",
        help="Bandwidth cap after a switch to post-copy, MiB/s.",
    ),
    click.Option(
        ["--budget"], type=Seconds(), metavar="S_PER_GIB",
        help="Completion budget: seconds of Perform per GiB of guest memory.",
    ),
    click.Option(
        ["--stall-iterations"], type=Count(1, 1000), metavar="N",
        help="Stalled: N passes without the remaining bytes going down.",
    ),
    click.Option(
        ["--on-stall", "action"], type=click.Choice(["abort", "postcopy", "pause"]),
        help="What to do when stalled or over budget (default: abort).",
    ),
    click.Option(
        ["--auto-converge"], is_flag=True, default=None,
        help="Throttle the guest's vCPUs while it does not converge.",
    ),
    click.Option(
        ["--parallel-connections"], type=Count(1, 255), metavar="N",
        help="Send over N connections (multifd).",
    ),
    click.Option(
        ["--policy-file"], type=click.Path(dir_okay=False, path_type=Path), metavar="PATH",
        help=f"Named policy defaults (TOML), matched by host or domain; or ${POLICY_FILE_ENV}.",
    ),
)  # fmt: skip
_FIELD = {
    "max_downtime": "max_downtime_ms",
    "downtime_steps": "downtime_steps",
    "downtime_delay": "downtime_delay",
    "postcopy_bandwidth": "postcopy_bandwidth_mib",
    "budget": "budget_s_per_gib",
    "stall_iterations": "stall_iterations",
    "action": "action",
    "auto_converge": "auto_converge",
    "parallel_connections": "parallel_connections",
}
"""Each option's parameter and the ``Policy`` field it sets."""


def policy_options(f: F) -> F:
    """The policy options; the command gets them as one ``policy_args`` dict."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given = {k: kwargs.pop(k) for k in (*_FIELD, "policy_file")}
        return f(*args, policy_args=given, **kwargs)

    params = getattr(f, "__click_params__", [])
    wrapper.__click_params__ = params + list(reversed(_POLICY))  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def policy_of(args: dict[str, Any], *, domain: str, src: str, dst: str) -> Policy | None:
    """The policy of a migration: the policy file's match, the options over it; None if
    neither says anything. A bad file or value is a one-line ``UsageError``."""
    given = {_FIELD[k]: v for k, v in args.items() if k in _FIELD and v is not None}
    path = args.get("policy_file") or os.environ.get(POLICY_FILE_ENV) or None
    if not given and path is None:
        return None  # nothing to import: the policy modules are not on a bare migrate's path
    from migrator.convergence.policy import Policy, from_dict

    base = Policy()
    if path is not None:
        from migrator.convergence import policyfile

        _name, base = policyfile.load(Path(path)).lookup(domain=domain, src=src, dst=dst)
    return from_dict(given, where="options").over(base)


# -- runtime requests ----------------------------------------------------------------------


def wait_option(f: F) -> F:
    return click.option(
        "--wait",
        type=Seconds(zero=True),
        default=0.0,
        metavar="S",
        help="Wait up to S s for the request's outcome; exit 1 unless it was applied.",
    )(f)


@click.command("set-downtime")
@click.argument("migration_id", type=MIGRATION_ID, metavar="ID")
@click.argument("ms", type=Count(1, MAX_DOWNTIME_MS), metavar="MS")
@wait_option
@json_option
def set_downtime(migration_id: str, ms: int, wait: float, as_json: bool) -> None:
    """Allow MS of downtime to migration ID, now in Perform (a journaled request)."""
    _request(lambda c: c.set_downtime(migration_id, ms), wait, as_json)


@click.command("set-speed")
@click.argument("migration_id", type=MIGRATION_ID, metavar="ID")
@click.argument("mib", type=Count(1, MAX_MIB), metavar="MIB")
@wait_option
@json_option
def set_speed(migration_id: str, mib: int, wait: float, as_json: bool) -> None:
    """Send migration ID, now in Perform or post-copy, at MIB MiB/s (a journaled request)."""
    _request(lambda c: c.set_speed(migration_id, mib), wait, as_json)


@click.command("postcopy")
@click.argument("migration_id", type=MIGRATION_ID, metavar="ID")
@wait_option
@json_option
def postcopy(migration_id: str, wait: float, as_json: bool) -> None:
    """Switch migration ID, now in Perform, to post-copy (a journaled request)."""
    _request(lambda c: c.request_postcopy(migration_id), wait, as_json)


def _request(ask: Callable[[Any], Request], wait: float, as_json: bool) -> None:
    """Journal the request; with ``wait``, follow it until it has an outcome."""
    with context.errors():
        journal = context.journal()
        request = ask(context.coordinator(journal))
        if wait > 0:
            request = _followed(journal, request, wait)
    _print(request, as_json)
    if wait > 0 and not (request.outcome or "").startswith("applied"):
        sys.exit(ExitCode.FAILED)


def _followed(journal: Any, request: Request, wait: float) -> Request:
    deadline = time.monotonic() + wait
    while request.pending and time.monotonic() < deadline:
        time.sleep(min(POLL, max(0.0, deadline - time.monotonic())))
        request = next(r for r in journal.requests(request.migration_id) if r.id == request.id)
    return request


def _print(request: Request, as_json: bool) -> None:
    from migrator.cli.render import safe
    from migrator.inspect import request_dict

    if as_json:
        context.print_json(request_dict(request))
        return
    what = str(request.kind) + ("" if request.value is None else f" {request.value}")
    if request.pending:
        click.echo(
            f"request {request.id} ({what}) journaled for migration {request.migration_id};"
            f" whoever drives it applies it: `migrator show {request.migration_id[:8]}`"
        )
    else:
        click.echo(f"request {request.id} ({what}): {safe(request.outcome or '', 300)}")
