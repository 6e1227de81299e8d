"""qemu+tls:// against a TLS server that behaves as libvirtd does: it verifies the client's
certificate, sends the check byte 1, then speaks the RPC (here: a scripted daemon)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from migrator.drivers.libvirt.errors import LibvirtUnreachable
from migrator.drivers.libvirt.procedures import Proc
from migrator.drivers.libvirt.remote import Remote
from migrator.drivers.libvirt.rpc import Connection
from migrator.drivers.libvirt.uri import parse
from migrator.drivers.libvirt.xdr import Packer
from tests.drivers.libvirt.fake_daemon import FakeDaemon, reply

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not found")


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as libvirt lays
    them out under ``pkipath`` (cacert.pem, clientcert.pem, clientkey.pem)."""
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=ca",
            "-keyout", "cakey.pem", "-out", "cacert.pem", cwd=d)  # fmt: skip
    for name, extra in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                "-keyout", f"{name}key.pem", "-out", f"{name}.csr", cwd=d)  # fmt: skip
        (d / f"{name}.ext").write_text(extra + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "cacert.pem", "-CAkey", "cakey.pem",
                "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
                "-out", f"{name}cert.pem", cwd=d)  # fmt: skip
    return d


@pytest.fixture
def server(pki: Path) -> Iterator[int]:
    """Port of a one-connection TLS server relaying to a scripted daemon."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki / "servercert.pem", pki / "serverkey.pem")
    context.load_verify_locations(pki / "cacert.pem")
    context.verify_mode = ssl.CERT_REQUIRED
    listener = socket.create_server(("127.0.0.1", 0))
    fake = FakeDaemon({Proc.CONNECT_GET_VERSION: reply(Packer().uhyper(9000000).data())})

    def serve() -> None:
        try:
            raw, _ = listener.accept()
            with context.wrap_socket(raw, server_side=True) as tls:
                tls.sendall(b"\1")
                relay(tls, fake.client_sock)
        except (OSError, ssl.SSLError):
            return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    listener.close()
    fake.close()
    thread.join(timeout=5)


def relay(tls: ssl.SSLSocket, plain: socket.socket) -> None:
    """Copy both ways until either side closes (the fake daemon answers on ``plain``)."""

    def back() -> None:
        with contextlib.suppress(OSError):
            while data := plain.recv(65536):
                tls.sendall(data)

    threading.Thread(target=back, daemon=True).start()
    while data := tls.recv(65536):
        plain.sendall(data)


def test_a_tls_connection_with_libvirts_pki_layout(pki: Path, server: int) -> None:
    target = parse(f"qemu+tls://127.0.0.1:{server}/system?pkipath={pki}")
    conn = Connection.open(target, host="tls-host", connect_timeout=5)
    assert Remote(conn).version() == 9000000
    conn.abandon()


def test_no_verify_skips_the_server_check_but_still_sends_our_certificate(
    pki: Path, server: int, tmp_path: Path
) -> None:
    for name in ("clientcert.pem", "clientkey.pem"):
        shutil.copy(pki / name, tmp_path / name)
    (tmp_path / "cacert.pem").write_text("not a CA\n")  # unread under no_verify=1
    target = parse(f"qemu+tls://127.0.0.1:{server}/system?pkipath={tmp_path}&no_verify=1")
    conn = Connection.open(target, host="tls-host", connect_timeout=5)
    assert Remote(conn).version() == 9000000
    conn.abandon()


def test_a_server_certificate_from_another_ca_is_refused(
    pki: Path, server: int, tmp_path: Path
) -> None:
    for name in ("clientcert.pem", "clientkey.pem"):
        shutil.copy(pki / name, tmp_path / name)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=other",
            "-keyout", "otherkey.pem", "-out", "cacert.pem", cwd=tmp_path)  # fmt: skip
    target = parse(f"qemu+tls://127.0.0.1:{server}/system?pkipath={tmp_path}")
    with pytest.raises(LibvirtUnreachable, match="TLS handshake failed"):
        Connection.open(target, host="tls-host", connect_timeout=5)


def test_the_libvirt_driver_imports_ssl_only_for_a_tls_host() -> None:
    """``ssl`` is part of a command's start-up: the driver loads it for ``qemu+tls`` only."""
    code = (
        "import socket, sys\n"
        "import migrator.drivers.libvirt.driver\n"
        "print('ssl' in sys.modules)\n"
        "from migrator.drivers.libvirt import sockets\n"
        "from migrator.drivers.libvirt.errors import LibvirtUnreachable\n"
        "from migrator.drivers.libvirt.uri import parse\n"
        "listener = socket.create_server(('127.0.0.1', 0))\n"
        "port = listener.getsockname()[1]\n"
        "target = parse(f'qemu+tls://127.0.0.1:{port}/system?pkipath=/nonexistent')\n"
        "try:\n"
        "    sockets.open_socket(target, host='h', timeout=5)\n"
        "except LibvirtUnreachable as exc:\n"
        "    print('no TLS CA certificate' in str(exc))\n"
        "print('ssl' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert out.split() == ["False", "True", "True"]
