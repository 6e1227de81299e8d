"""``qemu:///ABS/DIR``: real ``qemu-system-x86_64`` processes on this machine, over QMP.

Each host is a directory. ``DIR/host.json`` holds what the driver must remember between
processes (every read-modify-write under an exclusive ``flock`` on ``DIR/.lock``, replaced
atomically)::

    {"host_id": uuid,
     "domains": {name: {"config": {memory_mib, smp, machine, touch_mib, busy, seed,
                                   downtime_limit_ms},
                        "job": migration id | null, "state_before_job": str | null,
                        "arrived_with": migration id | null,
                        "outgoing": {migration id: "started" | "completed" | "abandoned"}}},
     "calls": {memo key: recorded result}, "fences": {migration id: highest fence}}

and ``DIR/run/NAME/`` each domain's runtime files: ``qemu.pid`` (written by QEMU itself),
the QMP socket ``qmp.sock``, the guest image ``payload.bin`` (see ``payload.py``) and
``qemu.log`` (QEMU's stderr). QEMU processes outlive the coordinator that started them
(they are started detached, never as our children), so the driver finds them again by pid
file, checks that the pid is still that QEMU (its command line names the pid file), and
asks it over QMP what it is doing: the journal may say anything, the process is the truth.

The protocol, as libvirt's qemu driver does it (DESIGN §8):

- Begin: the domain's configuration is its description; the cookie carries host identity
  and QEMU version.
- Prepare: start the same configuration with ``-S -incoming defer``, then
  ``migrate-incoming tcp:127.0.0.1:PORT`` on a free port; that URI goes to Perform.
- Perform: ``migrate-set-parameters`` (bandwidth, downtime limit), ``migrate``, then
  ``query-migrate`` until the transfer ends, reporting progress; the source is left in
  ``postmigrate`` (paused). ``ctx.aborted()`` or the deadline turn into ``migrate_cancel``.
- Finish: the destination's own ``query-migrate`` must say completed and its process must
  be alive (a source can report "completed" while the destination died loading the
  state), then ``cont`` unless PAUSED; otherwise the incoming QEMU is stopped.
- Confirm: ``quit`` the source, or, cancelled, ``migrate_cancel`` what still runs and
  ``cont`` it (QEMU resumes from ``postmigrate``).

Text from QEMU (error descriptions, logs) is only ever carried as data.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from migrator.drivers import payload
from migrator.drivers.base import (
    BeginResult,
    ConfirmResult,
    DomainState,
    Feature,
    FinishResult,
    MigrationParams,
    PerformResult,
    PrepareResult,
    ProbeResult,
)
from migrator.drivers.hoststate import Host, HostState, Memo, dec, enc, json_bytes, memo_key
from migrator.drivers.qmp import Monitor
from migrator.errors import DomainExists, DomainNotFound, DriverError, InvalidURI, QMPUnreachable
from migrator.flags import MigrateFlags
from migrator.records import Progress, StepContext
from migrator.states import Step

QEMU_ENV = "MIGRATOR_QEMU"
"""Path of the QEMU binary; default: ``qemu-system-x86_64`` found on PATH."""
QEMU_BINARY = "qemu-system-x86_64"
MACHINE = "pc-q35-7.2"
MIB = 1024 * 1024
DEFAULT_MEMORY_MIB = 128
DEFAULT_DOWNTIME_MS = 300
UNLIMITED_BANDWIDTH = 1 << 40
"""Bytes/s sent as ``max-bandwidth`` for "no cap" (QEMU's own default is 128 MiB/s)."""
START_TIMEOUT = 20.0
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 5.0
SETTLE_TIMEOUT = 30.0
POLL = 0.05

_FEATURES = frozenset({Feature.MIGRATION_V3})
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SAFE_MACHINE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_INCOMING_URI = re.compile(r"tcp:127\.0\.0\.1:(\d{1,5})")
_IN_FLIGHT = frozenset({"setup", "active", "pre-switchover", "device", "cancelling", "wait-unplug"})
_ENDED = frozenset({"completed", "failed", "cancelled"})
_STATUS: dict[str, DomainState] = {
    "running": DomainState.RUNNING,
    "inmigrate": DomainState.INCOMING,
    "shutdown": DomainState.SHUTOFF,
}
"""QEMU run states that are not "the guest is stopped" (which all map to PAUSED)."""


def map_status(status: str) -> DomainState:
    """A QEMU run state as a DomainState: stopped guests of every kind are ``paused``."""
    return _STATUS.get(status, DomainState.PAUSED)


def qemu_binary() -> str:
    """The QEMU to run; DriverError with what to install if there is none."""
    configured = os.environ.get(QEMU_ENV)
    found = shutil.which(configured or QEMU_BINARY)
    if found is None:
        what = f"{QEMU_ENV}={configured}" if configured else f"{QEMU_BINARY} on PATH"
        raise DriverError(
            f"QEMU not found ({what}); install it: apt-get install --no-install-recommends"
            " qemu-system-x86"
        )
    return found


def _parse_dir(uri: str) -> Path:
    parts = urlsplit(uri)
    if parts.scheme != "qemu" or parts.netloc or not parts.path.startswith("/"):
        raise InvalidURI(
            uri=uri, reason=f"qemu host path must be absolute: qemu:///ABS/DIR, not {uri}"
        )
    if parts.query or parts.fragment:
        raise InvalidURI(uri=uri, reason="a qemu host URI takes no query or fragment")
    return Path(parts.path)


def check_name(name: str) -> str:
    """``name`` if it can name a domain's files and QEMU's ``-name``; ValueError if not."""
    if not _SAFE_NAME.fullmatch(name):
        raise ValueError(
            f"bad domain name {name!r}: use 1-64 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return name


# -- configuration --------------------------------------------------------------------------


def new_config(name: str, memory_mib: int, touch_mib: int | None, busy: bool) -> dict[str, Any]:
    """A domain's configuration; ValueError says what is wrong with the numbers."""
    if memory_mib < 16 or memory_mib > 64 * 1024:
        raise ValueError(f"memory must be between 16 and 65536 MiB, not {memory_mib}")
    limit = memory_mib - payload.REGION_START // MIB - payload.HEADROOM_MIB
    touch = min(memory_mib * 3 // 4, limit) if touch_mib is None else touch_mib
    payload.check_fits(memory_mib, touch)
    return {
        "memory_mib": memory_mib,
        "smp": 1,
        "machine": MACHINE,
        "touch_mib": touch,
        "busy": busy,
        "seed": zlib.crc32(name.encode()) | 1,
        "downtime_limit_ms": DEFAULT_DOWNTIME_MS,
    }


def config_from_description(text: str) -> dict[str, Any]:
    """The configuration a Begin described, checked field by field (it came from a peer)."""
    try:
        desc = json.loads(text)
        config = desc["config"]
        checked: dict[str, Any] = {
            "memory_mib": int(config["memory_mib"]),
            "smp": int(config["smp"]),
            "machine": str(config["machine"]),
            "touch_mib": int(config["touch_mib"]),
            "busy": bool(config["busy"]),
            "seed": int(config["seed"]) & 0xFFFFFFFF,
            "downtime_limit_ms": int(config["downtime_limit_ms"]),
        }
    except (ValueError, KeyError, TypeError) as exc:
        raise DriverError(f"prepare got a description that is not a qemu domain: {exc}") from None
    if not _SAFE_MACHINE.fullmatch(checked["machine"]) or not 1 <= checked["smp"] <= 64:
        raise DriverError("prepare got a description with a bad machine type or CPU count")
    try:
        payload.check_fits(checked["memory_mib"], checked["touch_mib"])
    except ValueError as exc:
        raise DriverError(f"prepare got a bad description: {exc}") from None
    return checked


def pattern_of(config: dict[str, Any]) -> payload.Pattern:
    return payload.Pattern(
        touch_mib=int(config["touch_mib"]), seed=int(config["seed"]), busy=bool(config["busy"])
    )


# -- processes ------------------------------------------------------------------------------


def _read_pid(pidfile: Path) -> int | None:
    try:
        text = pidfile.read_text().strip()
    except (FileNotFoundError, PermissionError):
        return None
    return int(text) if text.isdigit() else None


def process_alive(pid: int, pidfile: Path) -> bool:
    """True if ``pid`` runs (not a zombie) and is the QEMU that wrote ``pidfile``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    if stat.rpartition(")")[2].split()[0] == "Z":
        return False
    return os.fsencode(str(pidfile)) in argv


def _kill(pid: int, pidfile: Path, timeout: float = STOP_TIMEOUT) -> None:
    """SIGKILL ``pid`` if it is still that QEMU, and wait until it is gone."""
    if process_alive(pid, pidfile):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while process_alive(pid, pidfile):
        if time.monotonic() > deadline:
            raise DriverError(f"QEMU pid {pid} did not die after SIGKILL")
        time.sleep(0.01)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _log_tail(rundir: Path, limit: int = 400) -> str:
    try:
        text = (rundir / "qemu.log").read_text(errors="replace").strip()
    except FileNotFoundError:
        return ""
    return text[-limit:].replace("\n", " | ")


class QemuDriver(HostState):
    """One host of real QEMU processes; every hook is idempotent per migration and step."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.dir = _parse_dir(uri)

    # -- storage: host.json, as ``hoststate.HostState`` keeps it -------------------------

    def _memo(self, key: str) -> Memo | None:
        memo: Memo | None = self._read()["calls"].get(key)
        return memo

    def _admit(self, ctx: StepContext) -> None:
        """Refuse a call with a lower fence than this host has seen for the migration."""
        with self._txn() as host:
            seen: int = host["fences"].get(ctx.migration_id, ctx.fence)
            if ctx.fence < seen:
                raise DriverError(
                    f"stale fence {ctx.fence} for migration {ctx.migration_id}:"
                    f" this host has seen {seen}"
                )
            host["fences"][ctx.migration_id] = ctx.fence

    # -- processes of this host ---------------------------------------------------------------

    def rundir(self, name: str) -> Path:
        return self.dir / "run" / check_name(name)

    def pid_of(self, name: str) -> int | None:
        """The pid of ``name``'s QEMU if it runs, else None."""
        pidfile = self.rundir(name) / "qemu.pid"
        pid = _read_pid(pidfile)
        return pid if pid is not None and process_alive(pid, pidfile) else None

    def _start(self, name: str, config: dict[str, Any], *, incoming: bool) -> int:
        """Start ``name``'s QEMU, detached (it must outlive us); return its pid."""
        binary = qemu_binary()
        rundir = self.rundir(name)
        self._stop(name)  # a stale QEMU of an earlier incarnation: never two per name
        rundir.mkdir(parents=True, exist_ok=True)
        for stale in ("qmp.sock", "qemu.pid"):
            (rundir / stale).unlink(missing_ok=True)
        (rundir / "payload.bin").write_bytes(payload.image(pattern_of(config)))
        pidfile = rundir / "qemu.pid"
        argv = [
            binary, "-accel", "tcg", "-machine", config["machine"], "-nodefaults",
            "-display", "none", "-m", str(config["memory_mib"]), "-smp", str(config["smp"]),
            "-name", f"guest={name}", "-qmp", "unix:qmp.sock,server=on,wait=off",
            "-kernel", "payload.bin", "-pidfile", str(pidfile),
        ]  # fmt: skip
        if incoming:
            argv += ["-S", "-incoming", "defer"]
        # sh forks QEMU into the background and exits: QEMU is nobody's child here, so it
        # outlives this process and never lingers as our zombie. Relative paths (the QMP
        # socket) resolve in the run directory, whatever its length.
        subprocess.run(
            ["/bin/sh", "-c", 'exec "$@" </dev/null >>qemu.log 2>&1 &', "sh", *argv],
            cwd=rundir,
            check=True,
            timeout=START_TIMEOUT,
        )
        return self._await_start(name, rundir, pidfile)

    def _await_start(self, name: str, rundir: Path, pidfile: Path) -> int:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            pid = _read_pid(pidfile)
            if pid is not None and process_alive(pid, pidfile) and (rundir / "qmp.sock").exists():
                with contextlib.suppress(QMPUnreachable), Monitor(rundir, timeout=2.0) as mon:
                    mon.run("query-status")
                    return pid
            if pid is not None and not process_alive(pid, pidfile):
                break
            time.sleep(0.01)
        raise DriverError(f"QEMU for {name} did not start: {_log_tail(rundir) or 'no output'}")

    def _stop(self, name: str) -> None:
        """Stop ``name``'s QEMU if it runs: ``quit`` over QMP, SIGKILL if that fails."""
        rundir = self.rundir(name)
        pidfile = rundir / "qemu.pid"
        pid = _read_pid(pidfile)
        if pid is None or not process_alive(pid, pidfile):
            return
        with contextlib.suppress(DriverError), Monitor(rundir, timeout=2.0) as mon:
            mon.run("quit")
        deadline = time.monotonic() + STOP_TIMEOUT
        while process_alive(pid, pidfile) and time.monotonic() < deadline:
            time.sleep(0.01)
        _kill(pid, pidfile)

    def _discard(self, host: Host, name: str) -> None:
        """Forget ``name`` (its QEMU must be stopped already) and remove its run files."""
        host["domains"].pop(name, None)
        shutil.rmtree(self.rundir(name), ignore_errors=True)

    def _qemu_state(self, name: str) -> tuple[str, dict[str, Any]]:
        """QEMU's run state and ``query-migrate`` of a domain's live process."""
        with Monitor(self.rundir(name)) as mon:
            status = str(mon.run("query-status")["status"])
            migration: dict[str, Any] = mon.run("query-migrate")
        return status, migration

    # -- the ``migrator qemu-host`` commands ---------------------------------------------------

    @property
    def host_id(self) -> str:
        with self._txn() as host:
            host_id: str = host["host_id"]
            return host_id

    def define(
        self,
        name: str,
        *,
        memory_mib: int = DEFAULT_MEMORY_MIB,
        touch_mib: int | None = None,
        busy: bool = False,
        wait: bool = True,
    ) -> dict[str, Any]:
        """Start domain ``name`` running; with ``wait``, return once its memory is written.

        ValueError for bad numbers or name, DomainExists if it is here, DriverError if QEMU
        is missing or does not start (the domain is then not defined).
        """
        check_name(name)
        config = new_config(name, memory_mib, touch_mib, busy)
        qemu_binary()
        with self._txn() as host:
            if name in host["domains"]:
                raise DomainExists(domain=name, host=self.uri)
            host["domains"][name] = self._record(config, job=None)
        try:
            pid = self._start(name, config, incoming=False)
            if wait:
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

    # -- the protocol ----------------------------------------------------------------------------

    def features(self) -> frozenset[Feature]:
        return _FEATURES

    def begin(self, ctx: StepContext, params: MigrationParams) -> BeginResult:
        """Take the domain for this migration; its configuration is the description."""
        self._admit(ctx)
        key = memo_key(ctx.migration_id, Step.BEGIN)
        memo = self._memo(key)
        if memo is None:
            version = self._begin_check(params.domain)
            memo = self._once(key, lambda h: self._begin(h, ctx, params, version))
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
        busy = migration.get("status") in _IN_FLIGHT
        if dom["job"] not in (None, mid) and (busy or dom["outgoing"]):
            raise DriverError(f"domain {name!r} is being migrated by {dom['job']}")
        dom["job"], dom["state_before_job"], dom["outgoing"] = mid, str(state), {}
        description = {"name": name, "config": dom["config"]}
        cookie = {"host": host["host_id"], "hostname": socket.gethostname(), "qemu": version}
        return {
            "description": json.dumps(description, sort_keys=True),
            "cookie": enc(json_bytes(cookie)),
        }

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
            dom = host["domains"].get(name)
            if dom is not None and dom.get("arrived_with") != mid:
                raise DomainExists(domain=name, host=self.uri)
            if dom is None:
                host["domains"][name] = self._record(config, job=mid)
        self._start(name, config, incoming=True)
        uri = self._listen(name)
        with Monitor(self.rundir(name)) as mon:
            version = mon.run("query-version")["qemu"]
        cookie = {
            "host": self.host_id,
            "qemu": f"{version['major']}.{version['minor']}.{version['micro']}",
        }
        return self._once(key, lambda h: {"uri": uri, "cookie": enc(json_bytes(cookie))})

    def _listen(self, name: str, tries: int = 5) -> str:
        """``migrate-incoming`` on a free loopback port; another port if that one is taken."""
        error: DriverError | None = None
        for _ in range(tries):
            uri = f"tcp:127.0.0.1:{_free_port()}"
            try:
                with Monitor(self.rundir(name)) as mon:
                    mon.run(
                        "migrate-set-capabilities",
                        {"capabilities": [{"capability": "events", "state": True}]},
                    )
                    mon.run("migrate-incoming", {"uri": uri})
                return uri
            except QMPUnreachable:
                raise
            except DriverError as exc:
                error = exc
        raise DriverError(f"no free port for the incoming migration of {name}: {error}")

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
            dom = self._job_domain(host, name, mid)
            started = dom["outgoing"].get(mid)
            if started not in (None, "started"):
                raise DriverError(f"migration {mid} of {name} already ended here ({started})")
            dom["outgoing"][mid] = "started"
            config = dict(dom["config"])
        begun = time.monotonic()
        try:
            if started is None:
                self._send(name, config, params, uri)
            info = self._watch(ctx, name)
        except BaseException:
            self._mark(name, mid, "abandoned")
            raise
        stats = self._stats(name, info, params, config, time.monotonic() - begun)
        cookie = {"host": self.host_id, "stats": stats}
        return self._once(key, lambda h: self._performed(h, name, mid, cookie, stats))

    def _job_domain(self, host: Host, name: str, mid: str) -> dict[str, Any]:
        dom: dict[str, Any] | None = host["domains"].get(name)
        if dom is None or dom["job"] != mid:
            raise DriverError(f"domain {name!r} on {self.uri} has no job for migration {mid}")
        return dom

    def _send(self, name: str, config: dict[str, Any], params: MigrationParams, uri: str) -> None:
        cap = params.bandwidth * MIB if params.bandwidth > 0 else UNLIMITED_BANDWIDTH
        with Monitor(self.rundir(name)) as mon:
            mon.run(
                "migrate-set-capabilities",
                {"capabilities": [{"capability": "events", "state": True}]},
            )
            mon.run(
                "migrate-set-parameters",
                {"max-bandwidth": cap, "downtime-limit": int(config["downtime_limit_ms"])},
            )
            if not params.flags & MigrateFlags.LIVE:
                mon.run("stop")  # an offline migration: the guest does not run meanwhile
            mon.run("migrate", {"uri": uri})

    def _watch(self, ctx: StepContext, name: str) -> dict[str, Any]:
        """Poll ``query-migrate`` until completed; raise on failure, abort or deadline."""
        rundir = self.rundir(name)
        while True:
            with Monitor(rundir) as mon:
                info: dict[str, Any] = mon.run("query-migrate")
            status = info.get("status", "none")
            ram = info.get("ram") or {}
            if status == "completed":
                ctx.progress(_progress(ram, final=True))
                return info
            if status in ("failed", "cancelled"):
                desc = str(info.get("error-desc", "no reason given"))
                raise DriverError(f"migration of {name} {status}: {desc}")
            if ram:
                ctx.progress(_progress(ram))
            if ctx.aborted():
                self._cancel_outgoing(name)
                raise DriverError(f"perform aborted: migrate_cancel sent to {name}")
            if ctx.deadline is not None and time.monotonic() > ctx.deadline:
                self._cancel_outgoing(name)
                raise DriverError(f"perform passed its deadline: migrate_cancel sent to {name}")
            time.sleep(POLL)

    def _cancel_outgoing(self, name: str) -> dict[str, Any]:
        """``migrate_cancel`` an outgoing migration in flight; wait until it ended."""
        rundir = self.rundir(name)
        deadline = time.monotonic() + SETTLE_TIMEOUT
        with Monitor(rundir) as mon:
            info: dict[str, Any] = mon.run("query-migrate")
            if info.get("status") in _IN_FLIGHT:
                mon.run("migrate_cancel")
        while info.get("status") in _IN_FLIGHT and time.monotonic() < deadline:
            time.sleep(POLL)
            with Monitor(rundir) as mon:
                info = mon.run("query-migrate")
        if info.get("status") in _IN_FLIGHT:
            raise DriverError(f"the migration of {name} did not stop after migrate_cancel")
        return info

    def _stats(
        self,
        name: str,
        info: dict[str, Any],
        params: MigrationParams,
        config: dict[str, Any],
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
            "downtime_limit_ms": config["downtime_limit_ms"],
            "wall_seconds": round(wall, 3),
        }

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
                memo = self._cancel_incoming(name, mid, key)
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
            return self._once(key, lambda h: self._finished(h, arrived == "landed"))
        loaded, why = self._loaded(ctx, name)
        if not loaded:
            return self._drop_incoming(name, mid, key, why)
        with Monitor(self.rundir(name)) as mon:
            if not paused and mon.run("query-status")["status"] != "running":
                mon.run("cont")
            status = str(mon.run("query-status")["status"])
        if self.pid_of(name) is None:
            return self._drop_incoming(name, mid, key, "the QEMU died at cont")
        return self._once(key, lambda h: self._landed(h, name, mid, status))

    def _loaded(self, ctx: StepContext, name: str) -> tuple[bool, str]:
        """Whether the incoming QEMU loaded the whole state (its own ``query-migrate``)."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        if ctx.deadline is not None:
            deadline = min(deadline, ctx.deadline)
        while True:
            if self.pid_of(name) is None:
                return False, f"the incoming QEMU exited: {_log_tail(self.rundir(name))}"
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

    def _drop_incoming(self, name: str, mid: str, key: str, why: str) -> Memo:
        self._stop(name)
        with self._txn() as host:
            dom = host["domains"].get(name)
            if dom is not None and dom["job"] == mid:
                self._discard(host, name)
        return self._once(key, lambda h: self._finished(h, False, why=why[:500]))

    def _cancel_incoming(self, name: str, mid: str, key: str) -> Memo:
        arrived = self._arrived(name, mid)
        if arrived == "landed":  # a Finish(0) ran it: say so, the engine calls that in doubt
            return self._once(key, lambda h: self._finished(h, True))
        if arrived == "none":
            return self._once(key, lambda h: self._finished(h, False))
        return self._drop_incoming(name, mid, key, "cancelled")

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
                self._resume(name, mid)
            else:
                self._kill_source(name, mid)
            self._once(key, lambda h: {})
        return ConfirmResult(cookie=b"")

    def _kill_source(self, name: str, mid: str) -> None:
        dom = self._read()["domains"].get(name)
        if dom is None:
            return
        if dom["job"] != mid:
            raise DriverError(f"domain {name!r} has no job for migration {mid}: not killing it")
        self._stop(name)
        with self._txn() as host:
            if host["domains"].get(name, {}).get("job") == mid:
                self._discard(host, name)

    def _resume(self, name: str, mid: str) -> None:
        dom = self._read()["domains"].get(name)
        if dom is None or dom["job"] != mid:
            return
        if self.pid_of(name) is None:
            raise DriverError(f"the source QEMU of {name} is gone: it cannot be resumed")
        self._cancel_outgoing(name)
        with Monitor(self.rundir(name)) as mon:
            status = mon.run("query-status")["status"]
            if dom["state_before_job"] == str(DomainState.RUNNING) and status != "running":
                mon.run("cont")  # from postmigrate too: the rollback after a transfer
        with self._txn() as host:
            dom = host["domains"].get(name)
            if dom is not None and dom["job"] == mid:
                dom["job"], dom["state_before_job"] = None, None
                dom["outgoing"].pop(mid, None)

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


def _progress(ram: dict[str, Any], *, final: bool = False) -> Progress:
    total = int(ram.get("total", 0))
    transferred = int(ram.get("transferred", 0))
    remaining = 0 if final else int(ram.get("remaining", 0))
    return Progress(total, transferred, remaining, passes=int(ram.get("dirty-sync-count", 1)))
