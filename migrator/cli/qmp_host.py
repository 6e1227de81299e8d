"""``migrator qmp-host``: define, list and destroy real QEMU domains on a ``qmp:///`` host."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from migrator.cli.context import errors, print_json
from migrator.cli.options import NAME, URI, Count, json_option
from migrator.errors import InvalidURI, UsageError

if TYPE_CHECKING:
    from migrator.drivers.qmphost import QmpDriver


def qmp_host_driver(uri: str) -> QmpDriver:
    """The driver of a ``qmp:///ABS/DIR`` host; InvalidURI for any other URI."""
    from migrator.drivers.qmphost import QmpDriver
    from migrator.drivers.registry import connect

    driver = connect(uri)
    if not isinstance(driver, QmpDriver):
        raise InvalidURI(uri=uri, reason="not a qmp host (expected qmp:///ABS/DIR)")
    return driver


@click.group("qmp-host")
def qmp_host() -> None:
    """Real QEMU guests (qmp:///ABS/DIR) on this machine, driven over QMP."""


@qmp_host.command("define")
@click.argument("uri", type=URI)
@click.argument("domain", type=NAME)
@click.option(
    "--memory", type=Count(16, 1 << 20), default=128, show_default=True, help="Guest RAM, MiB."
)
@click.option(
    "--touch",
    type=Count(0, 1 << 20),
    metavar="MIB",
    help="MiB the guest writes (default: 3/4 of --memory, within what fits).",
)
@click.option("--busy", is_flag=True, help="Keep rewriting the touched pages (dirties memory).")
@click.option(
    "--kernel",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Boot this multiboot image instead of the generated guest (not waited for).",
)
def define(
    uri: str, domain: str, memory: int, touch: int | None, busy: bool, kernel: Path | None
) -> None:
    """Start DOMAIN, running, on the qmp host URI; return once its memory is written."""
    with errors():
        host = qmp_host_driver(uri)
        try:
            image = None if kernel is None else str(kernel.absolute())
            if kernel is not None:
                kernel.stat()  # a missing image: the system's reason, in one line
            info = host.define(domain, memory_mib=memory, touch_mib=touch, busy=busy, kernel=image)
        except OSError as exc:
            raise UsageError(f"cannot read the kernel: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    kind = "own kernel" if kernel else "busy" if busy else "idle"
    click.echo(
        f"defined {domain} (running, pid {info['pid']}, {memory} MiB,"
        f" {info['touch_mib']} MiB touched, {kind}) on {uri}"
    )


@qmp_host.command("list")
@click.argument("uri", type=URI)
@json_option
def list_(uri: str, as_json: bool) -> None:
    """List the domains of a qmp host, with the state their QEMU reports."""
    with errors():
        domains = qmp_host_driver(uri).domains()
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


@qmp_host.command("destroy")
@click.argument("uri", type=URI)
@click.argument("domain", type=NAME)
def destroy(uri: str, domain: str) -> None:
    """Stop DOMAIN's QEMU (by its pid) and forget the domain."""
    with errors():
        host = qmp_host_driver(uri)
        try:
            host.destroy(domain)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    click.echo(f"destroyed {domain} on {uri}")


@qmp_host.command("set-downtime")
@click.argument("uri", type=URI)
@click.argument("domain", type=NAME)
@click.argument("milliseconds", type=Count(1))
def set_downtime(uri: str, domain: str, milliseconds: int) -> None:
    """Set DOMAIN's migration downtime limit, live during a migration (lets a busy guest
    converge), and for its next migrations."""
    with errors():
        live = qmp_host_driver(uri).set_downtime(domain, milliseconds)
    when = "now and for later migrations" if live else "for later migrations"
    click.echo(f"{domain}: downtime limit {milliseconds} ms, {when}")
