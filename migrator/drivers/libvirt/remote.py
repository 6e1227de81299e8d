"""The remote procedures the driver calls, typed: one method per procedure of one connection.

Each method packs the arguments of ``remote_protocol.x``, calls, and unpacks the reply;
libvirt's errors pass through as ``LibvirtError`` except where a method says otherwise.

A ``Remote`` guarded for a step (``guarded(ctx)``) sends a call that may change the host
(every procedure but the reads in ``READS``) only while ``ctx.stopped()`` is false, and
raises ``StepAbandoned`` instead: a hook's thread the engine abandoned (its timeout, or the
migration taken over) changes nothing more on a host (docs/workers.md, "Fencing").
"""

from __future__ import annotations

from dataclasses import dataclass

from migrator.drivers.libvirt.errors import LibvirtError
from migrator.drivers.libvirt.procedures import (
    ABORT_JOB_POSTCOPY,
    JOB_STATS_COMPLETED,
    DomainStateCode,
    DrvFeature,
    ErrorCode,
    JobType,
    Proc,
)
from migrator.drivers.libvirt.rpc import Connection, Tick
from migrator.drivers.libvirt.xdr import DomainRef, Packer, ParamValue, TypedParams, Unpacker
from migrator.errors import StepAbandoned
from migrator.records import StepContext

READS = frozenset({
    Proc.CONNECT_GET_VERSION, Proc.CONNECT_GET_CAPABILITIES, Proc.CONNECT_GET_HOSTNAME,
    Proc.CONNECT_SUPPORTS_FEATURE, Proc.DOMAIN_GET_XML_DESC, Proc.DOMAIN_LOOKUP_BY_NAME,
    Proc.DOMAIN_LOOKUP_BY_UUID, Proc.DOMAIN_GET_STATE, Proc.DOMAIN_GET_JOB_INFO,
    Proc.DOMAIN_GET_JOB_STATS, Proc.DOMAIN_IS_PERSISTENT,
})  # fmt: skip
"""The procedures that only read: a guarded ``Remote`` sends them whatever its step's
state. Every other procedure, a new one included, is taken to change the host."""


@dataclass(frozen=True, slots=True)
class DomainStatus:
    state: int
    reason: int

    @property
    def name(self) -> str:
        try:
            return DomainStateCode(self.state).name.lower()
        except ValueError:
            return f"state {self.state}"


@dataclass(frozen=True, slots=True)
class JobInfo:
    """``remote_domain_get_job_info_ret``, the fields recovery looks at."""

    type: int
    elapsed_ms: int
    data_total: int
    data_processed: int
    data_remaining: int

    @property
    def active(self) -> bool:
        return self.type in (JobType.BOUNDED, JobType.UNBOUNDED)


MAX_SPEED_POSTCOPY = 1
"""VIR_DOMAIN_MIGRATE_MAX_SPEED_POSTCOPY."""


def _dom(dom: DomainRef) -> Packer:
    return Packer().domain(dom)


