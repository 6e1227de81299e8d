"""Two system-mode libvirt hosts, each in a network namespace of its own, reached over ssh.

Each host is a network namespace (``mlv<N>a``, ``mlv<N>b``: ``10.77.<N>.1`` and ``.2`` on a
bridge ``mlvbr<N>`` whose root-namespace end is ``10.77.<N>.254``) and a mount namespace
in which ``/run/libvirt``, ``/var/lib/libvirt``, ``/etc/libvirt``... are directories of
this run. In it run a system-mode ``libvirtd`` (QEMU as root, ``listen_tcp`` with auth none,
``listen_tls`` with certificates of a CA made for the run (``pki.py``), whose client
certificate is in ``pki``, ``keepalive_interval = 1``, ``keepalive_count = 3`` so that a
dead client goes in seconds) and Debian's ``sshd`` (``/usr/sbin/sshd``) on port 22, which
accepts only the client key made here, for root. ``known_hosts`` holds both host keys;
``ssh_uri`` gives the ``qemu+ssh://`` URI with ``keyfile=`` and ``known_hosts=``, so
nothing of the machine's own ssh setup is read or written.

``stop`` kills every process left in the namespaces (QEMU, sshd, libvirtd), by pid, then
deletes the namespaces, the bridge and the directory, pass or fail.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

from tests.libvirt import pki
from tests.libvirt.daemons import LIBVIRTD, REAPER, DaemonError, accounts_lock, guest_name, virsh

SSHD = "/usr/sbin/sshd"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0
MOUNTS = ("run:/run/libvirt", "lib:/var/lib/libvirt", "cache:/var/cache/libvirt",
          "log:/var/log/libvirt", "etc:/etc/libvirt")  # fmt: skip


def missing() -> str | None:
    """Why namespaced hosts cannot run here (``None`` when they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in (LIBVIRTD, SSHD, "/usr/bin/ssh", "/usr/bin/ssh-keygen"):
        if not os.path.exists(tool):
            return (
                f"{tool} not found (apt-get install openssh-server openssh-client libvirt-daemon)"
            )
    for tool in ("ip", "unshare", "nsenter", "ss", "virsh", "qemu-system-x86_64", "openssl"):
        if shutil.which(tool) is None:
            return f"{tool} not found"
    return None


def run(*argv: str, check: bool = True) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if check and proc.returncode != 0:
        raise DaemonError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


@dataclass
class NsHost:
    """One namespaced host: its libvirtd and sshd, its address and its files."""

    name: str
    ns: str
    addr: str
    home: Path
    host_uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    pids: list[int] = field(default_factory=list)
    libvirtd_pid: int = 0

    @property
    def sock(self) -> Path:
        return self.home / "run" / "libvirt-sock"

    @property
    def uri(self) -> str:
        """The daemon's own socket, from the root namespace (for ``virsh`` set-up)."""
        return f"qemu+unix:///system?socket={self.sock}"

    def virsh(self, *args: str, check: bool = True, timeout: float = 60.0) -> str:
        return virsh(self.uri, *args, check=check, timeout=timeout)

    def ss(self, *args: str) -> str:
        """``ss`` inside the namespace."""
        return run("ip", "netns", "exec", self.ns, "ss", "-H", *args)

    def established(self, port: int) -> list[str]:
        """The ESTABLISHED TCP connections to ``port`` of this host, one line each."""
        return self.ss("-tn", "state", "established", f"( sport = :{port} )").splitlines()

    def write_config(self, ca: pki.CA) -> None:
        ca.server(self.home / "tls", self.addr)
        shutil.copy(ca.cert, self.home / "tls" / "cacert.pem")
        for sub in (x.partition(":")[0] for x in MOUNTS):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        (self.home / "etc" / "libvirtd.conf").write_text(
            f'host_uuid = "{self.host_uuid}"\nlisten_tls = 1\nlisten_tcp = 1\n'
            f'cert_file = "{self.home}/tls/servercert.pem"\n'
            f'key_file = "{self.home}/tls/serverkey.pem"\nca_file = "{self.home}/tls/cacert.pem"\n'
            f'auth_tcp = "none"\nauth_unix_rw = "none"\nauth_unix_ro = "none"\n'
            f'unix_sock_rw_perms = "0700"\nkeepalive_interval = 1\nkeepalive_count = 3\n'
            f'log_outputs = "3:file:{self.home}/libvirtd.log"\n'
        )
        (self.home / "etc" / "qemu.conf").write_text(
            'user = "root"\ngroup = "root"\ndynamic_ownership = 0\nsecurity_driver = "none"\n'
            'namespaces = [ ]\nstdio_handler = "file"\ncgroup_controllers = [ ]\n'
        )
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.home / "host_key"))

    def start(self, authorized_keys: Path) -> None:
        libvirtd = self.start_libvirtd()
        (self.home / "sshd_config").write_text(
            f"ListenAddress {self.addr}\nPort 22\nHostKey {self.home / 'host_key'}\n"
            f"PidFile {self.home / 'sshd.pid'}\nAuthorizedKeysFile {authorized_keys}\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation
        sshd = subprocess.Popen(
            ["nsenter", "-t", str(libvirtd.pid), "-m", "-u", "-n", SSHD, "-D", "-e",
             "-f", str(self.home / "sshd_config")],
            stdout=subprocess.DEVNULL, stderr=open(self.home / "sshd.log", "wb"),  # noqa: SIM115
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        self.pids.append(sshd.pid)
        self._wait(lambda: ":22 " in self.ss("-tln"), "sshd", self.home / "sshd.log")

    def start_libvirtd(self) -> subprocess.Popen[bytes]:
        """Start libvirtd in the namespace and a mount namespace of its own, under
        ``reaper.py`` (whose pid this is: stopping it stops libvirtd); once it listens."""
        binds = "; ".join(
            f"mkdir -p {target} && mount --bind {self.home / src} {target}"
            for src, _, target in (m.partition(":") for m in MOUNTS)
        )
        script = (
            f"hostname lv-{self.name}; {binds}; exec {sys.executable} {REAPER} {LIBVIRTD}"
            f" --listen -f /etc/libvirt/libvirtd.conf -p {self.home / 'libvirtd.pid'}"
        )
        with open(self.home / "libvirtd.stdout", "ab") as out:
            libvirtd = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, "unshare", "-m", "-u", "--propagation",
                 "private", "bash", "-c", script],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        self.pids.append(libvirtd.pid)
        self.libvirtd_pid = libvirtd.pid
        self._wait(lambda: self.sock.exists(), "libvirtd", self.home / "libvirtd.stdout")
        return libvirtd

    def stop_libvirtd(self, grace: float = STOP_TIMEOUT_S) -> None:
        """Stop this host's libvirtd as a service restart does (SIGTERM, SIGKILL after
        ``grace`` s): its guests run on."""
        pid = self.libvirtd_pid
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(pid, os.WNOHANG) == (0, 0):
                if time.monotonic() > deadline:  # it waits on a job: as a service manager would
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    break
                time.sleep(0.05)
        self.pids.remove(pid)
        self.sock.unlink(missing_ok=True)

    def _wait(self, ready: object, what: str, log: Path) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if ready():  # type: ignore[operator]
                return
            time.sleep(0.05)
        tail = log.read_text(errors="replace")[-2000:]
        raise DaemonError(f"{what} in {self.ns} did not start: {tail}")

    def host_key(self) -> str:
        return (self.home / "host_key.pub").read_text().split(" ", 2)[1]

    def stop(self) -> None:
        for name in self.virsh("list", "--name", check=False, timeout=15).split():
            self.virsh("destroy", name, check=False, timeout=30)
        left = [int(p) for p in run("ip", "netns", "pids", self.ns, check=False).split()]
        for pid in {*left, *self.pids}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in self.pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _claim_net() -> int:
    """A free ``N`` of ``10.77.N.0/24``, claimed by creating its bridge: a run that loses
    the race to another one picks again, and never touches what the other made."""
    for _ in range(20):
        taken = run("ip", "-o", "link").split()
        net = random.choice([n for n in range(100, 200) if f"mlvbr{n}:" not in taken])
        add = ["ip", "link", "add", f"mlvbr{net}", "type", "bridge"]
        if subprocess.run(add, capture_output=True, check=False).returncode == 0:
            return net
    raise DaemonError("no free 10.77.N.0/24 between 100 and 199")


def _ensure_qemu_user() -> None:
    """libvirt 9.0 (Debian) resolves its compiled-in QEMU user before reading qemu.conf."""
    with accounts_lock():
        if subprocess.run(["getent", "group", "libvirt-qemu"], capture_output=True).returncode:
            run("groupadd", "-r", "libvirt-qemu")
        if subprocess.run(["id", "libvirt-qemu"], capture_output=True).returncode:
            run("useradd", "-r", "-g", "libvirt-qemu", "-d", "/var/lib/libvirt", "-s",
                "/usr/sbin/nologin", "libvirt-qemu")  # fmt: skip


@dataclass
class NsPair:
    """Hosts ``a`` and ``b`` on one bridge, one client key, one ``known_hosts``."""

    net: int
    root: Path
    a: NsHost
    b: NsHost

    @property
    def bridge(self) -> str:
        return f"mlvbr{self.net}"

    @property
    def key(self) -> Path:
        return self.root / "client_key"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @classmethod
    def start(cls) -> NsPair:
        _ensure_qemu_user()
        net = _claim_net()
        root = Path(tempfile.mkdtemp(prefix="mlvn-"))
        hosts = [NsHost(x, f"mlv{net}{x}", f"10.77.{net}.{i}", root / x)
                 for i, x in ((1, "a"), (2, "b"))]  # fmt: skip
        pair = cls(net, root, *hosts)
        try:
            pair._network()
            run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(pair.key))
            ca = pki.CA.make(root / "ca")
            ca.client(pair.pki)
            for host in hosts:
                host.write_config(ca)
                host.start(root / "client_key.pub")
            pair.known_hosts.write_text(
                "".join(f"{h.addr} ssh-ed25519 {h.host_key()}\n" for h in hosts)
            )
        except BaseException:
            pair.stop()
            raise
        return pair

    def _network(self) -> None:
        run("ip", "addr", "add", f"10.77.{self.net}.254/24", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        for host in self.hosts():
            run("ip", "netns", "add", host.ns)
            run("ip", "link", "add", self.veth(host), "type", "veth", "peer", "name", "eth0",
                "netns", host.ns)  # fmt: skip
            run("ip", "link", "set", self.veth(host), "master", self.bridge)
            run("ip", "link", "set", self.veth(host), "up")
            run("ip", "-n", host.ns, "link", "set", "lo", "up")
            run("ip", "-n", host.ns, "addr", "add", f"{host.addr}/24", "dev", "eth0")
            run("ip", "-n", host.ns, "link", "set", "eth0", "up")

    def veth(self, host: NsHost) -> str:
        return f"mlv{self.net}{host.name}-h"

    def cut(self, host: NsHost, *, up: bool = False) -> None:
        """Cut (or restore) ``host``'s link to the bridge."""
        run("ip", "link", "set", self.veth(host), "up" if up else "down")

    def hosts(self) -> list[NsHost]:
        return [self.a, self.b]

    def stray_qemus(self) -> dict[int, str]:
        """QEMUs in the hosts' namespaces whose guest their daemon does not list as active:
        pid → guest."""
        stray: dict[int, str] = {}
        for host in self.hosts():
            active = set(host.virsh("list", "--name", check=False, timeout=15).split())
            for pid in (int(p) for p in run("ip", "netns", "pids", host.ns, check=False).split()):
                try:
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if argv and b"qemu-system" in argv[0]:
                    name = guest_name([a.decode(errors="replace") for a in argv])
                    if name not in active:
                        stray[pid] = name
        return stray

    @property
    def pki(self) -> Path:
        """The client's ``pkipath``: the CA's certificate, a client certificate and key."""
        return self.root / "client-pki"

    def uri(self, host: NsHost, transport: str, **params: str) -> str:
        """``host``'s URI over ``transport`` (``tcp``, ``tls`` or ``ssh``; ``unix``: the
        daemon's own socket), with ``params``."""
        if transport == "unix":
            params = {"socket": str(host.sock), **params}
            return f"qemu+unix:///system?{urlencode(params)}"
        if transport == "ssh":
            return self.ssh_uri(host, **params)
        if transport == "tls":
            params = {"pkipath": str(self.pki), **params}
        query = f"?{urlencode(params)}" if params else ""
        return f"qemu+{transport}://{host.addr}/system{query}"

    def ssh_uri(self, host: NsHost, **params: str) -> str:
        query = {"keyfile": str(self.key), "known_hosts": str(self.known_hosts), **params}
        return f"qemu+ssh://root@{host.addr}/system?{urlencode(query)}"

    def stop(self) -> None:
        for host in self.hosts():
            with contextlib.suppress(Exception):
                host.stop()
            run("ip", "netns", "del", host.ns, check=False)
        run("ip", "link", "del", self.bridge, check=False)
        if not os.environ.get("MLV_KEEP"):
            shutil.rmtree(self.root, ignore_errors=True)
