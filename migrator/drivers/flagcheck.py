"""Refuse, before Begin, a migration flag that a host's driver would silently ignore."""

from __future__ import annotations

from migrator.drivers.api import Driver
from migrator.drivers.uri import driver_scheme, redact_uri
from migrator.errors import FlagNotHonoured
from migrator.flags import MigrateFlags, cli_name


def _set(flags: MigrateFlags) -> list[MigrateFlags]:
    return [f for f in MigrateFlags if f and f & flags == f]


def refuse_unhonoured(flags: MigrateFlags, *drivers: Driver) -> None:
    """Raise FlagNotHonoured for the first flag that one of ``drivers`` does not act on."""
    for driver in drivers:
        unhonoured = flags & ~driver.honoured_flags
        if not unhonoured:  # the usual case: no flag to list
            continue
        for flag in _set(unhonoured):
            raise FlagNotHonoured(
                flag=cli_name(flag),
                driver=driver_scheme(driver.uri),
                host=redact_uri(driver.uri),
                honoured=[cli_name(f) for f in _set(driver.honoured_flags)],
            )
