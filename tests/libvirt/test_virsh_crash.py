"""libvirt's own client killed after each v3 step (the left half of docs/libvirt.md's table).

The daemons clean up their half of a migration when the client's connection closes, but a
source paused for the switch-over stays paused: ``virsh`` killed after Perform3 leaves no
guest running anywhere, killed after Finish3 leaves a paused source beside the running
destination. migrator's recovery exists for exactly these two rows.
"""

from __future__ import annotations

import pytest

from tests.libvirt.daemons import Pair
from tests.libvirt.virsh_crash_table import virsh_killed_after

LEFT_BEHIND = {
    "begin": ("running", "absent"),
    "prepare": ("running", "absent"),
    "perform": ("paused", "absent"),
    "finish": ("paused", "running"),
}


@pytest.mark.parametrize("step", list(LEFT_BEHIND))
def test_virsh_killed_after_a_step_leaves_what_the_table_says(
    libvirt_pair: Pair, step: str
) -> None:
    outcome = virsh_killed_after(libvirt_pair, step)
    assert outcome.exit == "SIGKILL"
    assert (outcome.source[0], outcome.destination[0]) == LEFT_BEHIND[step]
    assert outcome.stray_qemus == 0
