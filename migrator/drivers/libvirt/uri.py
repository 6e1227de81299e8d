"""libvirt host URIs as ``virsh -c`` takes them, and where each one connects.

======================================================  =====================================
URI                                                     connects to
======================================================  =====================================
``qemu:///system``                                      ``/run/libvirt/libvirt-sock``
``qemu:///session``                                     ``$XDG_RUNTIME_DIR/libvirt/libvirt-sock``
``qemu+unix:///system?socket=PATH`` (or ``/session``)   ``PATH``
``qemu+tcp://HOST[:PORT]/system``                       ``HOST:PORT`` (16509), auth none
``qemu+tls://HOST[:PORT]/system``                       ``HOST:PORT`` (16514), TLS
======================================================  =====================================

TLS reads libvirt's certificate layout: the CA ``/etc/pki/CA/cacert.pem``, the client
certificate ``/etc/pki/libvirt/clientcert.pem`` and key
``/etc/pki/libvirt/private/clientkey.pem``; with ``?pkipath=DIR``, ``DIR/cacert.pem``,
``DIR/clientcert.pem`` and ``DIR/clientkey.pem``. ``?no_verify=1`` skips the check of the
server's certificate (the client certificate is still sent).

One query parameter is migrator's own, never sent to libvirt: ``migrate_uri=URI`` on a
destination host is the address the source's QEMU sends the guest to (``virsh migrate
--migrateuri``), e.g. ``qemu+unix:///session?socket=/run/dst.sock&migrate_uri=tcp://10.0.0.2``.
A password in the URI is never kept (auth none and TLS use none) and never printed.
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


DEFAULT_PORT = {Transport.TCP: 16509, Transport.TLS: 16514}
SYSTEM_SOCKET = "/run/libvirt/libvirt-sock"
SCHEMES = ("qemu", "qemu+unix", "qemu+tcp", "qemu+tls")
_PATHS = ("/system", "/session")
_KNOWN_QUERY = {"socket", "pkipath", "no_verify", "migrate_uri"}


@dataclass(frozen=True, slots=True)
class TLSFiles:
    ca: Path
    cert: Path
    key: Path
    verify: bool = True


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
    migrate_uri: str | None = None

    @property
    def address(self) -> str:
        """Where the connection goes, for messages: a socket path or ``HOST:PORT``."""
        if self.transport is Transport.UNIX:
            return str(self.socket)
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
            " qemu+unix://, qemu+tcp:// or qemu+tls://)",
        )
    if parts.path not in _PATHS:
        raise InvalidURI(uri=shown, reason="the path must be /system or /session")
    query = _query(shown, parts.query)
    name = f"qemu://{parts.path}"
    transport = Transport(parts.scheme.partition("+")[2] or "unix")
    migrate_uri = query.get("migrate_uri") or None
    if transport is Transport.UNIX:
        if parts.netloc:
            raise InvalidURI(uri=shown, reason="a unix socket URI names no host (qemu:///...)")
        if "pkipath" in query or "no_verify" in query:
            raise InvalidURI(uri=shown, reason="pkipath and no_verify are for qemu+tls://")
        socket = query.get("socket") or _default_socket(parts.path, environ or dict(os.environ))
        return LibvirtURI(transport, name, socket=socket, migrate_uri=migrate_uri)
    if not parts.hostname:
        raise InvalidURI(uri=shown, reason=f"qemu+{transport}:// needs a host")
    if "socket" in query:
        raise InvalidURI(uri=shown, reason="socket= is for qemu+unix://")
    if parts.path != "/system":
        raise InvalidURI(uri=shown, reason="a remote host is reached as /system")
    tls = _tls_files(shown, query) if transport is Transport.TLS else None
    if transport is Transport.TCP and ("pkipath" in query or "no_verify" in query):
        raise InvalidURI(uri=shown, reason="pkipath and no_verify are for qemu+tls://")
    return LibvirtURI(
        transport,
        name,
        host=parts.hostname,
        port=port or DEFAULT_PORT[transport],
        tls=tls,
        migrate_uri=migrate_uri,
    )


def _query(shown: str, query: str) -> dict[str, str]:
    pairs = parse_qsl(query, keep_blank_values=True)
    unknown = sorted({k for k, _ in pairs} - _KNOWN_QUERY)
    if unknown:
        known = ", ".join(sorted(_KNOWN_QUERY))
        raise InvalidURI(uri=shown, reason=f"unknown parameter {unknown[0]!r} (known: {known})")
    return dict(pairs)


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
