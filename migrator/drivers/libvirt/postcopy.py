"""Post-copy on libvirt hosts (docs/postcopy.md): the ``PostcopyDriver`` hooks.

libvirt's client-driven v3 with VIR_MIGRATE_POSTCOPY on every step:

- the switch: the destination's Finish3 first (until it runs, libvirt destroys an incoming
  copy whose client is gone, even in post-copy), then VIR_DOMAIN_MIGRATE_START_POST_COPY
  (procedure 364) on a connection of its own while Perform3 runs; Perform3 returns once
  post-copy is active, and Finish3 starts the guest on the destination and returns when
  every page arrived (``handoff.py`` makes Perform wait for that Finish3, so that
  Perform's end means every page was sent, as the engine expects);
- a failure (the stream broke, a client died) leaves both domains "paused (post-copy
  failed)" (or the destination running so); libvirt >= 8.5 resumes it with the five steps
  again, each with VIR_MIGRATE_POSTCOPY_RESUME, on new connections: Begin3, Prepare3 (the
  destination listens again), Perform3 (returns at once), Finish3 (until every page
  arrived), Confirm3; a post-copy still in flight (stalled) is first paused with
  VIR_DOMAIN_ABORT_JOB_POSTCOPY. The resumption's Finish3 and Confirm3 are kept as the
  results of the engine's Finish(0) and Confirm(0) that follow;
- a switch that never reached the source (the guest runs whole there) is carried forward
  by migrating it again and switching at once.

Offered only where both can be done: libvirt >= 8.5 (``POSTCOPY_RESUME_VERSION``), and not
by a session-mode daemon, whose QEMU runs unprivileged: it cannot open userfaultfd where
``vm.unprivileged_userfaultfd`` is 0 (the kernel's default).
"""

from __future__ import annotations

import math
import time
from typing import Any

from migrator.drivers.api import (
    ConfirmResult,
    FinishResult,
    MigrationParams,
    PerformResult,
    PostcopyPhase,
)
from migrator.drivers.libvirt import handoff, jobs, reconcile
from migrator.drivers.libvirt.errors import LibvirtError, LibvirtUnreachable
from migrator.drivers.libvirt.host import Host, Session
from migrator.drivers.libvirt.procedures import (
    POSTCOPY_RESUME_VERSION,
    DomainStateCode,
    DrvFeature,
    MigrateParam,
    PausedReason,
    RunningReason,
)
from migrator.drivers.libvirt.remote import Remote
from migrator.drivers.libvirt.typed import common, dest_flags, perform_typed, time_left
from migrator.drivers.libvirt.xdr import DomainRef, ParamValue
from migrator.errors import DriverError, PostcopyLost
from migrator.flags import MigrateFlags
from migrator.records import StepContext
from migrator.states import Step

SWITCH_WAIT_S = 30.0
"""Seconds the source may take to report post-copy after START_POST_COPY."""
RESTART_WAIT_S = 15.0
"""Seconds a restart waits for an aborted pre-copy job to end on the source."""
EARLY_S = 0.2
"""Seconds between sending the destination's Finish3 and switching the source."""
RESUME = MigrateFlags.POSTCOPY | MigrateFlags.POSTCOPY_RESUME
_IN_POSTCOPY = (PausedReason.POSTCOPY, PausedReason.POSTCOPY_FAILED)
SESSION_REFUSAL = (
    "is a session-mode daemon: its QEMU runs unprivileged and cannot open userfaultfd"
    " (vm.unprivileged_userfaultfd = 0)"
)


