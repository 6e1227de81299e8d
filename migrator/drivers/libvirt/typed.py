"""What the steps send: libvirt's typed parameters and flags, and Perform's statistics."""

from __future__ import annotations

from migrator.drivers.api import MigrationParams
from migrator.drivers.libvirt.errors import LibvirtError, LibvirtUnreachable
from migrator.drivers.libvirt.procedures import MigrateParam
from migrator.drivers.libvirt.remote import Remote
from migrator.drivers.libvirt.xdr import DomainRef, ParamValue, XDRError
from migrator.flags import MigrateFlags
from migrator.records import StepContext

_SOURCE_ONLY = MigrateFlags.ABORT_ON_ERROR | MigrateFlags.AUTO_CONVERGE
STATS_TIMEOUT = 5.0
"""Seconds a job-statistics call may take: a daemon slow to give advisory numbers must not
hold up a step."""


def parallel(params: MigrationParams) -> MigrateFlags:
    """``VIR_MIGRATE_PARALLEL`` for a migration over parallel connections (its policy's
    ``parallel_connections``): libvirt sets up multifd on both QEMUs."""
    return MigrateFlags.PARALLEL if params.connections else MigrateFlags.NONE


def dest_flags(params: MigrationParams) -> int:
    """The flags of Prepare and Finish: libvirt keeps ABORT_ON_ERROR and AUTO_CONVERGE to
    the source (``virDomainMigrateVersion3Full``)."""
    return int((params.flags | parallel(params)) & ~_SOURCE_ONLY)


def common(params: MigrationParams) -> dict[str, ParamValue]:
    """The parameters of every step: ``destination_name``, ``bandwidth`` and
    ``parallel.connections`` when set."""
    typed: dict[str, ParamValue] = {}
    if params.dname:
        typed[MigrateParam.DEST_NAME] = params.dname
    if params.bandwidth > 0:
        typed[MigrateParam.BANDWIDTH] = params.bandwidth
    if params.connections:
        typed[MigrateParam.PARALLEL_CONNECTIONS] = params.connections
    return typed


def perform_typed(params: MigrationParams, uri: str) -> dict[str, ParamValue]:
    """Perform3's parameters: ``common``'s, the URI, and for a post-copy migration its
    post-copy bandwidth (``bandwidth.postcopy``, libvirt >= 5.1): the source's QEMU has it
    before the data goes, so that a switch however early never runs uncapped."""
    typed = {**common(params), MigrateParam.URI: uri}
    if params.flags & MigrateFlags.POSTCOPY and params.postcopy_bandwidth > 0:
        typed[MigrateParam.BANDWIDTH_POSTCOPY] = params.postcopy_bandwidth
    return typed


def time_left(ctx: StepContext) -> float | None:
    """The timeout of a call made for ``ctx``: what is left of its deadline, if any."""
    left = ctx.time_left()
    return None if left is None else max(left, 0.001)


def stats_timeout(left: float | None) -> float:
    """The timeout of a job-statistics call: ``STATS_TIMEOUT``, less if less is left."""
    return STATS_TIMEOUT if left is None else min(STATS_TIMEOUT, left)


def final_stats(remote: Remote, dom: DomainRef, left: float | None) -> dict[str, ParamValue]:
    """The job statistics right after Perform3 (the job lasts until Confirm3), or none if
    the source does not give them within ``stats_timeout(left)``: they are advisory, and
    never decide the step."""
    try:
        stats = remote.job_stats(dom, timeout=stats_timeout(left))
    except (LibvirtError, LibvirtUnreachable, XDRError):
        return {}
    stats.pop("type", None)
    return stats
