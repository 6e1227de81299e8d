"""libvirt host URIs as ``virsh -c`` takes them, and where each one connects.

======================================================  =====================================
URI                                                     connects to
======================================================  =====================================
``qemu:///system``                                      ``/run/libvirt/libvirt-sock``
``qemu:///session``                                     ``$XDG_RUNTIME_DIR/libvirt/libvirt-sock``
``qemu+unix:///system?socket=PATH`` (or ``/session``)   ``PATH``
``qemu+tcp://HOST[:PORT]/system``                       ``HOST:PORT`` (16509), auth none
``qemu+tls://HOST[:PORT]/system``                       ``HOST:PORT`` (16514), TLS
``qemu+ssh://[USER@]HOST[:PORT]/system``                the system ``ssh`` to HOST, running
                                                        ``virt-ssh-helper`` or ``nc -U`` there
======================================================  =====================================

TLS reads libvirt's certificate layout: the CA ``/etc/pki/CA/cacert.pem``, the client
certificate ``/etc/pki/libvirt/clientcert.pem`` and key
``/etc/pki/libvirt/private/clientkey.pem``; with ``?pkipath=DIR``, ``DIR/cacert.pem``,
``DIR/clientcert.pem`` and ``DIR/clientkey.pem``. ``?no_verify=1`` skips the check of the
server's certificate (the client certificate is still sent).

ssh takes libvirt's parameters of its ``ssh`` transport (``keyfile``, ``known_hosts``,
``no_verify``, ``no_tty``, ``command``, ``socket``, ``netcat``, ``proxy``, ``mode``; see
``ssh.py``).

Parameters of migrator's own, never sent to libvirt: ``migrate_uri=URI`` on a destination
host is the address the source's QEMU sends the guest to (``virsh migrate --migrateuri``),
e.g. ``qemu+unix:///session?socket=/run/dst.sock&migrate_uri=tcp://10.0.0.2``;
``keepalive_interval=S`` and ``keepalive_count=N`` are ``virsh -k S -K N`` (5 and 6 by
default; an interval of 0 sends no keepalive of ours). A password in the URI is never kept
(no transport uses one) and never printed.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from migrator.drivers.uri import redact_uri
from migrator.errors import InvalidURI


class Transport(enum.StrEnum):
    UNIX = "unix"
    TCP = "tcp"
    TLS = "tls"
    SSH = "ssh"


DEFAULT_PORT = {Transport.TCP: 16509, Transport.TLS: 16514}
SYSTEM_SOCKET = "/run/libvirt/libvirt-sock"
SSH_SYSTEM_SOCKET = "/var/run/libvirt/libvirt-sock"
"""libvirt names the remote socket under /var/run: a remote host may lack /run."""
SCHEMES = ("qemu", "qemu+unix", "qemu+tcp", "qemu+tls", "qemu+ssh")
KEEPALIVE_INTERVAL = 5.0
KEEPALIVE_COUNT = 6
"""virsh's defaults (``virsh -k 5 -K 6``): a silent peer is dropped after about 30 s."""
_PATHS = ("/system", "/session")
_OWN = {"migrate_uri", "keepalive_interval", "keepalive_count"}
_SSH = {"socket", "keyfile", "known_hosts", "no_verify", "no_tty", "command", "netcat",
        "proxy", "mode"}  # fmt: skip
_KNOWN = {
    Transport.UNIX: _OWN | {"socket"},
    Transport.TCP: _OWN,
    Transport.TLS: _OWN | {"pkipath", "no_verify"},
    Transport.SSH: _OWN | _SSH,
}


class Proxy(enum.StrEnum):
    """What runs on the remote end of ssh (libvirt's ``proxy=``)."""

    AUTO = "auto"
    """``virt-ssh-helper`` if the remote host has it, else netcat."""
    NETCAT = "netcat"
    NATIVE = "native"
    """``virt-ssh-helper`` only."""


@dataclass(frozen=True, slots=True)
class TLSFiles:
    ca: Path
    cert: Path
    key: Path
    verify: bool = True


@dataclass(frozen=True, slots=True)
class SSHOptions:
    """How to reach a daemon through ``ssh``; the user name, never a password."""

    user: str | None = None
    keyfile: str | None = None
    known_hosts: str | None = None
    verify: bool = True
    command: str = "ssh"
    socket: str = SSH_SYSTEM_SOCKET
    netcat: str | None = None
    proxy: Proxy = Proxy.AUTO
    helper_uri: str = "qemu:///system"
    """What ``virt-ssh-helper`` is asked to connect to on the remote host."""


