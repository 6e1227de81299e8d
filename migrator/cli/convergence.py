"""Convergence policies on ``migrate`` and ``submit``, and the runtime requests:
``set-downtime``, ``set-speed`` and ``postcopy`` (docs/convergence.md)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from migrator.cli import context
from migrator.cli.options import MIGRATION_ID, Count, Seconds, json_option

if TYPE_CHECKING:
    from migrator.convergence.policy import Policy
    from migrator.records import Request

F = TypeVar("F", bound=Callable[..., Any])
POLICY_FILE_ENV = "MIGRATOR_POLICY_FILE"
MAX_DOWNTIME_MS = 3_600_000
MAX_MIB = 1_048_576

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
    from migrator.convergence import policyfile
    from migrator.convergence.policy import Policy, from_dict

    given = {_FIELD[k]: v for k, v in args.items() if k in _FIELD and v is not None}
    path = args.get("policy_file") or os.environ.get(POLICY_FILE_ENV) or None
    base = Policy()
    if path is not None:
        _name, base = policyfile.load(Path(path)).lookup(domain=domain, src=src, dst=dst)
    if not given and path is None:
        return None
    return from_dict(given, where="options").over(base)


# -- runtime requests ----------------------------------------------------------------------


@click.command("set-downtime")
@click.argument("migration_id", type=MIGRATION_ID, metavar="ID")
@click.argument("ms", type=Count(1, MAX_DOWNTIME_MS), metavar="MS")
@json_option
def set_downtime(migration_id: str, ms: int, as_json: bool) -> None:
    """Allow MS of downtime to migration ID, now in Perform (a journaled request)."""
    with context.errors():
        request = _coordinator().set_downtime(migration_id, ms)
    _print(request, as_json)


@click.command("set-speed")
@click.argument("migration_id", type=MIGRATION_ID, metavar="ID")
@click.argument("mib", type=Count(1, MAX_MIB), metavar="MIB")
@json_option
def set_speed(migration_id: str, mib: int, as_json: bool) -> None:
    """Send migration ID, now in Perform, at MIB MiB/s (a journaled request)."""
    with context.errors():
        request = _coordinator().set_speed(migration_id, mib)
    _print(request, as_json)


@click.command("postcopy")
@click.argument("migration_id", type=MIGRATION_ID, metavar="ID")
@json_option
def postcopy(migration_id: str, as_json: bool) -> None:
    """Switch migration ID, now in Perform, to post-copy (a journaled request)."""
    with context.errors():
        request = _coordinator().request_postcopy(migration_id)
    _print(request, as_json)


def _coordinator() -> Any:
    return context.coordinator(context.journal())


def _print(request: Request, as_json: bool) -> None:
    from migrator.inspect import request_dict

    if as_json:
        context.print_json(request_dict(request))
        return
    what = str(request.kind) + ("" if request.value is None else f" {request.value}")
    click.echo(
        f"request {request.id} ({what}) journaled for migration {request.migration_id};"
        f" whoever drives it applies it: `migrator show {request.migration_id[:8]}`"
    )
