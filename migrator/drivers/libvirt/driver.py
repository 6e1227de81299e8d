"""``LibvirtDriver``: one libvirt host, driven over libvirt's RPC with protocol v3.

The five steps are the ``*_PARAMS`` procedures virsh's client library calls for a
non-peer-to-peer ``virsh migrate`` (Begin3 302, Prepare3 303, Perform3 305, Finish3 306,
Confirm3 307), with libvirt's typed parameters and flag values:

- Begin, Perform and Confirm get ``flags`` plus CHANGE_PROTECTION when the source offers it;
  Prepare and Finish get ``flags`` less ABORT_ON_ERROR and AUTO_CONVERGE, as libvirt does.
- ``migrate_uri``: the destination's ``migrate_uri`` (a driver parameter, or the URI's
  ``?migrate_uri=``) goes to Prepare; Prepare's ``uri_out``, else that parameter, is the
  URI Perform sends to. ``destination_xml`` is Begin's description; ``destination_name``
  the ``--dname`` (always on Finish); ``bandwidth`` in MiB/s when not 0.

Connections: each migration has its own connection to each host, opened by Begin (source)
or Prepare (destination) and held until Confirm or Finish succeeded (or ``close``): the
daemons bind their half of a migration to it. Probes, features and the settling of
Finish and Confirm use a separate control connection; Perform's watch a third for its
statistics (and a fourth for an abort, see ``watch.py``). Every call made for a step takes
at most what is left of the step's timeout; ``bound_calls`` bounds the others (features,
probes) by the migration's.

Idempotency and recovery: results are kept per ``(migration, step, cancelled)`` for the
life of the driver. A Finish or Confirm that cannot run on its migration's connection (a
replay after a crash, a retry after it failed, Confirm after a failed Perform) is settled
from what the host holds now (``reconcile.py``); Perform is never replayed, and a probe
reports no transfer (after a crash libvirt has already dropped the incoming copy), so a
crash during Perform is rolled back.
"""

from __future__ import annotations

import math
import time
from typing import ClassVar

from migrator.convergence.policy import Setting
from migrator.drivers.api import (
    BeginResult,
    ConfirmResult,
    Feature,
    FinishResult,
    MigrationParams,
    PerformResult,
    PrepareResult,
    ProbeResult,
)
from migrator.drivers.libvirt import handoff, jobs, reconcile
from migrator.drivers.libvirt.errors import LibvirtError, LibvirtUnreachable
from migrator.drivers.libvirt.host import Session
from migrator.drivers.libvirt.postcopy import LibvirtPostcopy
from migrator.drivers.libvirt.procedures import DrvFeature, ErrorCode, MigrateParam
from migrator.drivers.libvirt.typed import (
    common,
    dest_flags,
    final_stats,
    parallel,
    perform_typed,
    time_left,
)
from migrator.drivers.libvirt.uri import KeepAliveSettings, parse
from migrator.drivers.libvirt.watch import HONOURED, PerformWatch, progress_of
from migrator.drivers.libvirt.xdr import ParamValue
from migrator.errors import DriverError
from migrator.flags import MigrateFlags
from migrator.records import StepContext
from migrator.states import Step

PERFORM_GRACE = 30.0
"""Seconds Perform3's reply may take after the deadline made the watch abort the job."""
UNRESOLVED = "Unable to resolve address"
"""libvirt's words when the address the destination receives the guest on does not resolve:
without ``migrate_uri`` it is the destination's host name, which Prepare3 listens on and
the source's Perform3 connects to."""
RESOLVE_HINT = (
    "the address the destination would receive the guest on does not resolve (without"
    " migrate_uri, the destination's host name): give one, ?migrate_uri=tcp://ADDRESS on"
    " the destination's URI (virsh migrate --migrateuri)"
)
Result = BeginResult | PrepareResult | PerformResult | FinishResult | ConfirmResult