@dataclass(frozen=True, slots=True)
class KeepAliveSettings:
    """libvirt's keepalive as ``virsh -k interval -K count`` sets it; interval 0: off."""

    interval: float = KEEPALIVE_INTERVAL
    count: int = KEEPALIVE_COUNT

    @property
    def enabled(self) -> bool:
        return self.interval > 0


@dataclass(frozen=True, slots=True)
class LibvirtURI:
    """Where to connect and what to ask for; holds no secret."""

    transport: Transport
    name: str
    """What CONNECT_OPEN asks the daemon for: ``qemu:///system`` or ``qemu:///session``."""
    socket: str | None = None
    host: str | None = None
    port: int | None = None
    tls: TLSFiles | None = None
    ssh: SSHOptions | None = None
    migrate_uri: str | None = None
    keepalive: KeepAliveSettings = KeepAliveSettings()

    @property
    def address(self) -> str:
        """Where the connection goes, for messages: a socket path or ``HOST:PORT``."""
        if self.transport is Transport.UNIX:
            return str(self.socket)
        if self.port is None:
            return str(self.host)
        return f"{self.host}:{self.port}"


def is_libvirt_uri(uri: str) -> bool:
    """Whether ``uri`` names a libvirt host: ``qemu:///system``, ``qemu:///session`` (with
    or without a query) or any ``qemu+TRANSPORT://`` URI (checked fully by ``parse``)."""
    parts = urlsplit(uri)
    if parts.scheme.startswith("qemu+"):
        return True
    return parts.scheme == "qemu" and not parts.netloc and parts.path in _PATHS


def parse(uri: str, *, environ: dict[str, str] | None = None) -> LibvirtURI:
    """The connection ``uri`` asks for; ``InvalidURI`` with a one-line reason if it is bad."""
    shown = redact_uri(uri)
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise InvalidURI(uri=shown, reason=str(exc)) from None
    if parts.scheme not in SCHEMES:
        transport = parts.scheme.partition("+")[2] or parts.scheme
        raise InvalidURI(
            uri=shown,
            reason=f"transport {transport!r} is not supported (use qemu:///system,"
            " qemu+unix://, qemu+tcp://, qemu+tls:// or qemu+ssh://)",
        )
    if parts.path not in _PATHS:
        raise InvalidURI(uri=shown, reason="the path must be /system or /session")
    transport = Transport(parts.scheme.partition("+")[2] or "unix")
    query = _query(shown, parts.query, transport)
    name = f"qemu://{parts.path}"
    migrate_uri = query.get("migrate_uri") or None
    keepalive = _keepalive(shown, query)
    if transport is Transport.UNIX:
        if parts.netloc:
            raise InvalidURI(uri=shown, reason="a unix socket URI names no host (qemu:///...)")
        socket = query.get("socket") or _default_socket(parts.path, environ or dict(os.environ))
        return LibvirtURI(
            transport, name, socket=socket, migrate_uri=migrate_uri, keepalive=keepalive
        )
    if not parts.hostname:
        raise InvalidURI(uri=shown, reason=f"qemu+{transport}:// needs a host")
    if transport is Transport.SSH:
        if parts.password is not None:
            raise InvalidURI(
                uri=shown,
                reason="ssh takes no password from the URI: give it a key (keyfile=,"
                " ssh-agent or ~/.ssh/config)",
            )
        ssh = _ssh_options(shown, query, parts.username, name)
        return LibvirtURI(
            transport, name, host=parts.hostname, port=port, ssh=ssh,
            migrate_uri=migrate_uri, keepalive=keepalive,
        )  # fmt: skip
    if parts.path != "/system":
        raise InvalidURI(uri=shown, reason="a remote host is reached as /system")
    tls = _tls_files(shown, query) if transport is Transport.TLS else None
    return LibvirtURI(
        transport, name, host=parts.hostname, port=port or DEFAULT_PORT[transport], tls=tls,
        migrate_uri=migrate_uri, keepalive=keepalive,
    )  # fmt: skip


