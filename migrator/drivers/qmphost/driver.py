"""The QMP driver: the destination's steps (Prepare, Finish), ``probe``, and its declared
interface; the source's steps are in ``source.py``."""

from __future__ import annotations

import shutil
import time
from typing import Any, ClassVar

from migrator.drivers.api import (
    DomainState,
    Feature,
    FinishResult,
    MigrationParams,
    PrepareResult,
    ProbeResult,
)
from migrator.drivers.hoststate import Host, Memo, dec, enc, json_bytes, memo_key
from migrator.drivers.qmp import Monitor
from migrator.drivers.qmphost.config import (
    POLL,
    SETTLE_TIMEOUT,
    check_name,
    config_from_description,
)
from migrator.drivers.qmphost.postcopy import QmpPostcopy, userfaultfd_usable
from migrator.drivers.qmphost.process import free_port, log_tail
from migrator.drivers.qmphost.source import capabilities, parameters
from migrator.errors import DomainExists, DriverError, QMPUnreachable
from migrator.flags import MigrateFlags
from migrator.records import StepContext
from migrator.states import Step

_FEATURES = frozenset({Feature.MIGRATION_V3})
HONOURED = MigrateFlags.LIVE | MigrateFlags.PAUSED | MigrateFlags.POSTCOPY
"""What the steps act on: LIVE (Perform ``stop``s the guest first without it), PAUSED
(Finish leaves the destination stopped) and POSTCOPY (``postcopy-ram`` on both sides; the
engine refuses it where userfaultfd is not usable). Every other flag is refused before
Begin."""


