"""What a libvirt host holds of a domain, and how Finish and Confirm are settled from it.

libvirt ties its half of a migration to the RPC connection that started it: once that
connection is gone (the coordinator died, the hook failed, the daemon restarted), Finish3
answers "Domain not found" and Confirm3 "domain is not being migrated". So a Finish or
Confirm that cannot run on its own connection is settled from what the host says now:

===========================  ======================  ==========================================
host holds                   Finish (destination)    Confirm (source)
===========================  ======================  ==========================================
nothing                      not running             cancelled: error (nothing to resume);
                                                     else done
shut off (persistent), or  not running             cancelled: error; else undefine if the
shutting down                                        flags say UNDEFINE_SOURCE
incoming copy (starting up,  cancelled: destroyed,   cancelled: error; else destroyed
or paused for the migration  not running; else
with no job statistics:      error (cannot tell)
"only on the source host")
paused by the migration      as an incoming copy     cancelled: resumed; else destroyed
paused otherwise             running                 cancelled: left paused; else destroyed
running, resumed by libvirt  running                 cancelled: done; else destroyed (see
as a cancelled migration                             below)
running otherwise            running                 cancelled: done; else error (never
                                                     destroy a copy someone resumed)
===========================  ======================  ==========================================

The domain is found by the UUID in libvirt's migration cookie (``<qemu-migration><uuid>``)
when the step was given one, else by name: another guest that merely has the name (on the
destination, say, which made Prepare fail) is never taken for the migrated one.

The coordinator calls Confirm(cancelled=0) only once the destination was seen running (its
Finish said so, or its probe did, or an operator resolved it): that is why the source is
destroyed here without looking at the destination.

A source running with reason ``migration-canceled`` was resumed by its own daemon, not by a
person: libvirt 9.0, told that the client of a finished transfer is gone, marks the job
``confirm3_cancelled`` while it resets the migration's parameters, and a daemon killed in
that moment (stopped while QEMU was slow to answer) resumes the source when it starts again,
as if Finish3 had failed. The destination runs the migrated guest by then, so two copies
run: the source's is destroyed, and Confirm's detail says so.
"""

from __future__ import annotations

import enum
import uuid as uuidlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from migrator.drivers.api import DomainState
from migrator.drivers.libvirt import jobs
from migrator.drivers.libvirt.errors import LibvirtError
from migrator.drivers.libvirt.procedures import (
    DomainStateCode,
    ErrorCode,
    PausedReason,
    RunningReason,
)
from migrator.drivers.libvirt.remote import DomainStatus, JobInfo, Remote
from migrator.drivers.libvirt.xdr import DomainRef
from migrator.errors import DriverError
from migrator.flags import MigrateFlags


class Holds(enum.StrEnum):
    ABSENT = "absent"
    SHUTOFF = "shutoff"
    INCOMING = "incoming"
    PAUSED_BY_MIGRATION = "paused-by-migration"
    PAUSED = "paused"
    RUNNING = "running"


_STATE_OF: dict[Holds, DomainState] = {
    Holds.ABSENT: DomainState.ABSENT,
    Holds.SHUTOFF: DomainState.SHUTOFF,
    Holds.INCOMING: DomainState.INCOMING,
    Holds.PAUSED_BY_MIGRATION: DomainState.PAUSED,
    Holds.PAUSED: DomainState.PAUSED,
    Holds.RUNNING: DomainState.RUNNING,
}

_MAY_MIGRATE = (Holds.RUNNING, Holds.PAUSED, Holds.PAUSED_BY_MIGRATION)
"""What a source holds while an outgoing migration job may run on it."""
_KNOWN_STATES = frozenset(DomainStateCode)
_ACTIVE_RUNNING = (DomainStateCode.RUNNING, DomainStateCode.BLOCKED)
"""SHUTDOWN is not among them: libvirt also reports it for a QEMU on its way out (an
incoming copy torn down after its client left), which never ran."""


@dataclass(frozen=True, slots=True)
class Seen:
    """One look at a domain: what it is, libvirt's state and reason, and its job."""

    holds: Holds
    dom: DomainRef | None = None
    status: DomainStatus | None = None
    job: JobInfo | None = None

    @property
    def state(self) -> DomainState:
        """As the engine reads it. A domain paused by a migration whose job is gone is not
        active: a source paused for ever by a lost migration looks exactly like a
        destination's copy being torn down, and that copy never ran."""
        if self.holds is Holds.PAUSED_BY_MIGRATION and not (self.job and self.job.active):
            return DomainState.INCOMING
        return _STATE_OF[self.holds]

    def detail(self) -> dict[str, Any]:
        detail: dict[str, Any] = {"holds": str(self.holds)}
        if self.status is not None:
            detail.update(state=self.status.name, reason=self.status.reason)
        if self.dom is not None:
            detail["id"] = self.dom.id
        if self.job is not None:
            detail["job"] = self.job.type
        return detail


def cookie_uuid(cookie: bytes) -> bytes | None:
    """The domain UUID a libvirt migration cookie names, or None if it names none."""
    try:
        root = ET.fromstring(cookie.rstrip(b"\0").decode())
        text = root.findtext("uuid")
        return uuidlib.UUID(text).bytes if root.tag == "qemu-migration" and text else None
    except (ET.ParseError, UnicodeDecodeError, ValueError):
        return None


def cookie_host_uuid(cookie: bytes) -> str | None:
    """The host UUID a libvirt migration cookie names (``<hostuuid>``: the host that made
    it, the source for Begin's, the destination for Prepare's), or None."""
    return _uuid_text(cookie.rstrip(b"\0"), "qemu-migration", "hostuuid")


