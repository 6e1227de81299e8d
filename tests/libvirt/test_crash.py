"""Coordinators killed mid-migration between two real libvirt daemons, then ``migrator recover``.

The hosts are the namespaced system daemons (``netns.py``), over ``qemu+tcp://``,
``qemu+tls://`` and ``qemu+ssh://``: kills at each failpoint. Kills at random instants are
in ``test_crash_soak.py``; kills while a daemon runs a step, and a daemon restarted after
the crash, in ``test_crash_daemons.py``.

The daemons drop their half of a migration when the coordinator's connection closes: an
incoming guest not yet finished is destroyed, a source paused for the switch-over stays
paused. Recovery must then resume that source when the destination has nothing, and
destroy it only when the destination was seen running. After it: exactly one copy of the
guest runs (or ``IN_DOUBT`` with the source paused), no QEMU runs without a domain, and
``migrator replay`` agrees with the journal (``NsRig.settled``).
"""

from __future__ import annotations

import pytest

from migrator import failpoints
from tests.libvirt.nsrig import NsRig

STEPS = ("begin", "prepare", "perform", "finish", "confirm")
FAILPOINTS = [f"{step}.{point}" for step in STEPS for point in failpoints.POINTS]


def expected_end(failpoint: str) -> str:
    """Where recovery takes a migration whose coordinator died at ``failpoint``.

    Until Finish ran, the destination has nothing once the connection closed: back, the
    source resumed if Perform paused it. From Finish on, the destination runs the guest:
    forward, the source destroyed.
    """
    step = failpoint.partition(".")[0]
    if step in ("begin", "prepare", "perform") or failpoint == "finish.intent":
        return "ROLLED_BACK"
    return "CONFIRMED"


@pytest.mark.parametrize("failpoint", FAILPOINTS)
def test_a_coordinator_killed_at_a_failpoint_is_recovered_to_one_copy(
    ns_rig: NsRig, failpoint: str
) -> None:
    rig = ns_rig
    env = {failpoints.ENV_VAR: f"{failpoint}=crash"}
    code, _ = rig.migrate(env=env)
    assert code == failpoints.CRASH_EXIT_CODE

    code, rows = rig.recover()

    assert code == 0, rows
    [m] = rig.migrations()
    rig.settled(m)
    assert str(m.state) == expected_end(failpoint)
    src = "absent" if str(m.state) == "CONFIRMED" else "running"
    assert rig.states()[0] == src