class QmpDriver(QmpPostcopy):
    """One host of real QEMU processes; every hook is idempotent per migration and step."""

    blocking: ClassVar[bool] = True  # QMP round trips, a transfer of seconds: watched
    honoured_flags: ClassVar[MigrateFlags] = HONOURED

    # -- the protocol ----------------------------------------------------------------------------

    def features(self) -> frozenset[Feature]:
        return _FEATURES | {Feature.POSTCOPY} if userfaultfd_usable() else _FEATURES

    def prepare(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, description: str
    ) -> PrepareResult:
        """Start the incoming QEMU, same configuration, ``-incoming defer``; return its URI."""
        self._admit(ctx)
        key = memo_key(ctx.migration_id, Step.PREPARE)
        memo = self._memo(key)
        if memo is None:
            memo = self._prepare(ctx, params, config_from_description(description), key)
        return PrepareResult(uri=memo["uri"], cookie=dec(memo["cookie"]))

    def _prepare(
        self, ctx: StepContext, params: MigrationParams, config: dict[str, Any], key: str
    ) -> Memo:
        name, mid = params.dest_name, ctx.migration_id
        try:
            check_name(name)
        except ValueError as exc:
            raise DriverError(str(exc)) from None
        with self._txn() as host:
            self._fence(host, ctx)  # again under the lock: a cancel may have come meanwhile
            dom = host["domains"].get(name)
            if dom is not None and dom.get("arrived_with") != mid:
                raise DomainExists(domain=name, host=self.uri)
            if dom is None:
                host["domains"][name] = self._record(config, job=mid)
        self._start(name, config, incoming=True)
        uri = self._listen(name, params)
        with Monitor(self.rundir(name)) as mon:
            version = mon.run("query-version")["qemu"]
        cookie = {
            "host": self.host_id,
            "qemu": f"{version['major']}.{version['minor']}.{version['micro']}",
        }
        memo = {"uri": uri, "cookie": enc(json_bytes(cookie))}
        try:
            return self._once(key, lambda h: memo, ctx)
        except DriverError:
            self._unstart(name, mid)
            raise

    def _unstart(self, name: str, mid: str) -> None:
        """A Prepare refused after it started its QEMU (another coordinator cancelled the
        migration meanwhile, or the engine abandoned the call): stop that QEMU, unless the
        name now belongs to another migration, so that no incoming QEMU outlives it."""
        dom = self._read()["domains"].get(name)
        if dom is not None and dom.get("arrived_with") != mid:
            return
        self._stop(name)
        with self._txn() as host:
            dom = host["domains"].get(name)
            if dom is not None and dom["job"] == mid:
                self._discard(host, name)
            elif dom is None:
                shutil.rmtree(self.rundir(name), ignore_errors=True)

    def _listen(self, name: str, params: MigrationParams, tries: int = 5) -> str:
        """``migrate-incoming`` on a free loopback port; another port if that one is taken."""
        error: DriverError | None = None
        for _ in range(tries):
            uri = f"tcp:127.0.0.1:{free_port()}"
            try:
                with Monitor(self.rundir(name)) as mon:
                    mon.run("migrate-set-capabilities", {"capabilities": capabilities(params)})
                    if params.connections:  # multifd: set before it listens
                        mon.run("migrate-set-parameters", parameters(params))
                    mon.run("migrate-incoming", {"uri": uri})
                return uri
            except QMPUnreachable:
                raise
            except DriverError as exc:
                error = exc
        raise DriverError(f"no free port for the incoming migration of {name}: {error}")

    def finish(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, cancelled: bool
    ) -> FinishResult:
        """Run the arrived domain if its QEMU really loaded it; if ``cancelled``, stop it."""
        self._admit(ctx)
        key = memo_key(ctx.migration_id, Step.FINISH, cancelled)
        memo = self._memo(key)
        if memo is None:
            name, mid = params.dest_name, ctx.migration_id
            if cancelled:
                memo = self._cancel_incoming(ctx, name, mid, key)
            else:
                memo = self._land(ctx, name, mid, bool(params.flags & MigrateFlags.PAUSED), key)
        return FinishResult(running=memo["running"], cookie=dec(memo["cookie"]))

    @staticmethod
    def _finished(host: Host, running: bool, **extra: Any) -> Memo:
        """A Finish result; ``host`` is the host's state, read under the lock."""
        cookie = {"host": host["host_id"], "running": running, **extra}
        return {"running": running, "cookie": enc(json_bytes(cookie))}

    def _arrived(self, name: str, mid: str) -> str:
        """``"pending"``, ``"landed"`` (a Finish ran it) or ``"none"`` for ``mid``'s copy."""
        dom = self._read()["domains"].get(name)
        if dom is None or dom.get("arrived_with") != mid:
            return "none"
        return "pending" if dom["job"] == mid else "landed"

    def _land(self, ctx: StepContext, name: str, mid: str, paused: bool, key: str) -> Memo:
        arrived = self._arrived(name, mid)
        if arrived != "pending":
            return self._once(key, lambda h: self._finished(h, arrived == "landed"), ctx)
        loaded, why = self._loaded(ctx, name)
        if not loaded:
            return self._drop_incoming(ctx, name, mid, key, why)
        # ``cont`` under the host lock, the fence checked first: a stale Finish never runs
        # a guest that another coordinator's cancel is about to stop.
        with self._txn() as host, Monitor(self.rundir(name)) as mon:
            self._fence(host, ctx)
            if not paused and mon.run("query-status")["status"] != "running":
                mon.run("cont")
            status = str(mon.run("query-status")["status"])
        if self.pid_of(name) is None:
            return self._drop_incoming(ctx, name, mid, key, "the QEMU died at cont")
        return self._once(key, lambda h: self._landed(h, name, mid, status), ctx)

    def _loaded(self, ctx: StepContext, name: str) -> tuple[bool, str]:
        """Whether the incoming QEMU loaded the whole state (its own ``query-migrate``)."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        if ctx.deadline is not None:
            deadline = min(deadline, ctx.deadline)
        while True:
            if self.pid_of(name) is None:
                return False, f"the incoming QEMU exited: {log_tail(self.rundir(name))}"
            try:
                status, info = self._qemu_state(name)
            except QMPUnreachable as exc:
                if self.pid_of(name) is None:
                    continue  # it died meanwhile: said above
                raise DriverError(f"cannot tell whether {name} arrived: {exc}") from None
            if info.get("status") == "completed" and status in ("paused", "running"):
                return True, ""
            if info.get("status") in ("failed", "cancelled"):
                return False, f"incoming migration {info.get('status')}"
            if time.monotonic() > deadline:
                raise DriverError(f"incoming migration of {name} still {info.get('status')}")
            time.sleep(POLL)

    def _landed(self, host: Host, name: str, mid: str, status: str) -> Memo:
        dom = host["domains"][name]
        dom["job"] = None
        return self._finished(host, True, qemu_status=status)

    def _drop_incoming(self, ctx: StepContext, name: str, mid: str, key: str, why: str) -> Memo:
        """Stop ``mid``'s incoming QEMU and forget it, recording the outcome in that write."""
        with self._fenced(ctx) as host:
            dom = host["domains"].get(name)
            if dom is not None and dom["job"] == mid:
                self._stop(name)
                self._discard(host, name)
            memo: Memo = host["calls"].setdefault(key, self._finished(host, False, why=why[:500]))
            return memo

    def _cancel_incoming(self, ctx: StepContext, name: str, mid: str, key: str) -> Memo:
        arrived = self._arrived(name, mid)
        if arrived == "landed":  # a Finish(0) ran it: say so, the engine calls that in doubt
            return self._once(key, lambda h: self._finished(h, True), ctx)
        if arrived == "none":
            return self._once(key, lambda h: self._finished(h, False), ctx)
        return self._drop_incoming(ctx, name, mid, key, "cancelled")

    def probe(self, domain: str) -> ProbeResult:
        """What QEMU really does with ``domain``: state, pid, run state, transfers."""
        dom = self._read()["domains"].get(domain)
        if dom is None:
            absent: dict[str, Any] = {"pid": None, "job": None, "outgoing": {}}
            return ProbeResult(state=DomainState.ABSENT, detail=absent)
        state, status, migration = self._state_of(domain, dom)
        transfers = {
            mid: "completed"
            for mid, sent in dom["outgoing"].items()
            if sent == "completed"
            or (sent == "started" and migration.get("status") == "completed"
                and status == "postmigrate")
        }  # fmt: skip
        detail = {
            "pid": self.pid_of(domain),
            "qemu_status": status or None,
            "migration": migration.get("status"),
            "job": dom["job"],
            "outgoing": transfers,
        }
        return ProbeResult(state=state, detail=detail, transfers=transfers)

    def close(self) -> None:
        return None