def capabilities_host_uuid(xml: str) -> str | None:
    """``<capabilities><host><uuid>``: the daemon's ``host_uuid``, the one its cookies name."""
    return _uuid_text(xml.encode(), "capabilities", "host/uuid")


def _uuid_text(document: bytes, tag: str, path: str) -> str | None:
    try:
        root = ET.fromstring(document.decode())
        text = root.findtext(path)
        return str(uuidlib.UUID(text)) if root.tag == tag and text else None
    except (ET.ParseError, UnicodeDecodeError, ValueError):
        return None


def look(remote: Remote, name: str, uuid: bytes | None = None) -> Seen:
    """Ask the host about the domain with ``uuid`` (if given) or ``name``: lookup, state and
    reason, and for a paused domain its job (whose statistics libvirt refuses on the
    destination of a migration). A domain that vanishes meanwhile is absent."""
    dom = remote.lookup_uuid(uuid) if uuid else remote.lookup(name)
    if dom is None:
        return Seen(Holds.ABSENT)
    try:
        return _look_at(remote, dom)
    except LibvirtError as exc:
        if exc.code != ErrorCode.NO_DOMAIN:
            raise
        return Seen(Holds.ABSENT)


def _look_at(remote: Remote, dom: DomainRef) -> Seen:
    status = remote.state(dom)
    if status.state not in _KNOWN_STATES:
        raise DriverError(
            f"libvirt daemon {remote.conn.host} reports domain {dom.name!r} in state"
            f" {status.state} (reason {status.reason}), which migrator does not know: it"
            " cannot tell whether the domain runs there"
        )
    if status.state in _ACTIVE_RUNNING:
        return Seen(Holds.RUNNING, dom, status)
    if status.state not in (DomainStateCode.PAUSED, DomainStateCode.PMSUSPENDED):
        return Seen(Holds.SHUTOFF, dom, status)
    if status.reason == PausedReason.STARTING_UP:
        return Seen(Holds.INCOMING, dom, status)  # its CPUs never ran
    if status.reason != PausedReason.MIGRATION:
        return Seen(Holds.PAUSED, dom, status)
    try:
        job = remote.job_info(dom)
    except LibvirtError as exc:
        if exc.code != ErrorCode.OPERATION_UNSUPPORTED:
            raise
        return Seen(Holds.INCOMING, dom, status)  # "statistics only on the source host"
    return Seen(Holds.PAUSED_BY_MIGRATION, dom, status, job)


def settle_finish(remote: Remote, name: str, *, cancelled: bool, uuid: bytes | None = None) -> bool:
    """Finish settled from what the destination holds; True if it runs the domain."""
    seen = look(remote, name, uuid)
    if seen.holds in (Holds.ABSENT, Holds.SHUTOFF):
        return False
    if seen.holds in (Holds.INCOMING, Holds.PAUSED_BY_MIGRATION):  # never ran here
        if not cancelled:
            raise DriverError(
                f"the destination holds the incoming copy of {name!r}, not started; Finish"
                " cannot start it on a new connection"
            )
        assert seen.dom is not None
        _destroy(remote, seen.dom)  # an incoming copy never ran: the source has it all
        return False
    return True


def settle_confirm(
    remote: Remote,
    name: str,
    *,
    cancelled: bool,
    flags: MigrateFlags,
    uuid: bytes | None = None,
    wait: float | None = None,
) -> dict[str, Any]:
    """Confirm settled from what the source holds: resume it (``cancelled``) or end it.

    Before a source is resumed, an outgoing migration job still running there (its client
    died while Perform3 ran) is aborted, waiting at most ``wait`` s for it to end
    (``jobs.clear``); the words for the timeline are returned ({} if nothing of the sort)."""
    seen = look(remote, name, uuid)
    if not cancelled:
        return _end(remote, name, seen, flags)
    note: dict[str, Any] = {}
    if seen.dom is not None and seen.holds in _MAY_MIGRATE:
        note = jobs.clear(remote, seen.dom, wait)
        if note:
            seen = look(remote, name, uuid)  # an aborted Perform3 may have resumed it
    _resume(remote, name, seen)
    return note


def _resume(remote: Remote, name: str, seen: Seen) -> None:
    if seen.holds is Holds.PAUSED_BY_MIGRATION:
        assert seen.dom is not None
        remote.resume(seen.dom)
    elif seen.holds not in (Holds.RUNNING, Holds.PAUSED):
        raise DriverError(f"the source holds {seen.holds} for {name!r}: nothing to resume")


def _end(remote: Remote, name: str, seen: Seen, flags: MigrateFlags) -> dict[str, Any]:
    note: dict[str, Any] = {}
    if seen.holds is Holds.RUNNING:
        assert seen.status is not None
        if seen.status.reason != RunningReason.MIGRATION_CANCELED:
            raise DriverError(
                f"the source runs {name!r} (it was resumed after the migration paused it);"
                " refusing to destroy a running copy"
            )
        note["source"] = (
            "its daemon had resumed it as a cancelled migration after the transfer"
            " finished (a restart while it cleaned up after the lost client): destroyed"
        )
    if seen.dom is None:
        return note
    dom = seen.dom
    if seen.holds is not Holds.SHUTOFF:
        _destroy(remote, dom)
    if flags & MigrateFlags.UNDEFINE_SOURCE:
        again = remote.lookup_uuid(dom.uuid)  # a transient domain is gone once destroyed
        if again is not None:
            remote.undefine(again)
    return note


def _destroy(remote: Remote, dom: DomainRef) -> None:
    try:
        remote.destroy(dom)
    except LibvirtError as exc:
        if exc.code not in (ErrorCode.NO_DOMAIN, ErrorCode.OPERATION_INVALID):
            raise  # gone, or no longer active: what we wanted
