"""The RPC tap (``rpctap.py``) in front of a namespaced host (``netns.py``), over each
transport, so that a fault placed at an exact point of the protocol runs over the
transport operators use, not only over a UNIX socket.

The tap must see each message's header, so it sits where the RPC is plain:

- ``unix``: a UNIX socket beside the daemon's, as ``rpctap.Tap``.
- ``tcp``: a TCP port of the host's own address (the listening socket is made inside the
  host's network namespace), relayed to the daemon's TCP port (16509): the client connects
  to ``qemu+tcp://ADDR:PORT/system``, across the bridge, so a cut of the host's link cuts
  it too.
- ``tls``: likewise, but the tap terminates TLS as the daemon does: it presents the
  host's own server certificate (the run's CA, the host's address) and asks for a client
  certificate of that CA, then speaks TLS with the run's client certificate to the
  daemon's TLS port (16514). Both legs are real TLS, checked both ways; only the tap sees
  the plain RPC between them (after libvirt's one byte that says the daemon accepted
  the client's certificate, which the tap reads from the daemon and sends the client
  itself). A byte-level tap outside TLS could only cut or stall at a
  byte count, never "after the reply to Finish3".
- ``ssh``: the client runs the real ``ssh`` to the host's ``sshd``, which runs ``nc -U``
  on the tap's UNIX socket (``proxy=netcat&socket=TAP``, libvirt's own parameters)
  instead of the daemon's: the tap sits at the far end of the ssh tunnel, where the RPC
  leaves it.

So every fault of ``Gate`` (a held call, a lost reply, an action before or after a call)
means the same over every transport.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import socket
import ssl
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import TypeVar
from urllib.parse import urlencode

from tests.libvirt.netns import NsHost, NsPair
from tests.libvirt.rpctap import Gate, Relay

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
PORTS = {"tcp": 16509, "tls": 16514}
ALL_TRANSPORTS = ("unix", "tcp", "tls", "ssh")
ACCEPTED = b"\1"
"""What libvirtd sends once TLS is up and it accepted the client's certificate."""


