"""Where an RPC connection's bytes go: a UNIX socket, TCP, TLS, or ssh's pipes.

``open_channel`` returns a connected ``Channel`` (for TLS: handshaken and checked; for
ssh: the running ``ssh`` on the other end of a socket pair). The RPC client
(``rpc.Connection``) reads and writes ``channel.sock`` whatever it is.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from dataclasses import dataclass

from migrator.drivers.libvirt.errors import LibvirtTimeout, LibvirtUnreachable
from migrator.drivers.libvirt.ssh import SSHError, SSHTunnel
from migrator.drivers.libvirt.uri import LibvirtURI, Transport


@dataclass
class Channel:
    sock: socket.socket
    tunnel: SSHTunnel | None = None

    def why_closed(self) -> str:
        """What the transport knows of why the peer went away (ssh: its stderr)."""
        if self.tunnel is not None:
            return self.tunnel.explain()
        return "connection closed by the daemon"

    def why_silent(self, seconds: float) -> str:
        """Why nothing came back within ``seconds`` (ssh: what it said meanwhile)."""
        if self.tunnel is not None:
            return self.tunnel.silent(seconds)
        return f"no answer within {seconds:g} s"

    def close(self) -> None:
        if self.tunnel is not None:
            self.tunnel.close()
            return
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def open_channel(target: LibvirtURI, *, host: str, timeout: float) -> Channel:
    """The connected channel ``target`` names; ``LibvirtUnreachable`` naming ``host``."""
    if target.transport is Transport.SSH:
        assert target.host is not None and target.ssh is not None
        try:
            tunnel = SSHTunnel(target.host, target.port, target.ssh)
        except SSHError as exc:
            raise LibvirtUnreachable(host=host, reason=str(exc)) from None
        return Channel(tunnel.sock, tunnel)
    return Channel(open_socket(target, host=host, timeout=timeout))


def open_socket(target: LibvirtURI, *, host: str, timeout: float) -> socket.socket:
    """The connected (for TLS: handshaken and checked) socket ``target`` names."""
    try:
        if target.transport is Transport.UNIX:
            assert target.socket is not None
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(target.socket)
            except BaseException:
                sock.close()
                raise
            return sock
        assert target.host is not None and target.port is not None
        sock = socket.create_connection((target.host, target.port), timeout=timeout)
        if target.transport is Transport.TLS:
            return _tls(sock, target, host=host)
        return sock
    except FileNotFoundError:
        reason = f"no socket at {target.address} (is libvirtd running?)"
    except TimeoutError:
        raise LibvirtTimeout(host=host, reason=f"no connection within {timeout:g} s") from None
    except ssl.SSLError as exc:
        reason = f"TLS handshake failed: {exc.reason or exc}"
        if exc.reason == "CERTIFICATE_VERIFY_FAILED" and target.tls is not None:
            reason += (
                f"; the daemon's certificate does not check against {target.tls.ca} (give"
                " the CA that signed it, pkipath=DIR, or no_verify=1 to skip the check)"
            )
    except OSError as exc:
        reason = f"cannot connect to {target.address}: {exc.strerror or exc}"
    raise LibvirtUnreachable(host=host, reason=reason)


def tls_context(target: LibvirtURI, host: str | None = None) -> ssl.SSLContext:
    """A client context from libvirt's certificate layout (see ``uri.py``); a file that is
    missing or does not load is ``LibvirtUnreachable`` naming ``host`` and the file."""
    files = target.tls
    assert files is not None
    host = host or target.address
    needed = [("CA certificate", files.ca)] if files.verify else []
    needed += [("client certificate", files.cert), ("client key", files.key)]
    for what, path in needed:
        if not path.is_file():
            raise LibvirtUnreachable(
                host=host, reason=f"no TLS {what} at {path} (pkipath=DIR holds cacert.pem,"
                " clientcert.pem and clientkey.pem, as virsh reads them)",
            )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        if files.verify:
            context.load_verify_locations(cafile=str(files.ca))
        else:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        context.load_cert_chain(certfile=str(files.cert), keyfile=str(files.key))
    except (OSError, ssl.SSLError) as exc:
        files_named = f"{files.ca}, {files.cert}, {files.key}"
        raise LibvirtUnreachable(
            host=host, reason=f"cannot load the TLS files ({files_named}): {exc}"
        ) from None
    return context


def _tls(sock: socket.socket, target: LibvirtURI, *, host: str) -> socket.socket:
    try:
        wrapped = tls_context(target, host).wrap_socket(sock, server_hostname=target.host)
        # libvirtd sends one byte, 1, once it accepted our certificate (virNetClient).
        check = wrapped.recv(1)
    except BaseException:
        sock.close()
        raise
    if check != b"\1":
        wrapped.close()
        raise LibvirtUnreachable(
            host=host, reason="the daemon refused our TLS client certificate or address"
        )
    return wrapped
