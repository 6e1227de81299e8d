"""Define, list, inspect and destroy the domains of a QMP host (``migrator qmp-host``)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from migrator.drivers import payload
from migrator.drivers.api import (
    DomainState,
)
from migrator.drivers.qmp import Monitor
from migrator.drivers.qmphost.config import (
    DEFAULT_MEMORY_MIB,
    READY_TIMEOUT,
    check_name,
    map_status,
    new_config,
    qemu_binary,
)
from migrator.drivers.qmphost.process import QmpProcesses
from migrator.errors import DomainExists, DomainNotFound, DriverError, QMPUnreachable


class QmpHost(QmpProcesses):
    """A QMP host's domains as the ``migrator qmp-host`` commands see them."""

    # -- the ``migrator qmp-host`` commands ---------------------------------------------------

    def define(
        self,
        name: str,
        *,
        memory_mib: int = DEFAULT_MEMORY_MIB,
        touch_mib: int | None = None,
        busy: bool = False,
        wait: bool = True,
        kernel: str | None = None,
    ) -> dict[str, Any]:
        """Start domain ``name`` running; with ``wait``, return once its memory is written
        (a ``kernel`` of one's own, booted instead of the payload, has no marker to wait for).

        ``kernel``: the absolute path of a multiboot image of the caller's (at most 1 MiB) to
        boot instead of the generated guest (whose memory pattern ``wait`` and the checks
        know); an incoming copy starts from the same image, its memory the one migrated.

        ValueError for bad numbers or name, DomainExists if it is here, DriverError if QEMU
        is missing or does not start (the domain is then not defined).
        """
        check_name(name)
        config = new_config(name, memory_mib, touch_mib, busy, kernel)
        qemu_binary()
        with self._txn() as host:
            if name in host["domains"]:
                raise DomainExists(domain=name, host=self.uri)
            host["domains"][name] = self._record(config, job=None)
        try:
            pid = self._start(name, config, incoming=False)
            if wait and kernel is None:
                self.wait_ready(name)
        except BaseException:
            self._stop(name)
            with self._txn() as host:
                self._discard(host, name)
            raise
        return {"name": name, "pid": pid, **config}

    @staticmethod
    def _record(config: dict[str, Any], *, job: str | None) -> dict[str, Any]:
        return {
            "config": config,
            "job": job,
            "state_before_job": None,
            "arrived_with": job,
            "outgoing": {},
        }

    def wait_ready(self, name: str, timeout: float = READY_TIMEOUT) -> None:
        """Wait until the guest has written its whole region once (its done marker)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            marker = self.read_memory(name, payload.marker_address(), 4)
            if int.from_bytes(marker, "little") == payload.DONE_MAGIC:
                return
            time.sleep(0.02)
        raise DriverError(f"guest {name} did not write its memory within {timeout:g} s")

    def read_memory(self, name: str, address: int, size: int) -> bytes:
        """``size`` bytes of guest-physical memory of ``name`` (QMP ``pmemsave``)."""
        rundir = self.rundir(name)
        if self.pid_of(name) is None:
            raise DomainNotFound(domain=name, host=self.uri)
        fd, tmp = tempfile.mkstemp(dir=rundir, prefix=".mem-")
        os.close(fd)
        try:
            with Monitor(rundir) as mon:
                mon.run("pmemsave", {"val": address, "size": size, "filename": tmp})
            return Path(tmp).read_bytes()
        finally:
            os.unlink(tmp)

    def config(self, name: str) -> dict[str, Any]:
        dom = self._read()["domains"].get(name)
        if dom is None:
            raise DomainNotFound(domain=name, host=self.uri)
        config: dict[str, Any] = dom["config"]
        return config

    def domains(self) -> list[dict[str, Any]]:
        """Every domain, by name: name, state (as QEMU says), pid, memory, busy, job."""
        rows = []
        for name, dom in sorted(self._read()["domains"].items()):
            state = self._state_of(name, dom)[0]
            rows.append(
                {
                    "name": name,
                    "state": str(state),
                    "pid": self.pid_of(name),
                    "memory_mib": dom["config"]["memory_mib"],
                    "touch_mib": dom["config"]["touch_mib"],
                    "busy": dom["config"]["busy"],
                    "job": dom["job"],
                }
            )
        return rows

    def destroy(self, name: str) -> None:
        """Stop ``name``'s QEMU (by pid) and forget the domain; DomainNotFound if absent."""
        check_name(name)
        if name not in self._read()["domains"]:
            raise DomainNotFound(domain=name, host=self.uri)
        self._stop(name)
        with self._txn() as host:
            self._discard(host, name)

    def set_downtime(self, name: str, milliseconds: int) -> bool:
        """Set ``name``'s downtime limit, live if it is migrating; True if QEMU took it now.

        Like ``virsh migrate-setmaxdowntime``: raising it lets a busy guest converge.
        """
        if milliseconds < 1:
            raise ValueError(f"the downtime limit must be >= 1 ms, not {milliseconds}")
        with self._txn() as host:
            dom = host["domains"].get(name)
            if dom is None:
                raise DomainNotFound(domain=name, host=self.uri)
            dom["config"]["downtime_limit_ms"] = milliseconds
        if self.pid_of(name) is None:
            return False
        with Monitor(self.rundir(name)) as mon:
            mon.run("migrate-set-parameters", {"downtime-limit": milliseconds})
        return True

    def migration_info(self, name: str) -> dict[str, Any]:
        """``query-migrate`` of ``name``'s QEMU, as QEMU reports it."""
        if self.pid_of(name) is None:
            raise DomainNotFound(domain=name, host=self.uri)
        return self._qemu_state(name)[1]

    def _state_of(self, name: str, dom: dict[str, Any]) -> tuple[DomainState, str, dict[str, Any]]:
        """The domain's state, QEMU's run state and ``query-migrate`` ("" and {} if dead).

        A copy that arrived for a migration whose Finish has not run it yet is ``incoming``,
        whatever QEMU says: it is not the domain until Finish says so.
        """
        if self.pid_of(name) is None:
            return DomainState.SHUTOFF, "", {}
        try:
            status, migration = self._qemu_state(name)
        except QMPUnreachable:
            if self.pid_of(name) is None:  # it died while we asked: it is simply off
                return DomainState.SHUTOFF, "", {}
            raise
        state = map_status(status)
        if dom.get("arrived_with") is not None and dom["job"] == dom["arrived_with"]:
            state = DomainState.INCOMING
        return state, status, migration
