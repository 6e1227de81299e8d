"""A destination daemon restarted (3 s down) right after Finish3 ran, its reply lost: the
probe that follows asks again until the daemon is back, so the migration ends by itself
(CONFIRMED here: the restarted daemon reconnects to the guest Finish3 started), never
IN_DOUBT. Each failed attempt is in the timeline.

Both hosts are reached through RPC taps (``nettap.py``) over ``qemu+tcp://``,
``qemu+tls://`` and ``qemu+ssh://`` (every new connection to the restarted daemon is a new
TCP connection, TLS handshake or ssh session): the destination's tap drops Finish3's reply,
stops the daemon before the coordinator can notice, and a thread starts it again 3 s after
the stop began; meanwhile the taps reset every new connection at once (where the host itself
would refuse it).
"""

from __future__ import annotations

import threading
import time

from migrator.drivers.libvirt.procedures import Proc
from migrator.states import Step
from tests.libvirt.nsrig import NsRig
from tests.libvirt.rpctap import Gate

DOWN_S = 3.0


def test_a_destination_restarted_after_finish3_ends_the_migration_by_itself(
    ns_rig: NsRig,
) -> None:
    rig, b = ns_rig, ns_rig.pair.b
    started: list[threading.Thread] = []

    def restart() -> None:
        began = time.monotonic()
        b.stop_libvirtd()

        def start() -> None:
            time.sleep(max(0.0, DOWN_S - (time.monotonic() - began)))
            b.start_libvirtd()

        started.append(threading.Thread(target=start))
        started[0].start()

    gate = Gate()
    gate.cut_reply(Proc.DOMAIN_MIGRATE_FINISH3_PARAMS, on_cut=restart)
    try:
        with rig.tapped(gate) as (src, dst):
            proc = rig.cli(*rig.argv(src=src, dst=dst))
    finally:
        for thread in started:
            thread.join(30)
    assert gate.cut.is_set(), "Finish3's reply was never cut"
    [m] = rig.migrations()
    assert str(m.state) in ("CONFIRMED", "ROLLED_BACK"), (m.state, m.reason, proc.stderr)
    probes = [e for e in rig.history(m.id) if e.step is Step.PROBE]
    failed = [e for e in probes if e.kind == "error"]
    assert failed, "the daemon was down: the first probe cannot have answered"
    assert all("retry_in" in (e.detail or {}) for e in failed)
    assert [e.attempt for e in probes] == list(range(1, len(probes) + 1))
    assert probes[-1].kind == "ok"
    rig.settled(m)
