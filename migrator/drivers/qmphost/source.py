"""The steps a QMP host runs as the source: Begin, Perform, Confirm."""

from __future__ import annotations

import json
import re
import socket
import time
from typing import Any, ClassVar

from migrator.convergence.policy import Setting
from migrator.drivers.api import (
    BeginResult,
    ConfirmResult,
    DomainState,
    MigrationParams,
    PerformResult,
)
from migrator.drivers.hoststate import Host, Memo, dec, enc, json_bytes, memo_key
from migrator.drivers.qmp import Monitor
from migrator.drivers.qmphost.config import (
    MIB,
    POLL,
    SETTLE_TIMEOUT,
    UNLIMITED_BANDWIDTH,
    check_name,
    map_status,
)
from migrator.drivers.qmphost.host import QmpHost
from migrator.drivers.qmphost.tuning import HONOURED, Tuning, progress
from migrator.errors import DomainNotFound, DriverError, StepAbandoned
from migrator.flags import MigrateFlags
from migrator.records import Control, StepContext
from migrator.states import Step

_INCOMING_URI = re.compile(r"tcp:127\.0\.0\.1:(\d{1,5})")
IN_FLIGHT = frozenset({"setup", "active", "pre-switchover", "device", "cancelling", "wait-unplug"})
POSTCOPY_STATUSES = frozenset({"postcopy-active", "postcopy-paused", "postcopy-recover"})
"""Switched to post-copy: never cancelled, only resumed (docs/postcopy.md)."""


