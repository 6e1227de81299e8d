"""Post-copy on a QMP host (docs/postcopy.md): QEMU's own commands, both sides.

- the switch: ``migrate-start-postcopy`` on the source (both sides set the
  ``postcopy-ram`` capability before the transfer, ``--flag postcopy``), then ``cont`` on
  the destination once it reports ``postcopy-active``: the guest runs there while its
  pages still arrive;
- a failure (the stream cut, the peer restarted) leaves both QEMUs ``postcopy-paused``;
  ``migrate-recover`` on the destination listens on a new URI, and ``migrate`` with
  ``resume: true`` on the source carries on to ``completed``.

Post-copy needs userfaultfd: root, or ``vm.unprivileged_userfaultfd = 1``; without it
the host does not offer the feature and ``--flag postcopy`` is refused before Begin.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from migrator.drivers.api import MigrationParams, PerformResult, PostcopyPhase
from migrator.drivers.hoststate import dec, memo_key
from migrator.drivers.qmp import Monitor
from migrator.drivers.qmphost.config import POLL, SETTLE_TIMEOUT
from migrator.drivers.qmphost.process import free_port
from migrator.drivers.qmphost.source import POSTCOPY_STATUSES, QmpSource
from migrator.drivers.qmphost.tuning import Tuning
from migrator.errors import DriverError, PostcopyLost
from migrator.flags import MigrateFlags
from migrator.records import StepContext
from migrator.states import Step

PAUSED = frozenset({"postcopy-paused", "postcopy-recover"})
_PHASES = {
    "completed": PostcopyPhase.COMPLETED,
    "postcopy-active": PostcopyPhase.ACTIVE,
    "postcopy-paused": PostcopyPhase.PAUSED,
    "postcopy-recover": PostcopyPhase.PAUSED,
    "setup": PostcopyPhase.PRECOPY,
    "active": PostcopyPhase.PRECOPY,
}


def userfaultfd_usable() -> bool:
    """Whether a QEMU started by this process can open userfaultfd (post-copy)."""
    if os.geteuid() == 0:
        return True
    try:
        return Path("/proc/sys/vm/unprivileged_userfaultfd").read_text().strip() == "1"
    except OSError:
        return False


class QmpPostcopy(QmpSource):
    """The post-copy hooks of a QMP host; each idempotent per migration."""

    def start_postcopy(self, ctx: StepContext, params: MigrationParams) -> None:
        """``migrate-start-postcopy``; return once the source reports post-copy."""
        self._admit(ctx)
        name = params.domain
        self._live(name, ctx.migration_id, "source")
        status = self._status(name)
        if status == "active":
            with Monitor(self.rundir(name)) as mon:
                mon.run("migrate-start-postcopy")
        elif status not in POSTCOPY_STATUSES | {"completed"}:
            raise DriverError(f"cannot switch {name} to post-copy: its migration is {status}")
        self._await(name, POSTCOPY_STATUSES | {"completed"}, ctx)

    def run_postcopy(self, ctx: StepContext, params: MigrationParams) -> None:
        """Once the destination is in post-copy, ``cont`` it (unless PAUSED)."""
        self._admit(ctx)
        name = params.dest_name
        if not self._live(name, ctx.migration_id, "incoming"):
            return  # a Finish(0) ran it already
        self._await(name, POSTCOPY_STATUSES | {"completed"}, ctx)
        if params.flags & MigrateFlags.PAUSED:
            return
        with Monitor(self.rundir(name)) as mon:
            if mon.run("query-status")["status"] != "running":
                mon.run("cont")

    def postcopy_phase(self, params: MigrationParams, migration_id: str) -> PostcopyPhase:
        name = params.domain
        dom = self._read()["domains"].get(name)
        if dom is None or dom["job"] != migration_id or self.pid_of(name) is None:
            return PostcopyPhase.LOST
        if dom["outgoing"].get(migration_id) == "completed":
            return PostcopyPhase.COMPLETED
        status = self._status(name)
        phase = _PHASES.get(status)
        if phase is None:
            raise PostcopyLost(
                domain=name, host=self.uri,
                detail=f"the source's migration ended {status} without a switch",
            )  # fmt: skip
        return phase

    def recover_postcopy(self, ctx: StepContext, params: MigrationParams) -> str:
        """``migrate-recover`` on a new port if paused; the URI to resume to."""
        self._admit(ctx)
        name, mid = params.dest_name, ctx.migration_id
        if not self._live(name, mid, "incoming"):
            return ""
        status = self._status(name)
        key = memo_key(mid, Step.POSTCOPY_RESUME)
        if status == "postcopy-recover":  # listening already: the URI it was given
            memo = self._memo(key)
            if memo is None:
                raise DriverError(f"{name} listens for a resumption on an unknown URI")
            return str(memo["uri"])
        if status != "postcopy-paused":
            return ""
        uri = f"tcp:127.0.0.1:{free_port()}"
        with Monitor(self.rundir(name)) as mon:
            mon.run("migrate-recover", {"uri": uri})
        self._forget_call(key)  # a new URI for each resumption
        return str(self._once(key, lambda h: {"uri": uri}, ctx)["uri"])

    def resume_postcopy(self, ctx: StepContext, params: MigrationParams, uri: str) -> PerformResult:
        """``migrate`` with ``resume`` to ``uri`` if paused; then until completed."""
        self._admit(ctx)
        name, mid = params.domain, ctx.migration_id
        key = memo_key(mid, Step.PERFORM)
        memo = self._memo(key)
        if memo is None:
            self._live(name, mid, "source")
            begun = time.monotonic()
            if uri and self._status(name) == "postcopy-paused":
                with Monitor(self.rundir(name)) as mon:
                    mon.run("migrate", {"uri": uri, "resume": True})
            with self._txn() as host:
                config = dict(host["domains"][name]["config"])
            tuning = Tuning(int(config["downtime_limit_ms"]))
            info = self._watch(ctx, name, tuning)
            stats = self._stats(name, info, params, tuning, time.monotonic() - begun)
            cookie = {"host": self.host_id, "stats": stats}
            memo = self._once(key, lambda h: self._performed(h, name, mid, cookie, stats), ctx)
        return PerformResult(cookie=dec(memo["cookie"]), stats=memo["stats"])

    # -- helpers ---------------------------------------------------------------------------

    def _live(self, name: str, mid: str, side: str) -> bool:
        """True if ``mid``'s copy of ``name`` is here, in its QEMU; False if a Finish(0)
        already ran it (the incoming side); else ``PostcopyLost``."""
        dom: dict[str, Any] | None = self._read()["domains"].get(name)
        landed = dom is not None and dom.get("arrived_with") == mid and dom["job"] is None
        if landed and side == "incoming" and self.pid_of(name) is not None:
            return False
        if dom is None or dom["job"] != mid:
            raise PostcopyLost(domain=name, host=self.uri, detail=f"the {side} copy is gone")
        if self.pid_of(name) is None:
            raise PostcopyLost(domain=name, host=self.uri, detail=f"the {side} QEMU is gone")
        return True

    def _status(self, name: str) -> str:
        with Monitor(self.rundir(name)) as mon:
            return str(mon.run("query-migrate").get("status", "none"))

    def _await(self, name: str, wanted: frozenset[str], ctx: StepContext) -> str:
        deadline = time.monotonic() + SETTLE_TIMEOUT
        if ctx.deadline is not None:
            deadline = min(deadline, ctx.deadline)
        while True:
            status = self._status(name)
            if status in wanted:
                return status
            if status in ("failed", "cancelled") or time.monotonic() > deadline:
                raise DriverError(f"migration of {name} is {status}, not in post-copy")
            time.sleep(POLL)

    def _forget_call(self, key: str) -> None:
        with self._txn() as host:
            host["calls"].pop(key, None)
