"""The test driver: v3 (``v3.py``) plus tunnelled v3, v2, v1 and ``probe``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from migrator import bounded
from migrator.drivers.api import (
    BeginResult,
    DomainState,
    FinishResult,
    MigrationParams,
    PerformResult,
    PrepareResult,
    ProbeResult,
    TunnelResult,
)
from migrator.drivers.hoststate import Host, Memo, dec, enc, json_bytes, memo_key
from migrator.drivers.test.faults import FaultMode, injected_io_errors
from migrator.drivers.test.postcopy import PostcopySteps
from migrator.drivers.test.transfer import (
    FileSink,
    copy_to,
    incoming_image,
    incoming_path,
    perform_stats,
    stream_file,
)
from migrator.errors import DomainNotFound, DriverError
from migrator.flags import MigrateFlags
from migrator.records import StepContext
from migrator.states import Step


class TestDriver(PostcopySteps):
    """One simulated host: v3 (with post-copy), tunnelled v3, v2 and v1 (docs/drivers.md);
    every hook is idempotent per migration id and step."""

    # -- tunnelled v3 ---------------------------------------------------------------------

    def prepare_tunnel(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, description: str
    ) -> TunnelResult:
        """As ``prepare``; the image then arrives through the returned stream."""
        prepared = self.prepare(ctx, params, cookie, description)
        final = self.dir / incoming_image(ctx.migration_id)
        sink = FileSink(final, lambda: self.landing(ctx, params.dest_name))
        return TunnelResult(stream=sink, cookie=prepared.cookie)

    def perform_tunnel(
        self,
        ctx: StepContext,
        params: MigrationParams,
        cookie: bytes,
        send: Callable[[bytes], None],
    ) -> PerformResult:
        """As ``perform``, sending the image through ``send`` instead of to a URI."""
        with self._guarded(ctx, Step.PERFORM, params.domain) as fault:
            key = memo_key(ctx.migration_id, Step.PERFORM)
            memo = self._read(params.domain)["calls"].get(key) or self._perform(
                ctx, params, key, io_errors=injected_io_errors(fault, params),
                transfer=lambda source: stream_file(ctx, source, send, params.bandwidth),
            )  # fmt: skip
        return PerformResult(cookie=dec(memo["cookie"]), stats=memo["stats"])

    # -- protocols v2 and v1 ---------------------------------------------------------------

    def dump_xml(self, ctx: StepContext, params: MigrationParams) -> BeginResult:
        """The domain's description; nothing changes (no job starts, unlike Begin)."""
        with self._guarded(ctx, Step.DUMP_XML, params.domain):
            dom = self._read(params.domain)["domains"].get(params.domain)
            if dom is None or not DomainState(dom["state"]).active:
                raise DomainNotFound(domain=params.domain, host=self.uri)
            description = {
                "name": params.domain,
                "memory_mib": dom["memory_mib"],
                "checksum": dom["checksum"],
            }
        return BeginResult(description=json.dumps(description, sort_keys=True))

    def prepare2(
        self, ctx: StepContext, params: MigrationParams, description: str | None
    ) -> PrepareResult:
        """As ``prepare``; v1 sends no description, so Finish checks what Perform sent."""
        step = ctx.step if ctx.step in (Step.PREPARE1, Step.PREPARE2) else Step.PREPARE2
        with self._guarded(ctx, step, params.dest_name):
            try:
                desc = bounded.loads(description) if description is not None else {}
            except ValueError as exc:
                raise DriverError(f"{step} got a bad description: {exc}") from exc
            if not isinstance(desc, dict):
                raise DriverError(f"{step} got a description that is not an object")
            desc.setdefault("memory_mib", None)
            desc.setdefault("checksum", None)
            memo = self._once(
                memo_key(ctx.migration_id, step),
                lambda h: self._prepare(h, ctx, params, desc, {}),
                ctx=ctx,
                name=params.dest_name,
            )
        return PrepareResult(uri=memo["uri"], cookie=dec(memo["cookie"]))

    def perform2(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, uri: str
    ) -> PerformResult:
        """Send the domain; on success end the source copy, on failure resume it."""
        step = ctx.step if ctx.step in (Step.PERFORM1, Step.PERFORM2) else Step.PERFORM2
        with self._guarded(ctx, step, params.domain) as fault:
            key = memo_key(ctx.migration_id, step)
            memo = self._read(params.domain)["calls"].get(key) or self._perform2(
                ctx, params, uri, key, io_errors=injected_io_errors(fault, params)
            )
        return PerformResult(cookie=dec(memo["cookie"]), stats=memo["stats"])

    def _perform2(
        self, ctx: StepContext, params: MigrationParams, uri: str, key: str, *, io_errors: int
    ) -> Memo:
        mid = ctx.migration_id
        final = incoming_path(uri, mid)
        landing = self.destination(uri, ctx, params)
        with self._txn(params.domain) as host:
            self._fence(host, ctx)
            dom = host["domains"].get(params.domain)
            if dom is None or not DomainState(dom["state"]).active:
                raise DomainNotFound(domain=params.domain, host=self.uri)
            if dom["job"] not in (None, mid):
                raise DriverError(f"domain {params.domain!r} is being migrated by {dom['job']}")
            if dom["job"] is None:  # not when a crashed attempt left its job
                dom["job"], dom["state_before_job"] = mid, dom["state"]
            if params.flags & MigrateFlags.CHANGE_PROTECTION:
                dom["protected"] = mid
            if not params.flags & MigrateFlags.LIVE:
                dom["state"] = str(DomainState.PAUSED)
            source = self.dir / dom["image"]
            sent_with = {"checksum": dom["checksum"], "memory_mib": dom["memory_mib"]}
        start = time.monotonic()
        try:
            sent = copy_to(ctx, source, final, params.bandwidth, landing, sidecar=sent_with)
        except BaseException:
            with self._txn(params.domain) as host:  # Perform failed: the source resumes
                if self._fenced_or_none(host, ctx):  # unless another coordinator took over
                    self._resume(host, params.domain, mid)
            raise
        stats = perform_stats(start, sent, io_errors)
        return self._once(
            key,
            lambda h: self._departed(h, params.domain, mid, stats, params.flags),
            ctx=ctx,
            name=params.domain,
        )

    def finish2(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, cancelled: bool
    ) -> FinishResult:
        """v2's Finish2 and v1's Finish: as ``finish``."""
        return self.finish(ctx, params, cookie, cancelled)

    def _departed(self, host: Host, name: str, mid: str, stats: dict[str, Any], flags: int) -> Memo:
        """The source copy ends once sent (v1, v2); the transfer is remembered for probe."""
        dom = self._job_domain(host, name, mid)
        self._end_source(host, name, flags)
        host["departed"][mid] = name
        cookie = {"host": host["host_id"], "sent": stats["bytes"], "lease": dom["lease"]["token"]}
        return {"cookie": enc(json_bytes(cookie)), "stats": stats}

    def probe(self, domain: str) -> ProbeResult:
        """The state of ``domain`` here, with lease_held, job and outgoing transfers."""
        fault = None
        if Step.PROBE in self._read()["faults"]:
            with self._txn() as host:
                fault = self._consume(host, Step.PROBE, None)
        if fault is not None and fault["mode"] == FaultMode.HANG:
            raise DriverError(fault["message"] or "hung: injected hang in probe")
        self._before(fault, Step.PROBE, None)
        host = self._read(domain)
        dom = host["domains"].get(domain)
        if fault is not None and fault["mode"] == FaultMode.LOST_REPLY:
            raise DriverError(fault["message"] or "reply lost: the probe's answer never came")
        departed = {mid: "completed" for mid, name in host["departed"].items() if name == domain}
        if dom is None:
            absent: dict[str, Any] = {"lease_held": False, "job": None, "outgoing": departed}
            return ProbeResult(state=DomainState.ABSENT, detail=absent, transfers=departed)
        outgoing = {**departed, **dom["outgoing"]}
        detail = {"lease_held": dom["lease"]["held"], "job": dom["job"], "outgoing": outgoing}
        return ProbeResult(state=DomainState(dom["state"]), detail=detail, transfers=outgoing)

    def close(self) -> None:
        return None