class LibvirtDriver(LibvirtPostcopy):
    """A libvirt host (``qemu:///system``, ``qemu+tls://HOST/system``, ...; see ``uri.py``).

    ``migrate_uri`` (or the URI's ``?migrate_uri=``) is where, as a destination, this host
    receives the guest. Timeouts are in seconds; a hook's deadline also bounds its calls.
    ``keepalive_interval`` and ``keepalive_count`` (else the URI's, else virsh's 5 s and 6)
    are libvirt's keepalive: a daemon silent for interval x count seconds is gone.
    """

    blocking: ClassVar[bool] = True
    honoured_flags: ClassVar[MigrateFlags] = ~(MigrateFlags.PEER2PEER | MigrateFlags.TUNNELLED)
    honoured_settings: ClassVar[frozenset[Setting]] = HONOURED
    """Every flag reaches libvirt, which acts on it, but the two that ask libvirt itself to
    drive the steps (peer-to-peer, and tunnelled, which libvirt allows only peer-to-peer)."""

    def __init__(
        self,
        uri: str,
        *,
        migrate_uri: str | None = None,
        connect_timeout: float = 10.0,
        call_timeout: float | None = 60.0,
        keepalive_interval: float | None = None,
        keepalive_count: int | None = None,
    ) -> None:
        from_uri = parse(uri).keepalive
        keepalive = KeepAliveSettings(
            from_uri.interval if keepalive_interval is None else keepalive_interval,
            from_uri.count if keepalive_count is None else keepalive_count,
        )
        super().__init__(
            uri, connect_timeout=connect_timeout, call_timeout=call_timeout, keepalive=keepalive
        )
        self.migrate_uri = migrate_uri or self.target.migrate_uri
        self._results: dict[tuple[str, Step, bool | None], Result] = {}
        self._supported: dict[DrvFeature, bool] = {}

    def __repr__(self) -> str:
        return f"LibvirtDriver({self.host!r})"

    # -- what the host offers ----------------------------------------------------------------

    def supports(self, feature: DrvFeature, timeout: float | None = None) -> bool:
        if feature not in self._supported:
            self._supported[feature] = self.on_control(lambda r: r.supports(feature), timeout)
        return self._supported[feature]

    def features(self) -> frozenset[Feature]:
        """v3 if the daemon offers MIGRATION_V3 with MIGRATION_PARAMS (the only form used)."""
        v3 = self.supports(DrvFeature.MIGRATION_V3) and self.supports(DrvFeature.MIGRATION_PARAMS)
        if not v3:
            return frozenset()
        if self.postcopy_refusal() is not None:  # postcopy.py
            return frozenset({Feature.MIGRATION_V3})
        return frozenset({Feature.MIGRATION_V3, Feature.POSTCOPY})

    def _source_flags(self, params: MigrationParams, timeout: float | None) -> int:
        flags = params.flags | parallel(params)
        if self.supports(DrvFeature.MIGRATE_CHANGE_PROTECTION, timeout):
            flags |= MigrateFlags.CHANGE_PROTECTION
        return int(flags)

    # -- the five steps ----------------------------------------------------------------------

    def _memo(self, ctx: StepContext, cancelled: bool | None = None) -> Result | None:
        return self._results.get((ctx.migration_id, ctx.step, cancelled))

    def _keep(self, ctx: StepContext, result: Result, cancelled: bool | None = None) -> None:
        self._results[(ctx.migration_id, ctx.step, cancelled)] = result

    def begin(self, ctx: StepContext, params: MigrationParams) -> BeginResult:
        """Begin3 on the migration's new connection: the job starts, nothing visible changes."""
        memo = self._memo(ctx)
        if isinstance(memo, BeginResult):
            return memo
        if params.flags & MigrateFlags.PEER2PEER:
            raise DriverError(
                "flag peer2peer hands the whole migration to the source daemon, which"
                " migrator cannot journal; migrate without it"
            )
        try:
            session = self.session(ctx.migration_id, create=True, timeout=time_left(ctx))
            assert session is not None
            dom = session.remote.lookup(params.domain, timeout=time_left(ctx))
            if dom is None:
                raise DriverError(f"domain {params.domain!r} not found on {self.host}")
            flags = self._source_flags(params, time_left(ctx))
            remote = session.remote.guarded(ctx)  # an abandoned call begins no job
            cookie, xml = remote.begin3(dom, common(params), flags, time_left(ctx))
        except BaseException:
            self.forget(ctx.migration_id)  # no job began: nothing follows Begin
            raise
        session.dom = dom
        self.begun(ctx.migration_id)
        result = BeginResult(description=xml, cookie=cookie)
        self._keep(ctx, result)
        return result

    def prepare(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, description: str
    ) -> PrepareResult:
        """Prepare3: the destination starts the incoming QEMU; the URI to send to."""
        memo = self._memo(ctx)
        if isinstance(memo, PrepareResult):
            return memo
        session = self.session(ctx.migration_id, create=True, timeout=time_left(ctx))
        assert session is not None
        typed = {**common(params), MigrateParam.DEST_XML: description}
        if self.migrate_uri:
            typed[MigrateParam.URI] = self.migrate_uri
        flags = int(dest_flags(params))
        try:
            remote = session.remote.guarded(ctx)
            out, uri_out = remote.prepare3(typed, cookie, flags, time_left(ctx))
        except LibvirtError as exc:
            raise _hinted(exc) from None
        session.prepared = True
        uri = uri_out or self.migrate_uri
        if not uri:
            raise DriverError(f"Prepare3 on {self.host} gave no migration URI and none was set")
        result = PrepareResult(uri=uri, cookie=out)
        self._keep(ctx, result)
        if params.flags & MigrateFlags.POSTCOPY:
            self.offer_finish(ctx.migration_id, params)  # postcopy.py
        return result

    def perform(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, uri: str
    ) -> PerformResult:
        """Perform3 on Begin's connection, watched (progress, abort, deadline) from another."""
        memo = self._memo(ctx)
        if isinstance(memo, PerformResult):
            return memo
        session = self.session(ctx.migration_id)
        if session is None or session.dom is None or session.remote.conn.broken:
            raise DriverError(
                f"Perform of migration {ctx.migration_id} on {self.host} needs the connection"
                " that ran Begin, which is gone"
            )
        dom, typed = session.dom, perform_typed(params, uri)
        session.uri = uri
        flags = self._source_flags(params, time_left(ctx))
        watch = PerformWatch(ctx, dom, self.connect)
        left = time_left(ctx)
        try:
            out = session.remote.guarded(ctx).perform3(
                dom, typed, cookie, flags,
                timeout=math.inf if left is None else left + PERFORM_GRACE, tick=watch.tick,
            )  # fmt: skip
        except (LibvirtError, LibvirtUnreachable) as exc:
            session.spent.add(Step.CONFIRM)  # libvirt ended the job: Confirm3 would refuse
            if watch.gave_up is not None:
                raise DriverError(f"perform {watch.gave_up}: {watch.abort_note}; {exc}") from exc
            raise _hinted(exc) from None
        finally:
            watch.close()
        session.performed = True
        switched = self.switched(ctx.migration_id, session.remote, dom)
        if switched is not None:  # Perform3 returned at the switch: on to the last page
            _finished, stats = self.through_postcopy(ctx, switched, dom, out)
            result = PerformResult(cookie=out, stats={**stats, "postcopy": True})
            self._keep(ctx, result)
            return result
        paused = watch.paused_at  # suspended by a policy until the data was all sent
        paused_ms = None if paused is None else int((time.monotonic() - paused) * 1000)
        stats = final_stats(session.remote, dom, time_left(ctx))
        if paused_ms is not None:
            stats["paused_ms"] = paused_ms
        sample = progress_of(stats, final=True)
        if sample is not None:
            ctx.progress(sample)
        result = PerformResult(cookie=out, stats=stats)
        self._keep(ctx, result)
        return result

    def finish(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, cancelled: bool
    ) -> FinishResult:
        """Finish3 on Prepare's connection, else settled from the destination's state."""
        memo = self._memo(ctx, cancelled)
        if isinstance(memo, FinishResult):
            return memo
        session = self.session(ctx.migration_id)
        if session is not None and session.prepared and Step.FINISH not in session.spent:
            session.spent.add(Step.FINISH)
            result = self._finish3(ctx, session, params, cookie, cancelled)
        else:
            result = FinishResult(running=self._settle_finish(ctx, params, cookie, cancelled))
        self._keep(ctx, result, cancelled)
        self.forget(ctx.migration_id)
        return result

    def _settle_finish(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, cancelled: bool
    ) -> bool:
        uuid = reconcile.cookie_uuid(cookie)
        return self.on_control(
            lambda r: reconcile.settle_finish(
                r.guarded(ctx), params.dest_name, cancelled=cancelled, uuid=uuid
            ),
            time_left(ctx),
        )

    def _finish3(
        self,
        ctx: StepContext,
        session: Session,
        params: MigrationParams,
        cookie: bytes,
        cancelled: bool,
    ) -> FinishResult:
        if not cancelled and not self.source_holds(ctx.migration_id, time_left(ctx)):
            raise DriverError(
                "Finish refused: the source lost the connection or the job of this migration"
                " after Perform (its daemon may have restarted and resumed the guest), so"
                " starting the destination's copy could run two"
            )
        typed: dict[str, ParamValue] = {**common(params), MigrateParam.DEST_NAME: params.dest_name}
        flags = int(dest_flags(params))
        try:
            remote = session.remote.guarded(ctx)
            _dom, out = remote.finish3(typed, cookie, flags, cancelled, time_left(ctx))
        except (LibvirtError, LibvirtUnreachable) as exc:
            if not cancelled:
                raise  # libvirt killed the incoming copy or cannot tell: the engine probes
            if isinstance(exc, LibvirtError) and exc.code == ErrorCode.MIGRATE_FINISH_OK:
                return FinishResult(running=False)  # "migration successfully aborted"
            return FinishResult(running=self._settle_finish(ctx, params, cookie, True))
        return FinishResult(running=True, cookie=out)

    def confirm(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, cancelled: bool
    ) -> ConfirmResult:
        """Confirm3 on Begin's connection, else settled from the source's state."""
        memo = self._memo(ctx, cancelled)
        if isinstance(memo, ConfirmResult):
            return memo
        session = self.session(ctx.migration_id)
        done, note = False, {}
        if session is not None and session.dom is not None and Step.CONFIRM not in session.spent:
            session.spent.add(Step.CONFIRM)
            done = self._confirm3(ctx, session, params, cookie, cancelled)
        if not done:
            uuid = session.dom.uuid if session and session.dom else reconcile.cookie_uuid(cookie)
            left = time_left(ctx)
            note = self.on_control(
                lambda r: reconcile.settle_confirm(
                    r.guarded(ctx), params.domain, cancelled=cancelled, flags=params.flags,
                    uuid=uuid,
                    wait=None if left is None else min(jobs.JOB_END_WAIT, left * 0.8),
                ),
                left,
            )  # fmt: skip
        result = ConfirmResult(detail=note)
        self._keep(ctx, result, cancelled)
        self.forget(ctx.migration_id)
        handoff.drop(ctx.migration_id)
        return result

    def _confirm3(
        self,
        ctx: StepContext,
        session: Session,
        params: MigrationParams,
        cookie: bytes,
        cancelled: bool,
    ) -> bool:
        """Confirm3; False if it failed and the source's state must settle it."""
        assert session.dom is not None
        typed = common(params)
        if session.uri:
            typed[MigrateParam.URI] = session.uri
        flags = self._source_flags(params, time_left(ctx))
        try:
            remote = session.remote.guarded(ctx)
            remote.confirm3(session.dom, typed, cookie, flags, cancelled, time_left(ctx))
        except (LibvirtError, LibvirtUnreachable):
            return False
        return True

    # -- what the host holds -------------------------------------------------------------------

    def host_uuid(self) -> str | None:
        """The daemon's host UUID, from its capabilities (``hostmap.Identified``)."""
        caps = self.on_control(lambda r: r.capabilities())
        return reconcile.capabilities_host_uuid(caps)

    def cookie_host_uuid(self, cookie: bytes) -> str | None:
        """The host UUID a migration cookie of a daemon names (``hostmap.Identified``)."""
        return reconcile.cookie_host_uuid(cookie)

    def probe(self, domain: str) -> ProbeResult:
        """Lookup, state and reason, and for a domain paused by a migration its job."""
        seen = self.on_control(lambda r: reconcile.look(r, domain))
        return ProbeResult(state=seen.state, detail=seen.detail())


def _hinted(exc: LibvirtError | LibvirtUnreachable) -> DriverError:
    """``exc``, with what fixes it when the destination's address does not resolve."""
    if isinstance(exc, LibvirtError) and UNRESOLVED in exc.message:
        return exc.with_hint(RESOLVE_HINT)
    return exc
