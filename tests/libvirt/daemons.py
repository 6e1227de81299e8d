"""Two real libvirt daemons on this machine, for the tests, the crash harness and the benchmark.

Each daemon is a session-mode ``libvirtd`` (Debian ships the monolithic one) with its own
``host_uuid`` (libvirt refuses a migration to a host with the same UUID) and
``stdio_handler = "file"`` (no virtlogd). As root they run under two unprivileged users,
``lvsrc`` and ``lvdst`` (created when missing; a root ``libvirtd`` would be a system
daemon); otherwise both run as the current user. Everything a daemon keeps (config,
domain XML, runtime sockets, QEMU logs) lives under one fresh per-run directory: every
``XDG_*`` variable and ``HOME`` point there, so simultaneous runs never share anything.

Stopping destroys the guests first (QEMU outlives its daemon), then stops each daemon by
its pid, never by name. A daemon started here also exits by itself after
``IDLE_EXIT_S`` seconds without clients or guests, should the process that started it die.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

LIBVIRTD = "/usr/sbin/libvirtd"
REAPER = str(Path(__file__).with_name("reaper.py"))
"""Daemons run under ``reaper.py``, which reaps their exited QEMUs at once as a host's init
does (libvirt's Confirm3 lasts until the source's QEMU is reaped)."""
QEMU_DRIVER = "/usr/lib/*/libvirt/connection-driver/libvirt_driver_qemu.so"
USERS = ("lvsrc", "lvdst")
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
IDLE_EXIT_S = 900
VIRSH_TIMEOUT_S = 60.0


class DaemonError(RuntimeError):
    """A daemon did not start, a ``virsh`` command failed, or a QEMU survived."""


def missing() -> str | None:
    """Why real daemons cannot run here (``None`` when they can)."""
    if not os.path.exists(LIBVIRTD):
        return f"{LIBVIRTD} not found (apt-get install libvirt-daemon-driver-qemu libvirt-daemon)"
    if not glob.glob(QEMU_DRIVER):
        return "libvirt's QEMU driver not found (apt-get install libvirt-daemon-driver-qemu)"
    if shutil.which("virsh") is None:
        return "virsh not found (apt-get install libvirt-clients)"
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 not found (apt-get install qemu-system-x86)"
    return None


def session_uri(sock: Path) -> str:
    return f"qemu+unix:///session?socket={sock}"


def virsh(uri: str, *args: str, check: bool = True, timeout: float = VIRSH_TIMEOUT_S) -> str:
    """Run ``virsh -c URI ARGS`` and return its stdout; raise DaemonError on failure."""
    proc = subprocess.run(
        ["virsh", "-q", "-c", uri, *args],
        capture_output=True, text=True, timeout=timeout, check=False,
        env={**os.environ, "LC_ALL": "C"},
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise DaemonError(f"virsh {' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a ``migrate_uri``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def migrate_uri() -> str:
    """A loopback migration URI with a free port: the daemons need one (see docs/libvirt.md)."""
    return f"tcp://127.0.0.1:{free_port()}"


@dataclass
class Daemon:
    """One running ``libvirtd`` and the directory that holds all it keeps."""

    name: str
    user: str
    home: Path
    uid: int
    gid: int
    host_uuid: str
    pid: int = 0
    reaped: bool = True
    """Run under ``reaper.py``; else the daemon's QEMUs are left to PID 1."""

    @property
    def sock(self) -> Path:
        return self.home / "run" / "libvirt" / "libvirt-sock"

    @property
    def uri(self) -> str:
        return session_uri(self.sock)

    @property
    def log(self) -> Path:
        return self.home / "libvirtd.log"

    def virsh(self, *args: str, check: bool = True, timeout: float = VIRSH_TIMEOUT_S) -> str:
        return virsh(self.uri, *args, check=check, timeout=timeout)

    def write_config(self, extra: str = "") -> None:
        conf = self.home / "config" / "libvirt"
        conf.mkdir(parents=True)
        (conf / "libvirtd.conf").write_text(
            f'host_uuid = "{self.host_uuid}"\nlog_outputs = "3:file:{self.log}"\n{extra}'
        )
        (conf / "qemu.conf").write_text('stdio_handler = "file"\n')
        for sub in ("run", "cache", "data"):
            (self.home / sub).mkdir(mode=0o700)
        for path in (self.home, *self.home.rglob("*")):
            os.chown(path, self.uid, self.gid)
        self.home.chmod(0o711)  # root and the other daemon's QEMU may read files put here

    def environment(self) -> dict[str, str]:
        return {
            "HOME": str(self.home),
            "USER": self.user,
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "LC_ALL": "C",
            "XDG_RUNTIME_DIR": str(self.home / "run"),
            "XDG_CONFIG_HOME": str(self.home / "config"),
            "XDG_CACHE_HOME": str(self.home / "cache"),
            "XDG_DATA_HOME": str(self.home / "data"),
        }

    def start(self) -> None:
        argv = [LIBVIRTD, "--timeout", str(IDLE_EXIT_S), "-f",
                str(self.home / "config" / "libvirt" / "libvirtd.conf")]  # fmt: skip
        if os.geteuid() == 0:
            argv = ["runuser", "-u", self.user, "--", *argv]
        if self.reaped:
            argv = [sys.executable, REAPER, *argv]
        with open(self.home / "libvirtd.stdout", "wb") as out:
            proc = subprocess.Popen(
                argv, env=self.environment(), stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        self.pid = proc.pid

    def daemon_pid(self) -> int:
        """The pid of ``libvirtd`` itself (``reaper.py``, and ``runuser`` when root, stay
        above it)."""
        pidfile = self.home / "run" / "libvirt" / "libvirtd.pid"
        try:
            return int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return 0

    def wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.sock.exists() and _connects(self.sock):
                return
            if not _alive(self.pid):
                break
            time.sleep(0.05)
        tail = (self.home / "libvirtd.stdout").read_text(errors="replace")[-2000:]
        raise DaemonError(f"libvirtd {self.name} did not start: {tail}")

    def active_domains(self) -> list[str]:
        if not self.sock.exists() or not _alive(self.daemon_pid() or self.pid):
            return []
        out = self.virsh("list", "--name", check=False, timeout=15)
        return [line.strip() for line in out.splitlines() if line.strip()]

    def destroy_all(self) -> None:
        for name in self.active_domains():
            self.virsh("destroy", name, check=False, timeout=30)
        out = (
            self.virsh("list", "--all", "--name", check=False, timeout=15)
            if _alive(self.daemon_pid() or self.pid)
            else ""
        )
        for name in filter(None, (line.strip() for line in out.splitlines())):
            self.virsh("undefine", name, check=False, timeout=15)

    def stop(self) -> None:
        for pid in (self.daemon_pid(), self.pid):
            _terminate(pid)

    def restart(self) -> None:
        """Stop the daemon by pid and start it again; its guests' QEMUs run on meanwhile."""
        self.stop()
        self.sock.unlink(missing_ok=True)
        self.start()
        self.wait_ready(time.monotonic() + START_TIMEOUT_S)


def _connects(sock: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(sock))
        except OSError:
            return False
    return True


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


def _terminate(pid: int) -> None:
    if not _alive(pid):
        _reap(pid)
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    _reap(pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def qemu_processes(root: Path) -> dict[int, str]:
    """Running QEMUs whose command line names a path under ``root``: pid → guest name."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or b"qemu-system" not in argv[0]:
            continue
        text = [a.decode(errors="replace") for a in argv]
        if any(str(root) in a for a in text) and _alive(int(entry.name)):
            found[int(entry.name)] = guest_name(text)
    return found


def guest_name(argv: list[str]) -> str:
    """The guest a QEMU command line runs (its ``-name guest=NAME``), or ``""``."""
    for i, arg in enumerate(argv[:-1]):
        if arg == "-name":
            for part in argv[i + 1].split(","):
                if part.startswith("guest="):
                    return part.removeprefix("guest=")
    return ""


@contextlib.contextmanager
def accounts_lock() -> Iterator[None]:
    """Held while test runs create system users and groups: the two processes of one run
    (and simultaneous runs) would otherwise race, the loser's ``useradd`` failing."""
    with open("/tmp/migrator-tests-accounts.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _ensure_user(name: str) -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        with accounts_lock():
            if subprocess.run(["id", name], capture_output=True).returncode:
                subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", name], check=True,
                               capture_output=True)  # fmt: skip
        entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


def _daemon(root: Path, name: str, home: str) -> Daemon:
    """A daemon ``name`` (one of ``USERS``) to run in ``root / home``: under the user of
    that name when we are root (created if missing), else under ours."""
    if os.geteuid() == 0:
        user = name
        uid, gid = _ensure_user(user)
    else:
        uid, gid = os.getuid(), os.getgid()
        user = pwd.getpwuid(uid).pw_name
    return Daemon(name, user, root / home, uid, gid, str(uuid.uuid4()))


def start_daemon(root: Path, name: str, extra_conf: str = "") -> Daemon:
    """One more daemon under ``root``, configured with ``extra_conf`` lines too; the caller
    stops it."""
    daemon = _daemon(root, name, f"{name[-3:]}-{uuid.uuid4().hex[:6]}")
    daemon.write_config(extra_conf)
    daemon.start()
    try:
        daemon.wait_ready(time.monotonic() + START_TIMEOUT_S)
    except BaseException:
        daemon.stop()
        raise
    return daemon


@dataclass
class Pair:
    """A source and a destination daemon under one per-run directory."""

    root: Path
    src: Daemon
    dst: Daemon
    extra: list[Path] = field(default_factory=list)

    @classmethod
    def start(cls, root: Path | None = None, *, reaped: bool = True) -> Pair:
        """Both daemons, under ``reaper.py`` unless ``reaped`` is false (their QEMUs are
        then left to PID 1, whose pace then sets Confirm3's)."""
        root = root or Path(tempfile.mkdtemp(prefix="mlv-"))  # short: sockets live below it
        root.chmod(0o711)
        daemons = []
        for name in USERS:
            daemon = _daemon(root, name, name[-3:])
            daemon.reaped = reaped
            daemon.write_config()
            daemons.append(daemon)
        pair = cls(root, daemons[0], daemons[1])
        try:
            for daemon in daemons:
                daemon.start()
            deadline = time.monotonic() + START_TIMEOUT_S
            for daemon in daemons:
                daemon.wait_ready(deadline)
        except BaseException:
            pair.stop()
            raise
        return pair

    def daemons(self) -> Iterator[Daemon]:
        yield self.src
        yield self.dst

    def stray_qemus(self) -> dict[int, str]:
        """QEMUs under this pair whose guest no daemon lists as active: pid → guest."""
        active = {name for d in self.daemons() for name in d.active_domains()}
        return {pid: name for pid, name in qemu_processes(self.root).items() if name not in active}

    def kill_qemus(self) -> None:
        for pid in qemu_processes(self.root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def stop(self, remove: bool = True) -> None:
        """Destroy the guests, stop any QEMU left, then the daemons by pid; pass or fail."""
        errors: list[str] = []
        for daemon in self.daemons():
            try:
                daemon.destroy_all()
            except Exception as exc:  # noqa: BLE001 -- keep stopping the rest
                errors.append(f"{daemon.name}: {exc}")
        self.kill_qemus()
        for daemon in self.daemons():
            daemon.stop()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while qemu_processes(self.root) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = qemu_processes(self.root)
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)
        if left:
            raise DaemonError(f"QEMU processes survived the teardown: {left}")
        if errors:
            raise DaemonError("; ".join(errors))
