"""The bytes migrator's RPC client sends, compared with what libvirt's own client (``virsh``)
sends a real daemon for the same calls, captured through an RPC tap (``rpctap.py``): on the
session pair's UNIX socket, and over ``qemu+tcp://``, ``qemu+tls://`` and ``qemu+ssh://``
to a namespaced host (``nettap.py``: the tap sees the plain RPC behind TLS and at the far
end of ssh)."""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator

import pytest

from migrator.drivers.libvirt.procedures import Proc
from migrator.drivers.libvirt.remote import Remote
from migrator.drivers.libvirt.rpc import Connection
from migrator.drivers.libvirt.uri import parse
from tests.libvirt import daemons
from tests.libvirt.conftest import Guest
from tests.libvirt.netns import NsPair
from tests.libvirt.nettap import NetTap
from tests.libvirt.nsrig import TRANSPORTS
from tests.libvirt.rpctap import CALL, REPLY, Gate, Tap

PROCS = (Proc.AUTH_LIST, Proc.CONNECT_OPEN, Proc.DOMAIN_LOOKUP_BY_NAME, Proc.DOMAIN_GET_STATE)

pytestmark = pytest.mark.usefixtures("libvirt_driver")


def _calls(gate: Gate, kind: int = CALL) -> dict[int, bytes]:
    """{proc: the body of its first message of ``kind``} of what went through ``gate``."""
    found: dict[int, bytes] = {}
    for from_client, message in gate.frames:
        _len, _prog, _vers, proc, mtype, _serial, _status = struct.unpack(">IIIiiIi", message[:28])
        if mtype == kind and from_client == (kind == CALL):
            found.setdefault(proc, message[28:])
    return found


@pytest.fixture
def taps(guest: Guest) -> Iterator[tuple[Tap, Tap]]:
    """Two taps in front of the source daemon: one for virsh, one for migrator."""
    tag = uuid.uuid4().hex[:8]
    made = tuple(
        Tap(guest.pair.root / f"wire-{tag}-{who}.sock", guest.src.sock, Gate())
        for who in ("virsh", "ours")
    )
    yield made  # type: ignore[misc]
    for tap in made:
        tap.close()


def _lookup_and_state(uri: str, name: str) -> None:
    """migrator's client looks ``name`` up on ``uri`` and asks for its state."""
    conn = Connection.open(parse(uri), host="src", connect_timeout=10, call_timeout=30)
    try:
        remote = Remote(conn)
        dom = remote.lookup(name)
        assert dom is not None
        remote.state(dom)
    finally:
        conn.close()


def _same_bytes(virsh_gate: Gate, our_gate: Gate) -> None:
    theirs, ours = _calls(virsh_gate), _calls(our_gate)
    for proc in PROCS:
        assert proc in theirs, f"virsh sent no {proc.name}: {sorted(theirs)}"
        assert ours[proc] == theirs[proc], proc.name
    # and the daemon answered both clients with the same domain, byte for byte
    replies = [_calls(g, REPLY)[Proc.DOMAIN_LOOKUP_BY_NAME] for g in (virsh_gate, our_gate)]
    assert replies[0] == replies[1]


def test_lookup_and_state_are_the_bytes_virsh_sends(guest: Guest, taps: tuple[Tap, Tap]) -> None:
    virsh_tap, our_tap = taps
    out = daemons.virsh(virsh_tap.uri, "domstate", guest.name, "--reason")
    assert out.startswith("running")
    _lookup_and_state(our_tap.uri, guest.name)
    _same_bytes(virsh_tap.gate, our_tap.gate)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_over_the_network_they_are_the_bytes_virsh_sends(
    ns_pair: NsPair, ns_guest: str, transport: str
) -> None:
    virsh_tap, our_tap = (NetTap(ns_pair, ns_pair.a, transport, Gate()) for _ in range(2))
    try:
        out = daemons.virsh(virsh_tap.virsh_uri(), "domstate", ns_guest, "--reason")
        assert out.startswith("running")
        _lookup_and_state(our_tap.uri(), ns_guest)
    finally:
        virsh_tap.close()
        our_tap.close()
    _same_bytes(virsh_tap.gate, our_tap.gate)
