"""Where an RPC connection's bytes go: a UNIX socket, TCP, TLS, or ssh's pipes.

``open_channel`` returns a connected ``Channel`` (for TLS: handshaken and checked; for
ssh: the running ``ssh`` on the other end of a socket pair). The RPC client
(``rpc.Connection``) reads and writes ``channel.sock`` whatever it is. TLS lives in
``tls.py``, imported for ``qemu+tls`` only (``ssl`` is a noticeable part of a command's
start-up).
"""

from __future__ import annotations

import contextlib
import socket
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
            from migrator.drivers.libvirt import tls

            return tls.handshake(sock, target, host=host)
        return sock
    except FileNotFoundError:
        reason = f"no socket at {target.address} (is libvirtd running?)"
    except TimeoutError:
        raise LibvirtTimeout(host=host, reason=f"no connection within {timeout:g} s") from None
    except OSError as exc:
        reason = f"cannot connect to {target.address}: {exc.strerror or exc}"
    raise LibvirtUnreachable(host=host, reason=reason)
