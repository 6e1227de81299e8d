"""A migration job left on a source by a client that is gone, aborted through the daemon.

libvirt binds a migration's job to the connection that began it, but a Perform3 still
running in the daemon when that client died (killed during a network cut, say) runs on:
its job holds the domain until QEMU's own stream gives up, minutes later, and every new
migration of the domain meanwhile fails at Begin ("another migration job is already
running"). When recovery or a takeover has decided to roll such a migration back, the
source's outgoing migration job can only be the dead client's, so ``clear`` aborts it
(DOMAIN_ABORT_JOB, as ``virsh domjobabort``) and waits, within a bound, for the daemon to
report no job; what happened is returned for the timeline. A job that is not an outgoing
migration (a save, a dump an operator started) is never touched.
"""

from __future__ import annotations

import time
from typing import Any

from migrator.drivers.libvirt.errors import LibvirtError
from migrator.drivers.libvirt.procedures import ErrorCode, JobOperation
from migrator.drivers.libvirt.remote import Remote
from migrator.drivers.libvirt.xdr import DomainRef, XDRError

JOB_END_WAIT = 30.0
"""Seconds recovery waits for an aborted job to end before it carries on and says so."""
POLL = 0.2
_ACTIVE = (1, 2)  # virDomainJobType BOUNDED, UNBOUNDED
_GONE = (ErrorCode.NO_DOMAIN, ErrorCode.OPERATION_INVALID)
"""The domain or its job ended meanwhile: nothing is left to abort."""


def clear(remote: Remote, dom: DomainRef, wait: float | None = None) -> dict[str, Any]:
    """Abort the outgoing migration job of ``dom``, if one runs, and wait at most ``wait``
    s (``JOB_END_WAIT`` by default) for it to end; the timeline's words, {} if no job ran."""
    wait = JOB_END_WAIT if wait is None else wait
    try:
        stats = remote.job_stats(dom)
    except (LibvirtError, XDRError):
        return {}  # no statistics: the daemon cannot say which job runs, so none is aborted
    if stats.get("type") not in _ACTIVE:
        return {}
    operation = stats.get("operation")
    if operation != JobOperation.MIGRATION_OUT:
        return {"job": f"a job of operation {operation} runs on the source: not a migration's,"
                       " left alone"}  # fmt: skip
    start = time.monotonic()
    try:
        remote.abort_job(dom)
    except LibvirtError as exc:
        if exc.code not in _GONE:
            raise
    aborted = "the outgoing migration job of a client gone was aborted"
    while True:
        took = time.monotonic() - start
        if not _active(remote, dom):
            return {"job": f"{aborted}; it ended after {took:.1f} s"}
        if took >= wait:
            return {"job": f"{aborted}; still running after {wait:g} s, the daemon ends it later"}
        time.sleep(min(POLL, max(0.0, wait - took)))


def _active(remote: Remote, dom: DomainRef) -> bool:
    try:
        return remote.job_info(dom).type in _ACTIVE
    except LibvirtError as exc:
        if exc.code in _GONE:
            return False
        raise
