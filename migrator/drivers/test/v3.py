"""The five steps of protocol v3 on a test host."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from migrator import bounded
from migrator.drivers.api import (
    BeginResult,
    ConfirmResult,
    DomainState,
    FinishResult,
    MigrationParams,
    PerformResult,
    PrepareResult,
)
from migrator.drivers.hoststate import Host, Memo, dec, enc, json_bytes, memo_key
from migrator.drivers.test.faults import FINISH_STEPS, FaultMode, injected_io_errors
from migrator.drivers.test.host import TestHost, domain_record
from migrator.drivers.test.precopy import Precopy
from migrator.drivers.test.transfer import (
    Landing,
    copy_to,
    incoming_dir,
    incoming_image,
    incoming_path,
    perform_stats,
    sha256_of,
)
from migrator.errors import DomainExists, DomainNotFound, DriverError
from migrator.flags import MigrateFlags
from migrator.records import StepContext
from migrator.states import Step

SENT_MAX_BYTES = 64 * 1024
"""The largest note a v1/v2 sender leaves beside an image (its checksum and size)."""


def _handed_over(dom: dict[str, Any]) -> bool:
    """True once the job's migration changed the domain (paused it, sent it)."""
    return bool(dom.get("outgoing")) or dom["state"] != dom.get("state_before_job", dom["state"])


