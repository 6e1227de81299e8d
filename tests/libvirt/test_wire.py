"""The bytes migrator's RPC client sends, compared with what libvirt's own client (``virsh``)
sends a real daemon for the same calls, captured through an RPC tap (``rpctap.py``)."""

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
from tests.libvirt.rpctap import CALL, REPLY, Gate, Tap

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


def test_lookup_and_state_are_the_bytes_virsh_sends(guest: Guest, taps: tuple[Tap, Tap]) -> None:
    virsh_tap, our_tap = taps
    out = daemons.virsh(virsh_tap.uri, "domstate", guest.name, "--reason")
    assert out.startswith("running")
    conn = Connection.open(parse(our_tap.uri), host="src", connect_timeout=10, call_timeout=30)
    try:
        remote = Remote(conn)
        dom = remote.lookup(guest.name)
        assert dom is not None
        remote.state(dom)
    finally:
        conn.close()
    theirs, ours = _calls(virsh_tap.gate), _calls(our_tap.gate)
    procs = (Proc.AUTH_LIST, Proc.CONNECT_OPEN, Proc.DOMAIN_LOOKUP_BY_NAME, Proc.DOMAIN_GET_STATE)
    for proc in procs:
        assert proc in theirs, f"virsh sent no {proc.name}: {sorted(theirs)}"
        assert ours[proc] == theirs[proc], proc.name
    # and the daemon answered both clients with the same domain, byte for byte
    replies = [_calls(t.gate, REPLY)[Proc.DOMAIN_LOOKUP_BY_NAME] for t in taps]
    assert replies[0] == replies[1]
