"""libvirt's own client killed after each v3 step, over the network: ``test_virsh_crash.py``'s
table between the namespaced system hosts (``netns.py``), reached by ``virsh`` over
``qemu+tcp://``, ``qemu+tls://`` and ``qemu+ssh://`` (conftest's ``transport``), each step
over each, through RPC taps on that transport (``nettap.py``): what the daemons leave behind
does not depend on how the dead client reached them.

Over ssh, ``virsh`` runs the system ``ssh`` through ``command=``, a script that adds the
run's ``known_hosts`` (``NetTap.virsh_uri``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.libvirt import guests
from tests.libvirt.daemons import free_port
from tests.libvirt.netns import NsPair
from tests.libvirt.nettap import net_taps
from tests.libvirt.rpctap import Gate
from tests.libvirt.virsh_crash_table import PROC, VIRSH_TIMEOUT_S

LEFT_BEHIND = {
    "begin": ("running", "absent"),
    "prepare": ("running", "absent"),
    "perform": ("paused", "absent"),
    "finish": ("paused", "running"),
}
SETTLE_TIMEOUT_S = 30.0


def _states(pair: NsPair, name: str) -> tuple[str, str]:
    return guests.state(pair.a, name)[0], guests.state(pair.b, name)[0]  # type: ignore[arg-type]


@pytest.mark.parametrize("step", list(LEFT_BEHIND))
def test_virsh_killed_after_a_step_leaves_what_the_table_says(
    ns_pair: NsPair, step: str, transport: str, tmp_path: Path
) -> None:
    pair, name = ns_pair, guests.unique_name("v")
    guests.create(pair.a, name, guests.domain_xml(name))  # type: ignore[arg-type]
    gate = Gate()
    procs: list[subprocess.Popen[bytes]] = []
    gate.hold_after(PROC[step], lambda: os.kill(procs[0].pid, signal.SIGKILL))
    src, dst = net_taps(pair, transport, gate)
    try:
        argv = ["virsh", "-c", src.virsh_uri(), "migrate", "--live", name, dst.virsh_uri(),
                "--migrateuri", f"tcp://{pair.b.addr}:{free_port()}"]  # fmt: skip
        with open(tmp_path / "virsh.err", "wb") as err:
            procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err,
                                          start_new_session=True))  # fmt: skip
            code = procs[0].wait(timeout=VIRSH_TIMEOUT_S)
        assert code == -signal.SIGKILL, (tmp_path / "virsh.err").read_text()
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while (states := _states(pair, name)) != LEFT_BEHIND[step]:
            assert time.monotonic() < deadline, states
            time.sleep(0.1)
        assert pair.stray_qemus() == {}
    finally:
        if procs:  # ssh, if virsh left it behind
            with contextlib.suppress(ProcessLookupError):
                os.killpg(procs[0].pid, signal.SIGKILL)
        src.close()
        dst.close()
        for host in pair.hosts():
            guests.destroy(host, name)  # type: ignore[arg-type]