def in_netns(ns: str, make: Callable[[], T]) -> T:
    """``make()`` run with this thread in network namespace ``ns`` (sockets it creates
    stay there), then back in the thread's own."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/thread-self/ns/net") as own, open(f"/run/netns/{ns}") as target:
        if libc.setns(target.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {ns}: {os.strerror(ctypes.get_errno())}")
        try:
            return make()
        finally:
            if libc.setns(own.fileno(), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to this thread's namespace")


def virsh_uri(pair: NsPair, uri: str) -> str:
    """``uri`` of a host of ``pair`` as ``virsh`` takes it: over ssh, the system ``ssh``
    through ``command=``, a script that adds the run's ``known_hosts`` (libvirt's ``ssh``
    transport has no parameter for it), so nothing of the machine's own ssh set-up is read
    or written."""
    if not uri.startswith("qemu+ssh://"):
        return uri
    wrapper = pair.root / "virsh-ssh"
    if not wrapper.exists():
        wrapper.write_text(
            "#!/bin/sh\nexec ssh -o BatchMode=yes -o StrictHostKeyChecking=yes"
            f' -o UserKnownHostsFile={pair.known_hosts} "$@"\n'
        )
        wrapper.chmod(0o755)
    return f"{uri}&{urlencode({'command': str(wrapper)})}"


class NetTap(Relay):
    """A tap in front of ``host`` of ``pair``, reached over ``transport``."""

    def __init__(self, pair: NsPair, host: NsHost, transport: str, gate: Gate) -> None:
        if transport not in ALL_TRANSPORTS:
            raise ValueError(f"transport {transport!r} not in {ALL_TRANSPORTS}")
        self.pair, self.host, self.transport, self.gate = pair, host, transport, gate
        self.path = pair.root / f"tap-{host.name}-{uuid.uuid4().hex[:8]}.sock"
        if transport in PORTS:
            listener = in_netns(host.ns, lambda: socket.create_server((host.addr, 0)))
            self.port = int(listener.getsockname()[1])
        else:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(str(self.path))
        self._serve(listener)

    def uri(self, **params: str) -> str:
        """The host's URI over this transport, through the tap."""
        if self.transport == "unix":
            return self.pair.uri(self.host, "unix", socket=str(self.path), **params)
        if self.transport == "ssh":
            return self.pair.uri(self.host, "ssh", proxy="netcat", socket=str(self.path),
                                 **params)  # fmt: skip
        uri = self.pair.uri(self.host, self.transport, **params)
        return uri.replace(f"//{self.host.addr}/", f"//{self.host.addr}:{self.port}/", 1)

    def virsh_uri(self) -> str:
        """The URI ``virsh`` reaches the host with through the tap (``virsh_uri``)."""
        return virsh_uri(self.pair, self.uri())

    def _open_client(self, sock: socket.socket) -> socket.socket:
        if self.transport != "tls":
            return sock
        tls = self.host.home / "tls"
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls / "servercert.pem", tls / "serverkey.pem")
        context.load_verify_locations(tls / "cacert.pem")
        context.verify_mode = ssl.CERT_REQUIRED  # as libvirtd: a client certificate of the CA
        context.num_tickets = 0  # libvirt's client takes any record after the handshake
        # for the daemon's one byte of acceptance (and fails on a session ticket)
        wrapped = context.wrap_socket(sock, server_side=True)
        wrapped.sendall(ACCEPTED)
        return _plain(wrapped)

    def _open_upstream(self) -> socket.socket:
        if self.transport not in PORTS:
            daemon = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                daemon.connect(str(self.host.sock))
            except OSError:
                daemon.close()
                raise
            return daemon
        sock = socket.create_connection((self.host.addr, PORTS[self.transport]), timeout=10)
        sock.settimeout(None)
        if self.transport == "tcp":
            return sock
        pki = self.pair.pki
        context = ssl.create_default_context(cafile=str(pki / "cacert.pem"))
        context.load_cert_chain(pki / "clientcert.pem", pki / "clientkey.pem")
        try:
            wrapped = context.wrap_socket(sock, server_hostname=self.host.addr)
            if wrapped.recv(1) != ACCEPTED:
                raise OSError(f"{self.host.addr} refused the client certificate")
        except OSError:
            sock.close()
            raise
        return _plain(wrapped)

    def close(self) -> None:
        super().close()
        self.path.unlink(missing_ok=True)


def _plain(tls: ssl.SSLSocket) -> socket.socket:
    """One end of a socket pair whose other end a thread relays to and from ``tls``: the
    tap reads whole messages from it while one thread alone drives the TLS connection (an
    OpenSSL connection is not for two threads at once)."""
    ours, theirs = socket.socketpair()
    threading.Thread(target=_bridge, args=(tls, theirs), daemon=True).start()
    return ours


def _bridge(tls: ssl.SSLSocket, plain: socket.socket) -> None:
    try:
        while True:
            ready = [tls] if tls.pending() else select.select([tls, plain], [], [])[0]
            if tls in ready:
                tls.setblocking(False)  # readable may be a TLS record with no data (a ticket)
                try:
                    data = tls.recv(65536)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    data = None
                finally:
                    tls.setblocking(True)
                if data == b"":
                    break
                if data:
                    plain.sendall(data)
            if plain in ready:
                data = plain.recv(65536)
                if not data:
                    break
                tls.sendall(data)
    except OSError:
        pass
    for s in (tls, plain):
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            s.close()


@contextlib.contextmanager
def net_tapped(
    pair: NsPair, transport: str, gate: Gate, migrate_uri: str
) -> Iterator[tuple[str, str]]:
    """Host ``a``'s and host ``b``'s URIs over ``transport`` through taps sharing ``gate``;
    ``b``'s with ``migrate_uri``."""
    src, dst = net_taps(pair, transport, gate)
    try:
        yield src.uri(), dst.uri(migrate_uri=migrate_uri)
    finally:
        src.close()
        dst.close()


def net_taps(pair: NsPair, transport: str, gate: Gate) -> tuple[NetTap, NetTap]:
    """Taps in front of host ``a`` and host ``b`` over ``transport``, sharing ``gate``; the
    caller closes both."""
    src = NetTap(pair, pair.a, transport, gate)
    try:
        return src, NetTap(pair, pair.b, transport, gate)
    except BaseException:
        src.close()
        raise
