"""``migrator qemu-host``: define, list and destroy real QEMU domains on a ``qemu:///`` host."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from migrator.cli.context import errors, print_json
from migrator.cli.options import json_option
from migrator.errors import InvalidURI, UsageError

if TYPE_CHECKING:
    from migrator.drivers.qemu import QemuDriver


def qemu_host_driver(uri: str) -> QemuDriver:
    """The driver of a ``qemu:///ABS/DIR`` host; InvalidURI for any other URI."""
    from migrator.drivers.base import connect
    from migrator.drivers.qemu import QemuDriver

    driver = connect(uri)
    if not isinstance(driver, QemuDriver):
        raise InvalidURI(uri=uri, reason="not a qemu host (expected qemu:///ABS/DIR)")
    return driver


@click.group("qemu-host")
def qemu_host() -> None:
    """Real QEMU guests (qemu:///ABS/DIR) on this machine, driven over QMP."""


@qemu_host.command("define")
@click.argument("uri")
@click.argument("domain")
@click.option(
    "--memory", type=click.IntRange(min=16), default=128, show_default=True, help="Guest RAM, MiB."
)
@click.option(
    "--touch",
    type=click.IntRange(min=0),
    metavar="MIB",
    help="MiB the guest writes (default: 3/4 of --memory, within what fits).",
)
@click.option("--busy", is_flag=True, help="Keep rewriting the touched pages (dirties memory).")
def define(uri: str, domain: str, memory: int, touch: int | None, busy: bool) -> None:
    """Start DOMAIN, running, on the qemu host URI; return once its memory is written."""
    with errors():
        host = qemu_host_driver(uri)
        try:
            info = host.define(domain, memory_mib=memory, touch_mib=touch, busy=busy)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    kind = "busy" if busy else "idle"
    click.echo(
        f"defined {domain} (running, pid {info['pid']}, {memory} MiB,"
        f" {info['touch_mib']} MiB touched, {kind}) on {uri}"
    )


@qemu_host.command("list")
@click.argument("uri")
@json_option
def list_(uri: str, as_json: bool) -> None:
    """List the domains of a qemu host, with the state their QEMU reports."""
    with errors():
        domains = qemu_host_driver(uri).domains()
    if as_json:
        print_json(domains)
        return
    print_domains(domains)


def print_domains(domains: list[dict[str, Any]]) -> None:
    if not domains:
        click.echo("no domains")
        return
    rows = [("NAME", "STATE", "PID", "MEMORY", "TOUCHED", "BUSY", "JOB")] + [
        (
            d["name"],
            d["state"],
            str(d["pid"] or "-"),
            f"{d['memory_mib']} MiB",
            f"{d['touch_mib']} MiB",
            "yes" if d["busy"] else "no",
            d["job"] or "-",
        )
        for d in domains
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@qemu_host.command("destroy")
@click.argument("uri")
@click.argument("domain")
def destroy(uri: str, domain: str) -> None:
    """Stop DOMAIN's QEMU (by its pid) and forget the domain."""
    with errors():
        host = qemu_host_driver(uri)
        try:
            host.destroy(domain)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    click.echo(f"destroyed {domain} on {uri}")


@qemu_host.command("set-downtime")
@click.argument("uri")
@click.argument("domain")
@click.argument("milliseconds", type=click.IntRange(min=1))
def set_downtime(uri: str, domain: str, milliseconds: int) -> None:
    """Set DOMAIN's migration downtime limit, live during a migration (lets a busy guest
    converge), and for its next migrations."""
    with errors():
        live = qemu_host_driver(uri).set_downtime(domain, milliseconds)
    when = "now and for later migrations" if live else "for later migrations"
    click.echo(f"{domain}: downtime limit {milliseconds} ms, {when}")