class Remote:
    """The typed procedures over ``conn`` (which does the locking and the timeouts).

    ``timeout`` bounds each call that gives none (else the connection's ``call_timeout``);
    ``ctx``, if given, guards the calls that change the host (``guarded``).
    """

    def __init__(
        self, conn: Connection, timeout: float | None = None, ctx: StepContext | None = None
    ) -> None:
        self.conn = conn
        self.timeout = timeout
        self.ctx = ctx

    def bounded(self, timeout: float | None) -> Remote:
        """The same connection, each call taking at most ``timeout`` s (None: as now)."""
        if timeout is None:
            return self
        least = timeout if self.timeout is None else min(timeout, self.timeout)
        return Remote(self.conn, least, self.ctx)

    def guarded(self, ctx: StepContext) -> Remote:
        """The same connection for ``ctx``'s call: once ``ctx.stopped()``, a call that may
        change the host raises ``StepAbandoned`` instead of being sent."""
        return Remote(self.conn, self.timeout, ctx)

    def _admit(self, proc: Proc) -> None:
        if self.ctx is not None and proc not in READS and self.ctx.stopped():
            raise StepAbandoned(step=str(self.ctx.step))

    def _call(self, proc: Proc, body: Packer | None = None, timeout: float | None = None) -> bytes:
        self._admit(proc)
        limit = self.timeout if timeout is None else timeout
        return self.conn.call(proc, body.data() if body else b"", timeout=limit)

    def _read(
        self, proc: Proc, body: Packer | None = None, timeout: float | None = None
    ) -> Unpacker:
        """The reply of ``proc``, to be decoded: a malformed one names the daemon and proc."""
        return self._reader(proc, self._call(proc, body, timeout))

    def _reader(self, proc: Proc, reply: bytes) -> Unpacker:
        return Unpacker(reply, where=f"libvirt daemon {self.conn.host}: reply to {proc.name}")

    def version(self) -> int:
        return self._read(Proc.CONNECT_GET_VERSION).uhyper()

    def lib_version(self) -> int:
        """The daemon's libvirt version, major * 1,000,000 + minor * 1,000 + micro."""
        return self._read(Proc.CONNECT_GET_LIB_VERSION).uhyper()

    def capabilities(self) -> str:
        return self._read(Proc.CONNECT_GET_CAPABILITIES).string()

    def hostname(self) -> str:
        return self._read(Proc.CONNECT_GET_HOSTNAME).string()

    def supports(self, feature: DrvFeature, timeout: float | None = None) -> bool:
        reply = self._read(Proc.CONNECT_SUPPORTS_FEATURE, Packer().sint(feature), timeout)
        return reply.sint() == 1

    def lookup(self, name: str, timeout: float | None = None) -> DomainRef | None:
        """The domain called ``name``, or None if the host has none of that name."""
        try:
            reader = self._read(Proc.DOMAIN_LOOKUP_BY_NAME, Packer().string(name), timeout)
        except LibvirtError as exc:
            if exc.code == ErrorCode.NO_DOMAIN:
                return None
            raise
        return reader.domain()

    def lookup_uuid(self, uuid: bytes, timeout: float | None = None) -> DomainRef | None:
        """The domain with this 16-byte UUID, or None if the host has none."""
        try:
            reader = self._read(Proc.DOMAIN_LOOKUP_BY_UUID, Packer().fixed(uuid), timeout)
        except LibvirtError as exc:
            if exc.code == ErrorCode.NO_DOMAIN:
                return None
            raise
        return reader.domain()

    def state(self, dom: DomainRef, timeout: float | None = None) -> DomainStatus:
        reader = self._read(Proc.DOMAIN_GET_STATE, _dom(dom).uint(0), timeout)
        return DomainStatus(reader.sint(), reader.sint())

    def job_info(self, dom: DomainRef, timeout: float | None = None) -> JobInfo:
        reader = self._read(Proc.DOMAIN_GET_JOB_INFO, _dom(dom), timeout)
        kind, elapsed, _remaining = reader.sint(), reader.uhyper(), reader.uhyper()
        total, processed, remaining = reader.uhyper(), reader.uhyper(), reader.uhyper()
        return JobInfo(kind, elapsed, total, processed, remaining)

    def job_stats(
        self, dom: DomainRef, *, completed: bool = False, timeout: float | None = None
    ) -> dict[str, ParamValue]:
        """DOMAIN_GET_JOB_STATS: the running job's statistics, or the last completed job's;
        ``type`` holds the job type."""
        flags = JOB_STATS_COMPLETED if completed else 0
        reader = self._read(Proc.DOMAIN_GET_JOB_STATS, _dom(dom).uint(flags), timeout)
        kind = reader.sint()
        return {"type": kind, **reader.params(limit=1024)}

    def abort_job(self, dom: DomainRef, timeout: float | None = None) -> None:
        self._call(Proc.DOMAIN_ABORT_JOB, _dom(dom), timeout)

    def abort_job_postcopy(self, dom: DomainRef, timeout: float | None = None) -> None:
        """virDomainAbortJobFlags(VIR_DOMAIN_ABORT_JOB_POSTCOPY): pause a post-copy."""
        self._call(Proc.DOMAIN_ABORT_JOB_FLAGS, _dom(dom).uint(ABORT_JOB_POSTCOPY), timeout)

    def start_postcopy(self, dom: DomainRef, timeout: float | None = None) -> None:
        """virDomainMigrateStartPostCopy: switch the running migration to post-copy."""
        self._call(Proc.DOMAIN_MIGRATE_START_POST_COPY, _dom(dom).uint(0), timeout)

    def resume(self, dom: DomainRef) -> None:
        self._call(Proc.DOMAIN_RESUME, _dom(dom))

    def suspend(self, dom: DomainRef, timeout: float | None = None) -> None:
        self._call(Proc.DOMAIN_SUSPEND, _dom(dom), timeout)

    def set_max_downtime(self, dom: DomainRef, ms: int, timeout: float | None = None) -> None:
        """virDomainMigrateSetMaxDowntime: the downtime the running migration may take."""
        self._call(Proc.DOMAIN_MIGRATE_SET_MAX_DOWNTIME, _dom(dom).uhyper(ms).uint(0), timeout)

    def set_max_speed(
        self, dom: DomainRef, mib: int, *, postcopy: bool = False, timeout: float | None = None
    ) -> None:
        """virDomainMigrateSetMaxSpeed, MiB/s; ``postcopy``: the cap after the switch
        (VIR_DOMAIN_MIGRATE_MAX_SPEED_POSTCOPY)."""
        body = _dom(dom).uhyper(mib).uint(MAX_SPEED_POSTCOPY if postcopy else 0)
        self._call(Proc.DOMAIN_MIGRATE_SET_MAX_SPEED, body, timeout)

    def destroy(self, dom: DomainRef) -> None:
        self._call(Proc.DOMAIN_DESTROY, _dom(dom))

    def undefine(self, dom: DomainRef, flags: int = 0) -> None:
        self._call(Proc.DOMAIN_UNDEFINE_FLAGS, _dom(dom).uint(flags))

    def is_persistent(self, dom: DomainRef) -> bool:
        return self._read(Proc.DOMAIN_IS_PERSISTENT, _dom(dom)).sint() == 1

    # -- the five steps of protocol v3 with typed parameters ---------------------------------

    def begin3(
        self, dom: DomainRef, params: TypedParams, flags: int, timeout: float | None
    ) -> tuple[bytes, str]:
        body = _dom(dom).params(params).uint(flags)
        reader = self._read(Proc.DOMAIN_MIGRATE_BEGIN3_PARAMS, body, timeout)
        return reader.opaque(), reader.string()

    def prepare3(
        self, params: TypedParams, cookie: bytes, flags: int, timeout: float | None
    ) -> tuple[bytes, str | None]:
        body = Packer().params(params).opaque(cookie).uint(flags)
        reader = self._read(Proc.DOMAIN_MIGRATE_PREPARE3_PARAMS, body, timeout)
        return reader.opaque(), reader.optional(reader.string)

    def perform3(
        self,
        dom: DomainRef,
        params: TypedParams,
        cookie: bytes,
        flags: int,
        *,
        timeout: float | None,
        tick: Tick | None,
    ) -> bytes:
        body = _dom(dom).optional_string(None).params(params).opaque(cookie).uint(flags)
        proc = Proc.DOMAIN_MIGRATE_PERFORM3_PARAMS
        self._admit(proc)
        reply = self.conn.call(proc, body.data(), timeout=timeout, tick=tick)
        return self._reader(proc, reply).opaque()

    def finish3(
        self, params: TypedParams, cookie: bytes, flags: int, cancelled: bool, timeout: float | None
    ) -> tuple[DomainRef, bytes]:
        body = Packer().params(params).opaque(cookie).uint(flags).sint(int(cancelled))
        reader = self._read(Proc.DOMAIN_MIGRATE_FINISH3_PARAMS, body, timeout)
        return reader.domain(), reader.opaque()

    def confirm3(
        self,
        dom: DomainRef,
        params: TypedParams,
        cookie: bytes,
        flags: int,
        cancelled: bool,
        timeout: float | None,
    ) -> None:
        body = _dom(dom).params(params).opaque(cookie).uint(flags).sint(int(cancelled))
        self._call(Proc.DOMAIN_MIGRATE_CONFIRM3_PARAMS, body, timeout)