def _version(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


class LibvirtPostcopy(Host):
    """The post-copy hooks of a libvirt host; each idempotent per migration."""

    _results: dict[tuple[str, Step, bool | None], Any]
    _refusal: str | None
    migrate_uri: str | None

    def supports(self, feature: DrvFeature, timeout: float | None = None) -> bool:
        raise NotImplementedError

    # -- whether it is offered ----------------------------------------------------------------

    def postcopy_refusal(self) -> str | None:
        """Why this host cannot carry post-copy (None: it can); asked once."""
        if not hasattr(self, "_refusal"):
            self._refusal = self._postcopy_refusal()
        return self._refusal

    def _postcopy_refusal(self) -> str | None:
        if self.target.name.endswith("/session"):
            return SESSION_REFUSAL
        try:
            version = self.on_control(lambda r: r.lib_version())
        except LibvirtError as exc:  # only post-copy needs the answer: refuse it alone
            return f"did not say which libvirt it runs ({exc})"
        if version < POSTCOPY_RESUME_VERSION:
            return (
                f"runs libvirt {_version(version)}, which cannot resume a failed post-copy"
                f" ({_version(POSTCOPY_RESUME_VERSION)} or later can)"
            )
        return None

    # -- the switch ---------------------------------------------------------------------------

    def start_postcopy(self, ctx: StepContext, params: MigrationParams) -> None:
        """Src: START_POST_COPY on a new connection; return once the source reports it."""
        h = handoff.of(ctx.migration_id)
        remote = self.connect(timeout=time_left(ctx)).guarded(ctx)
        try:
            dom = self._domain(remote, params.domain, "source")
            if h.early is not None and not h.started.is_set() and h.early():
                time.sleep(EARLY_S)  # the destination's Finish3 first
            if not _in_postcopy(remote, dom):
                h.switched = True  # before the call: Perform3 may return at once
                try:
                    remote.start_postcopy(dom, timeout=time_left(ctx))
                except (LibvirtError, LibvirtUnreachable):
                    h.switched = _in_postcopy(remote, dom)
                    raise
            deadline = time.monotonic() + min(SWITCH_WAIT_S, time_left(ctx) or SWITCH_WAIT_S)
            while not _in_postcopy(remote, dom):
                if time.monotonic() > deadline:
                    raise DriverError(f"{params.domain} did not switch to post-copy")
                time.sleep(0.05)
            h.switched = True
        finally:
            remote.conn.close()

    def offer_finish(self, mid: str, params: MigrationParams) -> None:
        """Dst, after Prepare3 of a post-copy capable migration: let the switch start
        Finish3 here before it tells the source (``start_postcopy``)."""
        h = handoff.of(mid)
        h.early = lambda: self._start_finish(mid, params, h)

    def run_postcopy(self, ctx: StepContext, params: MigrationParams) -> None:
        """Dst: Finish3 (which starts the guest here and returns when every page arrived) on
        Prepare's connection, on a thread, unless the switch started it already; return
        once the guest runs here. Nothing to do in a resumption: its own Finish3 runs the
        guest."""
        h = handoff.of(ctx.migration_id)
        if not h.started.is_set() and not self._start_finish(ctx.migration_id, params, h):
            return
        if not h.in_flight:
            return  # it ended (Perform reports how) or stalled: a resumption's business
        deadline = time.monotonic() + min(SWITCH_WAIT_S, time_left(ctx) or SWITCH_WAIT_S)
        while not self._runs(params.dest_name, h):
            if time.monotonic() > deadline:
                raise DriverError(f"{params.dest_name} does not run on {self.host}")
            time.sleep(0.05)

    def _start_finish(self, mid: str, params: MigrationParams, h: handoff.Handoff) -> bool:
        """Finish3 on Prepare's connection, on a thread (``h``); False without one. Until
        Finish3 runs, libvirt destroys the incoming copy when that connection closes, even
        in post-copy; Finish3 waits for post-copy (or the end of the transfer) itself, and
        takes no cookie (Perform3's would come after the switch)."""
        session = self.session(mid)
        if session is None or not session.prepared or session.remote.conn.broken:
            return False
        if Step.FINISH in session.spent:
            return False
        session.spent.add(Step.FINISH)
        flags = dest_flags(params)
        h.hand(b"")
        h.finish(lambda cookie: self._postcopy_finish3(mid, session, params, cookie, flags))
        return True

    def _runs(self, name: str, h: handoff.Handoff) -> bool:
        """The guest runs here; raises what Finish3 raised if it ended first."""
        if h.done.is_set():
            if h.error is not None:
                raise DriverError(f"Finish3 of {name} failed: {h.error}") from h.error
            return True
        seen = self.on_control(lambda r: reconcile.look(r, name))
        return seen.holds is reconcile.Holds.RUNNING

    def _postcopy_finish3(
        self, mid: str, session: Session, params: MigrationParams, cookie: bytes, flags: int
    ) -> FinishResult:
        typed: dict[str, ParamValue] = {**common(params), MigrateParam.DEST_NAME: params.dest_name}
        _dom, out = session.remote.finish3(typed, cookie, flags, False, math.inf)
        result = FinishResult(running=True, cookie=out)
        self._results[(mid, Step.FINISH, False)] = result
        self.end_session(mid)
        return result

    def switched(self, mid: str, remote: Remote, dom: DomainRef) -> handoff.Handoff | None:
        """Once Perform3 returned: the handoff of ``mid`` if its source was switched to
        post-copy here (a switch asked for as pre-copy completed did not happen)."""
        h = handoff.peek(mid)
        if h is None or not h.switched:
            return None
        if h.started.is_set():
            return h  # the destination's Finish3 runs
        try:
            return h if _in_postcopy(remote, dom) else None
        except (LibvirtError, LibvirtUnreachable):
            return h  # cannot tell: waiting for Finish3 is the safe side

    def through_postcopy(
        self, ctx: StepContext, h: handoff.Handoff, dom: DomainRef, cookie: bytes
    ) -> tuple[FinishResult, dict[str, ParamValue]]:
        """Src, once Perform3 returned in post-copy: hand its cookie to Finish3 (unless it
        took none), then wait until every page is sent (``handoff.await_finish``)."""
        if not h.ready.is_set():
            h.hand(cookie)
        h.started.wait(SWITCH_WAIT_S)  # a switch made from another thread is still calling
        if not h.finishing and not h.done.is_set():
            remote = self.connect()
            try:
                handoff.pause(remote, dom)
            finally:
                remote.conn.close()
            raise DriverError(
                f"post-copy of {dom.name}: the destination's Finish3 did not start; paused"
            )
        return handoff.await_finish(ctx, h, self.connect, dom)

    # -- where it is, and resumption ----------------------------------------------------------

    def postcopy_phase(self, params: MigrationParams, migration_id: str) -> PostcopyPhase:
        h = handoff.peek(migration_id)
        if h is not None and h.in_flight:
            return PostcopyPhase.ACTIVE  # its Finish3 is in flight in this process
        seen = self.on_control(lambda r: reconcile.look(r, params.domain))
        if seen.holds in (reconcile.Holds.ABSENT, reconcile.Holds.SHUTOFF):
            return PostcopyPhase.COMPLETED  # the source let it go; Finish(0) then checks
        status = seen.status
        paused = status is not None and status.state == DomainStateCode.PAUSED
        if paused and status is not None and status.reason in _IN_POSTCOPY:
            return PostcopyPhase.PAUSED
        if seen.job is not None and seen.job.active:
            return PostcopyPhase.PRECOPY
        # Running: the switch never reached it, and the migration ended with its client (or
        # its pre-copy runs on for nobody): the guest is whole here. Forward is migrating it
        # again, switching at once (a pre-copy job left running is aborted first).
        handoff.of(migration_id).restart = True
        return PostcopyPhase.PAUSED

    def recover_postcopy(self, ctx: StepContext, params: MigrationParams) -> str:
        """Dst: check the copy is here and offer it to the source's resumption (which runs
        Prepare3 with VIR_MIGRATE_POSTCOPY_RESUME here: the URI comes from it)."""
        h = handoff.of(ctx.migration_id)
        seen = self.on_control(lambda r: reconcile.look(r, params.dest_name), time_left(ctx))
        gone = seen.holds in (reconcile.Holds.ABSENT, reconcile.Holds.SHUTOFF)
        if gone and not h.restart:
            raise PostcopyLost(
                domain=params.dest_name, host=self.host, detail="the destination's copy is gone"
            )
        h.dst = self
        return ""

    def resume_postcopy(self, ctx: StepContext, params: MigrationParams, uri: str) -> PerformResult:
        """Src: wait for a post-copy in flight here, or resume a failed one with the five
        steps and VIR_MIGRATE_POSTCOPY_RESUME; return once every page was sent."""
        mid = ctx.migration_id
        h = handoff.of(mid)
        if h.in_flight:
            remote = self.connect(timeout=time_left(ctx))
            try:
                dom = self._domain(remote, params.domain, "source")
            finally:
                remote.conn.close()
            _finished, stats = handoff.await_finish(ctx, h, self.connect, dom)
            return PerformResult(cookie=h.cookie or b"", stats={**stats, "postcopy": True})
        seen = self.on_control(lambda r: reconcile.look(r, params.domain), time_left(ctx))
        dst = h.dst
        if seen.holds in (reconcile.Holds.ABSENT, reconcile.Holds.SHUTOFF) or (
            isinstance(dst, LibvirtPostcopy) and dst.arrived(ctx, params)
        ):
            return PerformResult(cookie=b"", stats={"postcopy": True, "status": "completed"})
        if not isinstance(dst, LibvirtPostcopy):
            raise DriverError(f"no destination to resume the post-copy of {params.domain} to")
        return self._resume(ctx, params, dst, fresh=h.restart)

    def _resume(
        self, ctx: StepContext, params: MigrationParams, dst: LibvirtPostcopy, *, fresh: bool
    ) -> PerformResult:
        """The five steps with VIR_MIGRATE_POSTCOPY_RESUME; ``fresh``: with POSTCOPY alone,
        and the switch as soon as Perform3 runs (the source never switched)."""
        mid = ctx.migration_id
        for host in (self, dst):
            host.forget(mid)  # libvirt marks a post-copy failed when its client goes
        h = handoff.renew(mid)
        h.dst = dst
        extra = int(MigrateFlags.POSTCOPY if fresh else RESUME)
        try:
            session = self.session(mid, create=True, timeout=time_left(ctx))
            assert session is not None
            remote = session.remote.guarded(ctx)  # an abandoned resumption changes nothing
            dom = session.dom = self._domain(remote, params.domain, "source")
            cleared: dict[str, Any] = {}
            if fresh:  # a pre-copy of a client gone, which nobody will switch: abort it
                cleared = jobs.clear(remote, dom, wait=min(RESTART_WAIT_S, time_left(ctx) or 30))
            else:
                handoff.pause(remote, dom)  # a stalled post-copy must be paused to resume
            flags = int(params.flags) | extra
            if self.supports(DrvFeature.MIGRATE_CHANGE_PROTECTION, time_left(ctx)):
                flags |= MigrateFlags.CHANGE_PROTECTION
            cookie, xml = remote.begin3(dom, common(params), flags, time_left(ctx))
            self.begun(mid)
            cookie, uri = dst.prepare_resume(ctx, params, cookie, xml, extra)
            typed = {**common(params), MigrateParam.URI: uri}
            sent = perform_typed(params, uri) if fresh else typed
            tick = None
            if fresh:  # Finish3 first (see _start_finish), then switch once Perform3 runs
                dst.finish_resume(ctx, params, h, extra)
                tick = handoff.switch_soon(lambda: self.start_postcopy(ctx, params))
            out = remote.perform3(dom, sent, cookie, flags, timeout=time_left(ctx), tick=tick)
            if not fresh:
                dst.finish_resume(ctx, params, h, extra)
            finished, stats = self.through_postcopy(ctx, h, dom, out)
            remote.confirm3(dom, typed, finished.cookie, flags, False, time_left(ctx))
        except BaseException:
            for host in (self, dst):
                host.forget(mid)
            raise
        done: dict[str, Any] = {"restarted": True, **cleared} if fresh else {"resumed": True}
        self._results[(mid, Step.CONFIRM, False)] = ConfirmResult(detail=done)
        self.forget(mid)
        handoff.drop(mid)
        return PerformResult(cookie=out, stats={**stats, "postcopy": True, **done})

    def prepare_resume(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, xml: str, extra: int
    ) -> tuple[bytes, str]:
        """Dst: Prepare3 with VIR_MIGRATE_POSTCOPY_RESUME (``extra``) on a new connection:
        the paused incoming QEMU listens again; its cookie and the URI to resume to."""
        session = self.session(ctx.migration_id, create=True, timeout=time_left(ctx))
        assert session is not None
        typed: dict[str, ParamValue] = {**common(params), MigrateParam.DEST_XML: xml}
        if self.migrate_uri:
            typed[MigrateParam.URI] = self.migrate_uri
        flags = dest_flags(params) | extra
        out, uri_out = session.remote.guarded(ctx).prepare3(typed, cookie, flags, time_left(ctx))
        session.prepared = True
        uri = uri_out or self.migrate_uri
        if not uri:
            raise DriverError(f"Prepare3 on {self.host} gave no URI to resume post-copy to")
        return out, uri

    def finish_resume(
        self, ctx: StepContext, params: MigrationParams, h: handoff.Handoff, extra: int
    ) -> None:
        """Dst: the resumption's Finish3 on Prepare's connection, on a thread (``h``)."""
        mid = ctx.migration_id
        session = self.session(mid)
        if session is None:
            raise DriverError(f"the resumption of {params.dest_name} lost its Prepare3")
        session.spent.add(Step.FINISH)
        flags = dest_flags(params) | extra
        h.finish(lambda cookie: self._postcopy_finish3(mid, session, params, cookie, flags))

    def arrived(self, ctx: StepContext, params: MigrationParams) -> bool:
        """Dst: the guest runs here as migrated, with no post-copy left (a Finish3 whose
        client died completed it)."""
        seen = self.on_control(lambda r: reconcile.look(r, params.dest_name), time_left(ctx))
        status = seen.status
        if seen.holds is not reconcile.Holds.RUNNING or status is None:
            return False
        return status.reason not in (RunningReason.POSTCOPY, RunningReason.POSTCOPY_FAILED)

    def _domain(self, remote: Remote, name: str, side: str) -> DomainRef:
        dom = remote.lookup(name)
        if dom is None:
            raise PostcopyLost(domain=name, host=self.host, detail=f"the {side} copy is gone")
        return dom


def _in_postcopy(remote: Remote, dom: DomainRef) -> bool:
    status = remote.state(dom)
    return status.state == DomainStateCode.PAUSED and status.reason in _IN_POSTCOPY