class V3Steps(TestHost):
    """The hooks of protocol v3; every one is idempotent per migration id and step."""

    def begin(self, ctx: StepContext, params: MigrationParams) -> BeginResult:
        """Start the migration job on the source domain; nothing else visible changes."""
        with self._guarded(ctx, Step.BEGIN, params.domain):
            memo = self._once(
                memo_key(ctx.migration_id, Step.BEGIN),
                lambda h: self._begin(h, ctx, params),
                ctx=ctx,
                name=params.domain,
            )
        return BeginResult(description=memo["description"], cookie=dec(memo["cookie"]))

    def _begin(self, host: Host, ctx: StepContext, params: MigrationParams) -> Memo:
        dom = host["domains"].get(params.domain)
        if dom is None or not DomainState(dom["state"]).active:
            raise DomainNotFound(domain=params.domain, host=self.uri)
        if dom["job"] not in (None, ctx.migration_id) and _handed_over(dom):
            raise DriverError(f"domain {params.domain!r} is being migrated by {dom['job']}")
        # A job that never handed the domain over (e.g. its Begin reply was lost and the
        # migration failed) is superseded: Begin changes nothing visible, so the older
        # migration's Perform or Confirm finds the job gone and refuses to act.
        dom["job"], dom["state_before_job"] = ctx.migration_id, dom["state"]
        if params.flags & MigrateFlags.CHANGE_PROTECTION:
            dom["protected"] = ctx.migration_id
        description = {
            "name": params.domain,
            "memory_mib": dom["memory_mib"],
            "checksum": dom["checksum"],
        }
        cookie = {
            "host": host["host_id"],
            "lease": dom["lease"]["token"],
            "checksum": dom["checksum"],
        }
        return {
            "description": json.dumps(description, sort_keys=True),
            "cookie": enc(json_bytes(cookie)),
        }

    def prepare(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, description: str
    ) -> PrepareResult:
        """Create ``dest_name`` as an incoming domain and an image path for the copy."""
        step = Step.PREPARE_TUNNEL if ctx.step is Step.PREPARE_TUNNEL else Step.PREPARE
        with self._guarded(ctx, step, params.dest_name):
            try:
                desc, peer = bounded.loads(description), bounded.loads(cookie.decode())
            except ValueError as exc:  # FileRefused and UnicodeDecodeError are ValueErrors
                raise DriverError(f"prepare got a bad description or cookie: {exc}") from exc
            if not isinstance(desc, dict) or not isinstance(peer, dict):
                raise DriverError("prepare got a description or cookie that is not an object")
            memo = self._once(
                memo_key(ctx.migration_id, step),
                lambda h: self._prepare(h, ctx, params, desc, peer),
                ctx=ctx,
                name=params.dest_name,
            )
        return PrepareResult(uri=memo["uri"], cookie=dec(memo["cookie"]))

    def _prepare(
        self,
        host: Host,
        ctx: StepContext,
        params: MigrationParams,
        desc: dict[str, Any],
        peer: dict[str, Any],
    ) -> Memo:
        name, mid = params.dest_name, ctx.migration_id
        inactive = host["domains"].get(name)
        if inactive is not None and (inactive["state"] != DomainState.SHUTOFF or inactive["job"]):
            raise DomainExists(domain=name, host=self.uri)
        image = incoming_image(mid)
        (self.dir / image).parent.mkdir(parents=True, exist_ok=True)
        (self.dir / image).touch()  # the "listening socket": Perform refuses without it
        host["domains"][name] = domain_record(
            DomainState.INCOMING,
            desc["memory_mib"],
            image,
            desc["checksum"],
            peer.get("lease"),
            job=mid,
        )
        if inactive is not None:  # a shut-off definition: put back if the migration fails
            host["domains"][name]["replaces"] = inactive
        uri = f"test://{self.dir}?incoming={quote(mid)}"
        return {"uri": uri, "cookie": enc(json_bytes({"host": host["host_id"]}))}

    def perform(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, uri: str
    ) -> PerformResult:
        """Copy the image to ``uri``; on success the source is paused, its lease released.

        Gives up (raising, the source as it was) when ``ctx.aborted()`` or the deadline trips.
        """
        with self._guarded(ctx, Step.PERFORM, params.domain) as fault:
            key = memo_key(ctx.migration_id, Step.PERFORM)
            memo = self._read(params.domain)["calls"].get(key)
            if memo is None:
                final = incoming_path(uri, ctx.migration_id)
                landing = self.destination(uri, ctx, params)
                memo = self._perform(
                    ctx, params, key, io_errors=injected_io_errors(fault, params),
                    transfer=lambda source: copy_to(
                        ctx, source, final, params.bandwidth, landing
                    ),
                )  # fmt: skip
        return PerformResult(cookie=dec(memo["cookie"]), stats=memo["stats"])

    @staticmethod
    def destination(uri: str, ctx: StepContext, params: MigrationParams) -> Landing:
        """The admission of the destination host named by a Prepare URI for ``ctx``'s copy."""
        dest = TestHost(f"test://{incoming_dir(uri, ctx.migration_id)}")
        return lambda: dest.landing(ctx, params.dest_name)

    def _perform(
        self,
        ctx: StepContext,
        params: MigrationParams,
        key: str,
        *,
        io_errors: int,
        transfer: Callable[[Path], int],
    ) -> Memo:
        """v3's Perform: pause unless LIVE, ``transfer`` the image, restore on failure."""
        mid = ctx.migration_id
        with self._txn(params.domain) as host:
            self._fence(host, ctx)
            dom = self._job_domain(host, params.domain, mid)
            before, source = dom["state"], self.dir / dom["image"]
            dirty = float(dom.get("dirty_mib_s", 0)) if params.flags & MigrateFlags.LIVE else 0.0
            if not params.flags & MigrateFlags.LIVE:
                dom["state"] = str(DomainState.PAUSED)
        start = time.monotonic()
        precopy = Precopy(ctx, source.stat().st_size, dirty, params.bandwidth)
        precopy.switched = lambda: self._switched(params.domain, mid)
        try:
            precopy.take()  # what is set before the data goes
            sent = transfer(source)
            passes = precopy.run(sent, time.monotonic() - start)
        except BaseException:
            self._restore(ctx, params.domain, before)
            raise
        stats = {**perform_stats(start, sent, io_errors), **passes}
        return self._once(
            key,
            lambda h: self._performed(h, params.domain, mid, stats),
            ctx=ctx,
            name=params.domain,
        )

    def _switched(self, name: str, mid: str) -> bool:
        """Whether ``mid``'s Perform of ``name`` switched to post-copy (``postcopy.py``):
        the destination runs the guest, so the source dirties nothing more."""
        dom = self._read(name)["domains"].get(name) or {}
        return bool(dom.get("outgoing", {}).get(mid) == "postcopy")

    def _restore(self, ctx: StepContext, name: str, state: str) -> None:
        """A failed Perform puts the source back, unless the call may change nothing more
        (another coordinator took over: its own Confirm resumes the source)."""
        with self._txn(name) as host:
            dom = host["domains"].get(name)
            mid = ctx.migration_id
            switched = dom is not None and dom["outgoing"].get(mid) == "postcopy"
            ours = dom is not None and dom["job"] == mid and not switched  # never after a switch
            if ours and self._fenced_or_none(host, ctx):
                dom["state"] = state

    def _performed(self, host: Host, name: str, mid: str, stats: dict[str, Any]) -> Memo:
        dom = self._job_domain(host, name, mid)
        dom["state"] = str(DomainState.PAUSED)
        dom["lease"]["held"] = False  # the destination takes it over at Finish
        dom["outgoing"][mid] = "completed"
        cookie = {"host": host["host_id"], "sent": stats["bytes"]}
        return {"cookie": enc(json_bytes(cookie)), "stats": stats}

    def finish(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, cancelled: bool
    ) -> FinishResult:
        """Run the received domain if its image is whole; if ``cancelled``, remove it."""
        step = ctx.step if ctx.step in FINISH_STEPS else Step.FINISH
        key = memo_key(ctx.migration_id, step, cancelled)
        skip = FaultMode.NO_DOMAIN if cancelled else None
        name = params.dest_name
        with self._guarded(ctx, step, name, skip) as fault:
            if cancelled:
                memo = self._once(
                    key, lambda h: self._cancel_incoming(h, params, ctx), ctx=ctx, name=name
                )
            else:
                whole = fault is None or fault["mode"] != FaultMode.NO_DOMAIN
                whole = whole and self._image_whole(name, ctx.migration_id)
                memo = self._once(
                    key, lambda h: self._land(h, params, ctx, whole), ctx=ctx, name=name
                )
        return FinishResult(running=memo["running"], cookie=dec(memo["cookie"]))

    def _image_whole(self, name: str, mid: str) -> bool:
        """True if ``name``'s incoming image matches the checksum Begin sent, or for v1
        (no description) the one the sender wrote beside it (no lock held)."""
        dom = self._read(name)["domains"].get(name)
        if dom is None or dom["job"] != mid:
            return False
        expected = dom["checksum"] or self._sent_with(mid).get("checksum")
        return bool(sha256_of(self.dir / dom["image"]) == expected)

    def _sent_with(self, mid: str) -> dict[str, Any]:
        """What a v1/v2 sender wrote beside the image: its checksum and size."""
        try:
            sent = bounded.read_json(
                (self.dir / incoming_image(mid)).with_suffix(".json"), max_bytes=SENT_MAX_BYTES
            )
        except (OSError, ValueError):
            return {}
        return sent if isinstance(sent, dict) else {}

    def _finished(self, host: Host, running: bool) -> Memo:
        cookie = {"host": host["host_id"], "running": running}
        return {"running": running, "cookie": enc(json_bytes(cookie))}

    def _land(self, host: Host, params: MigrationParams, ctx: StepContext, whole: bool) -> Memo:
        dom = host["domains"].get(params.dest_name)
        if dom is None or dom["job"] != ctx.migration_id:
            return self._finished(host, running=False)
        self._drop_partials(ctx.migration_id)
        if not whole:
            self._drop_incoming(host, params.dest_name)
            return self._finished(host, running=False)
        paused = bool(params.flags & MigrateFlags.PAUSED)
        dom["state"] = str(DomainState.PAUSED if paused else DomainState.RUNNING)
        dom["lease"]["held"], dom["job"] = True, None
        dom["persistent"] = bool(params.flags & MigrateFlags.PERSIST_DEST)
        replaced = dom.pop("replaces", None)
        if replaced is not None:  # the incoming domain takes the inactive definition's place
            (self.dir / replaced["image"]).unlink(missing_ok=True)
        sent = self._sent_with(ctx.migration_id)
        dom["checksum"] = dom["checksum"] or sent.get("checksum")
        dom["memory_mib"] = dom["memory_mib"] or sent.get("memory_mib")
        (self.dir / incoming_image(ctx.migration_id)).with_suffix(".json").unlink(missing_ok=True)
        return self._finished(host, running=True)

    def _cancel_incoming(self, host: Host, params: MigrationParams, ctx: StepContext) -> Memo:
        mid = ctx.migration_id
        dom = host["domains"].get(params.dest_name)
        if dom is not None and dom.get("arrived_with") == mid and dom["job"] is None:
            # A Finish(0) already ran it: say so honestly; the engine calls that in doubt.
            return self._finished(host, running=True)
        if dom is not None and dom["job"] == mid:
            self._drop_incoming(host, params.dest_name)
        self._drop_partials(mid)
        (self.dir / incoming_image(mid)).unlink(missing_ok=True)
        (self.dir / incoming_image(mid)).with_suffix(".json").unlink(missing_ok=True)
        return self._finished(host, running=False)

    def confirm(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, cancelled: bool
    ) -> ConfirmResult:
        """Remove the source copy, or if ``cancelled`` resume it as it was at Begin.

        Either is a no-op for a domain that is absent or has no job for this migration.
        """
        with self._guarded(ctx, Step.CONFIRM, params.domain):
            if cancelled:
                self._once(
                    memo_key(ctx.migration_id, Step.CONFIRM, cancelled),
                    lambda h: self._resume(h, params.domain, ctx.migration_id),
                    ctx=ctx,
                    name=params.domain,
                )
            else:
                self._once(
                    memo_key(ctx.migration_id, Step.CONFIRM, cancelled),
                    lambda h: self._kill(h, params.domain, ctx.migration_id, params.flags),
                    ctx=ctx,
                    name=params.domain,
                )
        return ConfirmResult(cookie=b"")

    def _kill(self, host: Host, name: str, mid: str, flags: int) -> Memo:
        dom = host["domains"].get(name)
        if dom is not None and not (dom["state"] == DomainState.SHUTOFF and dom["job"] is None):
            self._job_domain(host, name, mid)  # never kill a copy this migration never began
            self._end_source(host, name, flags)
        return {}

    def _end_source(self, host: Host, name: str, flags: int) -> None:
        """The source copy stops; a persistent definition stays (shut off) unless
        UNDEFINE_SOURCE, as libvirt leaves it."""
        dom = host["domains"][name]
        if dom.get("persistent") and not flags & MigrateFlags.UNDEFINE_SOURCE:
            dom["state"], dom["job"], dom["state_before_job"] = str(DomainState.SHUTOFF), None, None
            dom["lease"]["held"], dom["protected"] = False, None
        else:
            self._remove(host, name)

    def _resume(self, host: Host, name: str, mid: str) -> Memo:
        dom = host["domains"].get(name)
        if dom is not None and dom["job"] == mid:
            dom["state"] = dom["state_before_job"] or str(DomainState.RUNNING)
            dom["lease"]["held"], dom["job"], dom["state_before_job"] = True, None, None
            dom["protected"] = None
            dom["outgoing"].pop(mid, None)
        return {}