class QmpSource(QmpHost):
    """The source's steps: Begin, Perform (with its progress and controls) and Confirm."""

    honoured_settings: ClassVar[frozenset[Setting]] = HONOURED

    def begin(self, ctx: StepContext, params: MigrationParams) -> BeginResult:
        """Take the domain for this migration; its configuration is the description."""
        self._admit(ctx)
        key = memo_key(ctx.migration_id, Step.BEGIN)
        memo = self._memo(key)
        if memo is None:
            version = self._begin_check(params.domain)
            memo = self._once(key, lambda h: self._begin(h, ctx, params, version), ctx)
        return BeginResult(description=memo["description"], cookie=dec(memo["cookie"]))

    def _begin_check(self, name: str) -> str:
        """The domain runs here (running or paused): its QEMU version; else DomainNotFound."""
        try:
            check_name(name)
        except ValueError:
            raise DomainNotFound(domain=name, host=self.uri) from None
        if name not in self._read()["domains"] or self.pid_of(name) is None:
            raise DomainNotFound(domain=name, host=self.uri)
        with Monitor(self.rundir(name)) as mon:
            version = mon.run("query-version")["qemu"]
        return f"{version['major']}.{version['minor']}.{version['micro']}"

    def _begin(self, host: Host, ctx: StepContext, params: MigrationParams, version: str) -> Memo:
        name, mid = params.domain, ctx.migration_id
        dom = host["domains"].get(name)
        if dom is None:
            raise DomainNotFound(domain=name, host=self.uri)
        status, migration = self._qemu_state(name)
        state = map_status(status)
        if not state.active or status == "postmigrate":
            raise DomainNotFound(domain=name, host=self.uri)
        busy = migration.get("status") in IN_FLIGHT | POSTCOPY_STATUSES
        if dom["job"] not in (None, mid) and (busy or dom["outgoing"]):
            raise DriverError(f"domain {name!r} is being migrated by {dom['job']}")
        dom["job"], dom["state_before_job"], dom["outgoing"] = mid, str(state), {}
        description = {"name": name, "config": dom["config"]}
        cookie = {"host": host["host_id"], "hostname": socket.gethostname(), "qemu": version}
        return {
            "description": json.dumps(description, sort_keys=True),
            "cookie": enc(json_bytes(cookie)),
        }

    def perform(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, uri: str
    ) -> PerformResult:
        """Migrate to ``uri``, reporting progress; the source ends in ``postmigrate``.

        Gives up (``migrate_cancel``, then raising) when ``ctx.aborted()`` or the deadline
        trips; a Perform that gave up is marked so that no probe reports it completed.
        """
        self._admit(ctx)
        key = memo_key(ctx.migration_id, Step.PERFORM)
        memo = self._memo(key)
        if memo is None:
            memo = self._perform(ctx, params, uri, key)
        return PerformResult(cookie=dec(memo["cookie"]), stats=memo["stats"])

    def _perform(self, ctx: StepContext, params: MigrationParams, uri: str, key: str) -> Memo:
        name, mid = params.domain, ctx.migration_id
        if not _INCOMING_URI.fullmatch(uri):
            raise DriverError(f"not a qemu migration URI: {uri!r}")
        with self._txn() as host:
            self._fence(host, ctx)  # again under the lock: a takeover may have come meanwhile
            dom = self._job_domain(host, name, mid)
            started = dom["outgoing"].get(mid)
            if started not in (None, "started"):
                raise DriverError(f"migration {mid} of {name} already ended here ({started})")
            dom["outgoing"][mid] = "started"
            config = dict(dom["config"])
        begun = time.monotonic()
        tuning = Tuning(int(config["downtime_limit_ms"]))
        try:
            if started is None:
                self._send(name, config, params, uri, tuning, ctx.controls())
            info = self._watch(ctx, name, tuning)
        except BaseException:
            self._mark(name, mid, "abandoned")
            raise
        paused_ms = tuning.paused_ms()  # the guest stopped until the data was all sent
        stats = self._stats(name, info, params, tuning, time.monotonic() - begun)
        if paused_ms is not None:
            stats["paused_ms"] = paused_ms
        cookie = {"host": self.host_id, "stats": stats}
        return self._once(key, lambda h: self._performed(h, name, mid, cookie, stats), ctx)

    def _job_domain(self, host: Host, name: str, mid: str) -> dict[str, Any]:
        dom: dict[str, Any] | None = host["domains"].get(name)
        if dom is None or dom["job"] != mid:
            raise DriverError(f"domain {name!r} on {self.uri} has no job for migration {mid}")
        return dom

    def _send(
        self,
        name: str,
        config: dict[str, Any],
        params: MigrationParams,
        uri: str,
        tuning: Tuning,
        controls: list[Control],
    ) -> None:
        cap = params.bandwidth * MIB if params.bandwidth > 0 else UNLIMITED_BANDWIDTH
        tuned_caps, tuned = tuning.before_migrate(controls)
        caps = {c["capability"]: c for c in [*capabilities(params), *tuned_caps]}
        limits = {"max-bandwidth": cap, "downtime-limit": int(config["downtime_limit_ms"])}
        with Monitor(self.rundir(name)) as mon:
            mon.run("migrate-set-capabilities", {"capabilities": list(caps.values())})
            if params.flags & MigrateFlags.POSTCOPY:  # the cap holds after a switch too
                limits["max-postcopy-bandwidth"] = cap if params.bandwidth > 0 else 0
            mon.run("migrate-set-parameters", {**limits, **parameters(params), **tuned})
            if not params.flags & MigrateFlags.LIVE:
                mon.run("stop")  # an offline migration: the guest does not run meanwhile
            mon.run("migrate", {"uri": uri})

    def _watch(self, ctx: StepContext, name: str, tuning: Tuning) -> dict[str, Any]:
        """Poll ``query-migrate`` until completed, making the controls waiting at each poll;
        raise on failure, abort or deadline."""
        rundir = self.rundir(name)
        while True:
            with Monitor(rundir) as mon:
                tuning.during(mon, ctx.controls())
                info: dict[str, Any] = mon.run("query-migrate")
            status = info.get("status", "none")
            ram = info.get("ram") or {}
            if status == "completed":
                ctx.progress(progress(info, final=True))
                return info
            if status in ("failed", "cancelled"):
                desc = str(info.get("error-desc", "no reason given"))
                raise DriverError(f"migration of {name} {status}: {desc}")
            if status in ("postcopy-paused", "postcopy-recover"):
                raise DriverError(f"post-copy of {name} paused: its stream broke")
            if ram:
                ctx.progress(progress(info))
            if status in POSTCOPY_STATUSES:  # switched: never cancelled, only resumed
                self._still_in_time(ctx, name)
                time.sleep(POLL)
                continue
            if ctx.aborted():
                self._cancel_outgoing(name)
                raise DriverError(f"perform aborted: migrate_cancel sent to {name}")
            if ctx.stopped():  # the engine gave up on this call: QEMU must not go on
                self._cancel_outgoing(name)
                raise StepAbandoned(step=str(ctx.step))
            if ctx.deadline is not None and time.monotonic() > ctx.deadline:
                self._cancel_outgoing(name)
                raise DriverError(f"perform passed its deadline: migrate_cancel sent to {name}")
            time.sleep(POLL)

    @staticmethod
    def _still_in_time(ctx: StepContext, name: str) -> None:
        if ctx.deadline is not None and time.monotonic() > ctx.deadline:
            raise DriverError(f"post-copy of {name} still running at the step's deadline")

    def _cancel_outgoing(self, name: str) -> dict[str, Any]:
        """``migrate_cancel`` an outgoing migration in flight; wait until it ended."""
        rundir = self.rundir(name)
        deadline = time.monotonic() + SETTLE_TIMEOUT
        with Monitor(rundir) as mon:
            info: dict[str, Any] = mon.run("query-migrate")
            if info.get("status") in IN_FLIGHT:
                mon.run("migrate_cancel")
        while info.get("status") in IN_FLIGHT and time.monotonic() < deadline:
            time.sleep(POLL)
            with Monitor(rundir) as mon:
                info = mon.run("query-migrate")
        if info.get("status") in IN_FLIGHT:
            raise DriverError(f"the migration of {name} did not stop after migrate_cancel")
        return info

    def _stats(
        self,
        name: str,
        info: dict[str, Any],
        params: MigrationParams,
        tuning: Tuning,
        wall: float,
    ) -> dict[str, Any]:
        """The final statistics; re-queried while QEMU still reads 0 for its times."""
        for _ in range(10):
            if info.get("total-time") and "downtime" in info:
                break
            time.sleep(POLL)
            with Monitor(self.rundir(name)) as mon:
                info = mon.run("query-migrate")
        ram = info.get("ram") or {}
        channels = self._channels(name) if params.connections else None
        return {
            "status": info.get("status"),
            "total_time_ms": info.get("total-time"),
            "downtime_ms": info.get("downtime"),
            "setup_time_ms": info.get("setup-time"),
            "transferred_bytes": ram.get("transferred"),
            "total_bytes": ram.get("total"),
            "normal_pages": ram.get("normal"),
            "passes": ram.get("dirty-sync-count"),
            "mbps": round(float(ram.get("mbps") or 0), 1),
            "bandwidth_mib": params.bandwidth,
            "downtime_limit_ms": tuning.downtime_limit_ms,
            "wall_seconds": round(wall, 3),
            **({"paused": True} if tuning.paused_at is not None else {}),
            **({"auto_converge": True} if tuning.auto_converge else {}),
            **({"controls": tuning.applied} if tuning.applied else {}),
            **({"multifd_channels": channels} if channels is not None else {}),
        }

    def _channels(self, name: str) -> int | None:
        """The parallel connections the source's QEMU reports it sent over."""
        with Monitor(self.rundir(name)) as mon:
            found = mon.run("query-migrate-parameters").get("multifd-channels")
        return int(found) if isinstance(found, int) else None

    def _mark(self, name: str, mid: str, outcome: str) -> None:
        with self._txn() as host:
            dom = host["domains"].get(name)
            if dom is not None and dom["job"] == mid:
                dom["outgoing"][mid] = outcome

    def _performed(
        self, host: Host, name: str, mid: str, cookie: dict[str, Any], stats: dict[str, Any]
    ) -> Memo:
        dom = self._job_domain(host, name, mid)
        dom["outgoing"][mid] = "completed"
        return {"cookie": enc(json_bytes(cookie)), "stats": stats}

    def confirm(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, cancelled: bool
    ) -> ConfirmResult:
        """``quit`` the source; or, if ``cancelled``, stop any transfer and ``cont`` it.

        Either is a no-op for a domain that is absent or has no job for this migration.
        """
        self._admit(ctx)
        key = memo_key(ctx.migration_id, Step.CONFIRM, cancelled)
        if self._memo(key) is None:
            name, mid = params.domain, ctx.migration_id
            if cancelled:
                self._resume(ctx, name, mid, key)
            else:
                self._kill_source(ctx, name, mid, key)
        return ConfirmResult(cookie=b"")

    def _kill_source(self, ctx: StepContext, name: str, mid: str, key: str) -> None:
        with self._fenced(ctx) as host:
            dom = host["domains"].get(name)
            if dom is not None and dom["job"] != mid:
                raise DriverError(f"domain {name!r} has no job for migration {mid}: not killing it")
            if dom is not None:
                self._stop(name)
                self._discard(host, name)
            host["calls"].setdefault(key, {})

    def _resume(self, ctx: StepContext, name: str, mid: str, key: str) -> None:
        with self._fenced(ctx) as host:
            dom = host["domains"].get(name)
            if dom is not None and dom["job"] == mid:
                if self.pid_of(name) is None:
                    raise DriverError(f"the source QEMU of {name} is gone: it cannot be resumed")
                self._cancel_outgoing(name)
                with Monitor(self.rundir(name)) as mon:
                    status = mon.run("query-status")["status"]
                    if dom["state_before_job"] == str(DomainState.RUNNING) and status != "running":
                        mon.run("cont")  # from postmigrate too: the rollback after a transfer
                dom["job"], dom["state_before_job"] = None, None
                dom["outgoing"].pop(mid, None)
            host["calls"].setdefault(key, {})


def capabilities(params: MigrationParams) -> list[dict[str, Any]]:
    """The migration capabilities both sides set: events, post-copy if asked, and
    ``multifd`` for parallel connections (``params.connections``)."""
    caps = [{"capability": "events", "state": True}]
    if params.flags & MigrateFlags.POSTCOPY:
        caps.append({"capability": "postcopy-ram", "state": True})
    if params.connections:
        caps.append({"capability": "multifd", "state": True})
    return caps


def parameters(params: MigrationParams) -> dict[str, int]:
    """The migration parameters both sides set before the data goes."""
    return {"multifd-channels": params.connections} if params.connections else {}
