"""Post-copy on a test host (docs/postcopy.md), both sides simulated.

The switch pauses the source copy (``outgoing[mid] = "postcopy"``) and runs the incoming
one on the destination while the image is still being copied. The copy is done by the
process that called Perform: if that process dies, or the copy fails, nobody sends the
rest, which is exactly a paused post-copy. ``recover_postcopy`` gives the destination's
URI again, ``resume_postcopy`` sends the image again and completes the transfer as Perform
would have. A destination whose incoming domain is gone cannot be resumed
(``PostcopyLost``).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from migrator.drivers.api import DomainState, MigrationParams, PerformResult, PostcopyPhase
from migrator.drivers.hoststate import Host, dec, memo_key
from migrator.drivers.test.transfer import copy_to, incoming_image, incoming_path, perform_stats
from migrator.drivers.test.v3 import V3Steps
from migrator.errors import DriverError, PostcopyLost
from migrator.flags import MigrateFlags
from migrator.records import ControlKind, StepContext
from migrator.states import Step

SWITCHED = "postcopy"
"""``outgoing[mid]`` of a source that switched and has not sent everything yet."""


class PostcopySteps(V3Steps):
    """The post-copy hooks of a test host (feature POSTCOPY with protocol v3)."""

    def start_postcopy(self, ctx: StepContext, params: MigrationParams) -> None:
        """Pause the source copy: from now on the destination runs the guest."""
        with self._guarded(ctx, Step.POSTCOPY, params.domain), self._txn(params.domain) as host:
            self._fence(host, ctx)
            dom = self._source(host, params.domain, ctx.migration_id)
            if dom["outgoing"].get(ctx.migration_id) in (SWITCHED, "completed"):
                return
            dom["outgoing"][ctx.migration_id] = SWITCHED
            dom["state"] = str(DomainState.PAUSED)
            dom["lease"]["held"] = False  # the destination runs it now

    def run_postcopy(self, ctx: StepContext, params: MigrationParams) -> None:
        """Run the incoming copy while its image still arrives."""
        name = params.dest_name
        with self._txn(name) as host:
            self._fence(host, ctx)
            dom = self._incoming(host, name, ctx.migration_id)
            if dom is None:  # a Finish(0) already ran it
                return
            paused = bool(params.flags & MigrateFlags.PAUSED)
            dom["state"] = str(DomainState.PAUSED if paused else DomainState.RUNNING)
            dom["lease"]["held"] = True

    def postcopy_phase(self, params: MigrationParams, migration_id: str) -> PostcopyPhase:
        dom = self._read(params.domain)["domains"].get(params.domain)
        if dom is None or dom["job"] != migration_id:
            return PostcopyPhase.LOST
        sent = dom["outgoing"].get(migration_id)
        if sent == "completed":
            return PostcopyPhase.COMPLETED
        return PostcopyPhase.PAUSED if sent == SWITCHED else PostcopyPhase.PRECOPY

    def recover_postcopy(self, ctx: StepContext, params: MigrationParams) -> str:
        """The URI to send the rest to, if the incoming copy is still here."""
        name, mid = params.dest_name, ctx.migration_id
        with self._guarded(ctx, Step.POSTCOPY_RESUME, name), self._txn(name) as host:
            self._fence(host, ctx)
            self._incoming(host, name, mid)
        if not (self.dir / incoming_image(mid)).exists():
            raise PostcopyLost(domain=name, host=self.uri, detail="its incoming image is gone")
        return f"test://{self.dir}?incoming={quote(mid)}"

    def resume_postcopy(self, ctx: StepContext, params: MigrationParams, uri: str) -> PerformResult:
        """Send the image again to ``uri`` and complete the transfer as Perform does."""
        name, mid = params.domain, ctx.migration_id
        key = memo_key(mid, Step.PERFORM)
        with self._guarded(ctx, Step.POSTCOPY_RESUME, name):
            memo = self._read(name)["calls"].get(key)
            if memo is None:
                memo = self._resume_copy(ctx, params, uri, key)
        return PerformResult(cookie=dec(memo["cookie"]), stats=memo["stats"])

    def _resume_copy(
        self, ctx: StepContext, params: MigrationParams, uri: str, key: str
    ) -> dict[str, Any]:
        name, mid = params.domain, ctx.migration_id
        if not uri:
            raise DriverError(f"post-copy of {name} is paused: resuming it needs a URI")
        with self._txn(name) as host:
            source = self.dir / self._source(host, name, mid)["image"]
        start = time.monotonic()
        landing = self.destination(uri, ctx, params)
        bandwidth = postcopy_bandwidth(ctx, params.bandwidth)
        sent = copy_to(ctx, source, incoming_path(uri, mid), bandwidth, landing)
        stats = {**perform_stats(start, sent, 0), "resumed": True}
        if bandwidth != params.bandwidth:
            stats["postcopy_bandwidth_mib"] = bandwidth
        return self._once(key, lambda h: self._performed(h, name, mid, stats), ctx=ctx, name=name)

    def _source(self, host: Host, name: str, mid: str) -> dict[str, Any]:
        dom: dict[str, Any] | None = host["domains"].get(name)
        if dom is None or dom["job"] != mid:
            raise PostcopyLost(domain=name, host=self.uri, detail="the source's copy is gone")
        return dom

    def _incoming(self, host: Host, name: str, mid: str) -> dict[str, Any] | None:
        """The incoming copy of ``mid``, None if a Finish(0) ran it; else PostcopyLost."""
        dom: dict[str, Any] | None = host["domains"].get(name)
        if dom is not None and dom["job"] == mid:
            return dom
        if dom is not None and dom.get("arrived_with") == mid and dom["job"] is None:
            return None
        raise PostcopyLost(domain=name, host=self.uri, detail="the incoming copy is gone")


def postcopy_bandwidth(ctx: StepContext, bandwidth: int) -> int:
    """The bandwidth a resumption sends at: the last ``POSTCOPY_SPEED`` control waiting
    (a ``set-speed`` journaled while post-copy was paused), else ``bandwidth``."""
    for control in ctx.controls():
        if control.kind is ControlKind.POSTCOPY_SPEED:
            bandwidth = control.value
            control.done(None)
        else:
            control.done(f"the test host does not honour {control.kind} after a switch")
    return bandwidth
