"""Perform's watch: progress from the source's job statistics, abort and deadline.

While Perform3 waits for its reply on the migration's connection, ``PerformWatch.tick``
runs on a second connection to the source (opened on the first tick): it turns
DOMAIN_GET_JOB_STATS into ``ctx.progress`` samples and, once ``ctx.aborted()`` turns true
or the deadline passes, sends DOMAIN_ABORT_JOB, after which libvirt fails Perform3 and
resumes the source itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from migrator.drivers.libvirt.errors import LibvirtError, LibvirtUnreachable
from migrator.drivers.libvirt.remote import Remote
from migrator.drivers.libvirt.xdr import DomainRef, ParamValue, XDRError
from migrator.records import Progress, StepContext

log = logging.getLogger(__name__)


def progress_of(stats: Mapping[str, ParamValue], *, final: bool = False) -> Progress | None:
    """A progress sample from libvirt's job statistics (``memory_*``), if they hold one."""
    if "memory_total" not in stats:
        return None
    total = int(stats.get("memory_total", 0))
    transferred = int(stats.get("memory_processed", 0))
    remaining = 0 if final else int(stats.get("memory_remaining", 0))
    passes = max(1, int(stats.get("memory_iteration", 1)))
    return Progress(total, transferred, remaining, passes=passes)


class PerformWatch:
    def __init__(self, ctx: StepContext, dom: DomainRef, open_remote: Callable[[], Remote]) -> None:
        self.ctx = ctx
        self.dom = dom
        self._open = open_remote
        self._remote: Remote | None = None
        self.gave_up: str | None = None
        """Why the job was aborted ("aborted by an operator", "deadline"), or None."""

    def tick(self) -> None:
        try:
            self._tick()
        except (LibvirtError, LibvirtUnreachable, XDRError) as exc:
            # A watch that fails must not fail Perform: the reply decides.
            log.debug("perform watch of %s: %s", self.dom.name, exc)

    def _tick(self) -> None:
        if self.gave_up is not None:
            return
        remote = self._connection()
        why = self._why_give_up()
        if why is not None:
            self.gave_up = why
            remote.abort_job(self.dom)
            return
        sample = progress_of(remote.job_stats(self.dom))
        if sample is not None:
            self.ctx.progress(sample)

    def _why_give_up(self) -> str | None:
        if self.ctx.aborted():
            return "aborted by an operator"
        if self.ctx.deadline is not None and time.monotonic() >= self.ctx.deadline:
            return "Perform passed its deadline"
        return None

    def _connection(self) -> Remote:
        if self._remote is None or self._remote.conn.broken:
            self._remote = self._open()
        return self._remote

    def close(self) -> None:
        if self._remote is not None:
            self._remote.conn.close()
            self._remote = None
