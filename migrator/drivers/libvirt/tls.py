"""TLS for ``qemu+tls://``: a client context from libvirt's certificate layout, and the
handshake, after which libvirtd says whether it accepted the client's certificate.

Imported by ``sockets.open_socket`` for a TLS host only.
"""

from __future__ import annotations

import socket
import ssl

from migrator.drivers.libvirt.errors import LibvirtUnreachable
from migrator.drivers.libvirt.uri import LibvirtURI


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


def handshake(sock: socket.socket, target: LibvirtURI, *, host: str) -> socket.socket:
    """``sock``, connected to ``target``, wrapped in TLS and accepted by the daemon; a failed
    handshake is ``LibvirtUnreachable`` naming ``host`` (and the CA, when it did not check)."""
    try:
        return _handshake(sock, target, host=host)
    except ssl.SSLError as exc:
        reason = f"TLS handshake failed: {exc.reason or exc}"
        if exc.reason == "CERTIFICATE_VERIFY_FAILED" and target.tls is not None:
            reason += (
                f"; the daemon's certificate does not check against {target.tls.ca} (give"
                " the CA that signed it, pkipath=DIR, or no_verify=1 to skip the check)"
            )
    raise LibvirtUnreachable(host=host, reason=reason)


def _handshake(sock: socket.socket, target: LibvirtURI, *, host: str) -> socket.socket:
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