def _query(shown: str, query: str, transport: Transport) -> dict[str, str]:
    pairs = parse_qsl(query, keep_blank_values=True)
    given = {k for k, _ in pairs}
    owners = {"socket": "qemu+unix:// or qemu+ssh://", "pkipath": "qemu+tls://",
              "no_verify": "qemu+tls:// or qemu+ssh://"}  # fmt: skip
    for key, owner in owners.items():
        if key in given and key not in _KNOWN[transport]:
            raise InvalidURI(uri=shown, reason=f"{key}= is for {owner}")
    unknown = sorted(given - _KNOWN[transport])
    if unknown:
        known = ", ".join(sorted(_KNOWN[transport]))
        raise InvalidURI(uri=shown, reason=f"unknown parameter {unknown[0]!r} (known: {known})")
    return dict(pairs)


def _keepalive(shown: str, query: dict[str, str]) -> KeepAliveSettings:
    try:
        interval = float(query.get("keepalive_interval", KEEPALIVE_INTERVAL))
        count = int(query.get("keepalive_count", KEEPALIVE_COUNT))
    except ValueError as exc:
        raise InvalidURI(uri=shown, reason=f"keepalive: {exc}") from None
    if not 0 <= interval <= 3600 or not 1 <= count <= 100:
        raise InvalidURI(
            uri=shown, reason="keepalive_interval must be 0..3600 s and keepalive_count 1..100"
        )
    return KeepAliveSettings(interval, count)


def _flag(shown: str, query: dict[str, str], key: str) -> bool:
    """A libvirt boolean parameter: an integer, non-zero meaning yes."""
    value = query.get(key, "0")
    try:
        return int(value) != 0
    except ValueError:
        raise InvalidURI(uri=shown, reason=f"{key} must be 0 or 1, not {value!r}") from None


def _ssh_options(shown: str, query: dict[str, str], user: str | None, name: str) -> SSHOptions:
    """libvirt's choices: a ``socket=`` means netcat, a session means ``virt-ssh-helper``,
    a system host tries the helper and falls back to netcat; ``mode=direct`` (the per-driver
    daemons' sockets) exists only on the host itself."""
    for key in ("keyfile", "known_hosts", "command", "socket", "netcat"):
        if query.get(key) == "":
            raise InvalidURI(uri=shown, reason=f"{key}= needs a value")
    mode = query.get("mode", "auto")
    if mode not in ("auto", "legacy", "direct"):
        raise InvalidURI(uri=shown, reason=f"mode must be auto, legacy or direct, not {mode!r}")
    socket = query.get("socket")
    if mode == "direct" and socket is None:
        raise InvalidURI(uri=shown, reason="mode=direct cannot be used with the ssh transport")
    default = Proxy.AUTO
    if socket:
        default = Proxy.NETCAT
    elif name.endswith("/session"):
        default = Proxy.NATIVE
    try:
        proxy = Proxy(query.get("proxy", default))
    except ValueError:
        raise InvalidURI(uri=shown, reason="proxy must be auto, netcat or native") from None
    netcat = query.get("netcat")
    if netcat is not None and proxy is Proxy.NATIVE:
        raise InvalidURI(uri=shown, reason="netcat= is not valid with proxy=native")
    if netcat is not None and "proxy" not in query:
        proxy = Proxy.NETCAT
    helper = name if "mode" not in query else f"{name}?mode={mode}"
    return SSHOptions(
        user=user, keyfile=query.get("keyfile"), known_hosts=query.get("known_hosts"),
        verify=not _flag(shown, query, "no_verify"), command=query.get("command", "ssh"),
        socket=socket or SSH_SYSTEM_SOCKET, netcat=netcat, proxy=proxy, helper_uri=helper,
    )  # fmt: skip


def _default_socket(path: str, environ: dict[str, str]) -> str:
    if path == "/system":
        return SYSTEM_SOCKET
    runtime = environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return f"{runtime}/libvirt/libvirt-sock"
    return f"{environ.get('HOME', '~')}/.cache/libvirt/libvirt-sock"


def _tls_files(shown: str, query: dict[str, str]) -> TLSFiles:
    flag = query.get("no_verify", "0")
    if flag not in ("0", "1"):
        raise InvalidURI(uri=shown, reason=f"no_verify must be 0 or 1, not {flag!r}")
    verify = flag == "0"
    pki = query.get("pkipath")
    if pki == "":
        raise InvalidURI(uri=shown, reason="pkipath= needs a directory")
    if pki:
        base = Path(pki)
        return TLSFiles(
            base / "cacert.pem", base / "clientcert.pem", base / "clientkey.pem", verify
        )
    return TLSFiles(
        Path("/etc/pki/CA/cacert.pem"),
        Path("/etc/pki/libvirt/clientcert.pem"),
        Path("/etc/pki/libvirt/private/clientkey.pem"),
        verify,
    )
