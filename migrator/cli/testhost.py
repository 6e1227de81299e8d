"""``migrator test-host``: simulated hosts (``test:///ABS/DIR``) whose state is a directory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from migrator.cli import context
from migrator.cli.options import NAME, SECONDS, URI, Count, LazyChoice, json_option
from migrator.errors import InvalidURI, UsageError
from migrator.states import Step

if TYPE_CHECKING:
    from migrator.drivers.test import TestDriver

FAULT_STEPS = [str(step) for step in Step]
MAX_TEST_MIB = 4096
"""The largest test domain: its image, that big, is written to the host's directory."""


def _fault_modes() -> list[str]:
    from migrator.drivers.test import FaultMode

    return [str(mode) for mode in FaultMode]


def test_host_driver(uri: str) -> TestDriver:
    """The driver of a ``test:///ABS/DIR`` host; InvalidURI for any other URI."""
    from migrator.drivers.registry import connect
    from migrator.drivers.test import TestDriver

    driver = connect(uri)
    if not isinstance(driver, TestDriver):
        raise InvalidURI(uri=uri, reason="not a test host (expected test:///ABS/DIR)")
    return driver


@click.group("test-host")
def test_host() -> None:
    """Simulated hosts (test:///ABS/DIR) whose state lives in a directory."""


@test_host.command("define")
@click.argument("uri", type=URI)
@click.argument("domain", type=NAME)
@click.option("--memory", type=Count(1, MAX_TEST_MIB), default=4, show_default=True, help="MiB.")
@click.option("--paused", is_flag=True, help="Define the domain paused.")
@click.option(
    "--persistent", is_flag=True, help="Keep its definition on a source it leaves (else transient)."
)
@click.option(
    "--dirty-rate",
    type=Count(0, 1_048_576),
    default=0,
    metavar="MIB",
    help="MiB/s the domain dirties while it runs: it migrates in passes (0: one pass).",
)
def define(
    uri: str, domain: str, memory: int, paused: bool, persistent: bool, dirty_rate: int
) -> None:
    """Define DOMAIN, running (or paused), on the test host URI."""
    with context.errors():
        info = test_host_driver(uri).define(
            domain, memory_mib=memory, paused=paused, persistent=persistent, dirty_mib_s=dirty_rate
        )
    click.echo(f"defined {domain} ({info['state']}, {memory} MiB) on {uri}")


@test_host.command("list")
@click.argument("uri", type=URI)
@json_option
def list_(uri: str, as_json: bool) -> None:
    """List the domains of a test host."""
    with context.errors():
        domains = test_host_driver(uri).domains()
    if as_json:
        context.print_json(domains)
        return
    print_domains(domains)


def print_domains(domains: list[dict[str, Any]]) -> None:
    from rich.table import Table
    from rich.text import Text

    from migrator.cli.render import console, safe

    if not domains:
        console().print("no domains")
        return
    table = Table(box=None, header_style="bold")
    for column in ("NAME", "STATE", "MEMORY", "LEASE", "JOB"):
        table.add_column(column)
    for d in domains:
        table.add_row(
            Text(safe(d["name"], 60)),
            d["state"],
            f"{d.get('memory_mib', '?')} MiB",
            "held" if d.get("lease_held") else "-",
            Text(safe(d.get("job") or "-", 40)),
        )
    console().print(table)


@test_host.command("fault")
@click.argument("uri", type=URI)
@click.option("--step", type=click.Choice(FAULT_STEPS), help="The hook to break.")
@click.option("--mode", type=LazyChoice(_fault_modes), help="How it breaks.")
@click.option("--seconds", type=SECONDS, help="For slow: how long the hook takes.")
@click.option("--message", help="For error: the error text.")
@click.option("--count", type=Count(1), help="Fire this many times, then clear.")
@click.option("--clear", is_flag=True, help="Remove every fault of the host.")
def fault(
    uri: str,
    step: str | None,
    mode: str | None,
    seconds: float | None,
    message: str | None,
    count: int | None,
    clear: bool,
) -> None:
    """Inject a fault into one step of a test host (or --clear them)."""
    with context.errors():
        host = test_host_driver(uri)
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
