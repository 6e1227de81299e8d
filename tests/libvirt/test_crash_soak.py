"""The SIGKILL soak between two real libvirt daemons: ``migrator migrate`` killed at a random
instant of its first 3.5 s, ``SOAK_KILLS`` times (``MIGRATOR_LIBVIRT_SOAK=N``, 20 by
default; ``MIGRATOR_SOAK_SEED`` replays a run), each time on a fresh journal and guest,
then ``migrator recover``: every kill ends with one copy of the guest (``NsRig.settled``),
or was before anything was journaled and left the guest where it was. The hosts are the
namespaced system daemons (``netns.py``), reached over ``qemu+tcp://``, ``qemu+tls://`` and
``qemu+ssh://`` in turn, kill after kill.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import pytest

from migrator.journal.store import Journal
from tests.crash.forkserver import SERVER
from tests.libvirt import guests
from tests.libvirt.netns import NsPair
from tests.libvirt.nsrig import CLI_TIMEOUT, TRANSPORTS, NsRig

SOAK_KILLS = int(os.environ.get("MIGRATOR_LIBVIRT_SOAK", "20"))
SOAK_WINDOW_S = 3.5
"""A migration of the tiny guest takes 2-3 s here, most of it in Confirm: kills land anywhere."""


@pytest.mark.timeout(60 + 20 * SOAK_KILLS)
def test_sigkill_soak_every_kill_is_recovered_to_one_copy(ns_pair: NsPair, tmp_path: Path) -> None:
    """Between the namespaced hosts, over each network transport in turn."""
    seed = int(os.environ.get("MIGRATOR_SOAK_SEED", "0")) or random.randrange(1 << 32)
    print(f"MIGRATOR_SOAK_SEED={seed}")
    rng = random.Random(seed)
    ends: dict[str, int] = {}
    for round_ in range(SOAK_KILLS):
        transport = TRANSPORTS[round_ % len(TRANSPORTS)]
        rig = _fresh_rig(ns_pair, tmp_path / f"round-{round_}.db", transport)
        try:
            child = rig.spawn()
            time.sleep(rng.uniform(0.0, SOAK_WINDOW_S))
            SERVER.kill(child)
            SERVER.wait(child, CLI_TIMEOUT)
            code, rows = rig.recover()
            assert code == 0, (seed, round_, transport, rows)
            end = _settled_or_never_started(rig)
        finally:
            for host in ns_pair.hosts():
                guests.destroy(host, rig.name)  # type: ignore[arg-type]
        ends[end] = ends.get(end, 0) + 1
    print(json.dumps(ends))
    assert set(ends) <= {"CONFIRMED", "ROLLED_BACK", "not started"}, ends


def _settled_or_never_started(rig: NsRig) -> str:
    """The end of the round's migration; ``"not started"`` if killed before it was journaled."""
    if migrations := rig.migrations():
        rig.settled(migrations[0])
        return str(migrations[0].state)
    assert rig.states() == ("running", "absent")
    assert rig.pair.stray_qemus() == {}
    return "not started"


def _fresh_rig(pair: NsPair, path: Path, transport: str) -> NsRig:
    db = f"sqlite:///{path}"
    Journal.open(db, upgrade=True).close()
    name = guests.unique_name("soak")
    guests.create(pair.a, name, guests.domain_xml(name))  # type: ignore[arg-type]
    return NsRig(pair, db, name, transport)
