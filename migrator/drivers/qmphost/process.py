"""A QMP host's QEMU processes: pid files, start, stop, and their host state."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from migrator import bounded
from migrator.drivers import payload
from migrator.drivers.hoststate import Host, HostState, Memo
from migrator.drivers.qmp import Monitor
from migrator.drivers.qmphost.config import (
    KERNEL_MAX,
    START_TIMEOUT,
    STOP_TIMEOUT,
    check_name,
    parse_dir,
    pattern_of,
    qemu_binary,
)
from migrator.errors import DriverError, QMPUnreachable
from migrator.records import StepContext


def _read_pid(pidfile: Path) -> int | None:
    try:
        text = bounded.read_text(pidfile, max_bytes=64).strip()
    except (FileNotFoundError, PermissionError, bounded.FileRefused):
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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def log_tail(rundir: Path, limit: int = 400) -> str:
    try:
        text = (rundir / "qemu.log").read_text(errors="replace").strip()
    except FileNotFoundError:
        return ""
    return text[-limit:].replace("\n", " | ")


class QmpProcesses(HostState):
    """The QEMU processes of one host: started detached, found by pid file, stopped."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.dir = parse_dir(uri)

    # -- storage: host.json, as ``hoststate.HostState`` keeps it -------------------------

    def _memo(self, key: str) -> Memo | None:
        memo: Memo | None = self._read()["calls"].get(key)
        return memo

    def _admit(self, ctx: StepContext) -> None:
        """Refuse a call with a lower fence than this host has seen for the migration."""
        with self._txn() as host:
            self._fence(host, ctx)

    @contextlib.contextmanager
    def _fenced(self, ctx: StepContext) -> Iterator[Host]:
        """The host's state under its lock, ``ctx``'s call admitted again: a step acts on
        its QEMU and records its outcome inside, so a call that lost the migration after
        its admission (``_admit``) does neither."""
        with self._txn() as host:
            self._fence(host, ctx)
            yield host

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
        kernel = config.get("kernel")
        image = (
            Path(kernel).read_bytes()[:KERNEL_MAX] if kernel else payload.image(pattern_of(config))
        )
        (rundir / "payload.bin").write_bytes(image)
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
        raise DriverError(f"QEMU for {name} did not start: {log_tail(rundir) or 'no output'}")

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
