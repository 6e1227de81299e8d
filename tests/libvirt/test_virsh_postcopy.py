"""``virsh migrate --postcopy`` killed at two points of the table in ``docs/postcopy.md``
(``virsh_postcopy_table.py`` makes the whole table), between two system-mode daemons.

libvirt ties both halves of a post-copy migration to ``virsh``'s connections. Killed
after Perform3 (the guest already running on the destination, Finish3 not sent), the
destination's daemon destroys its running copy and the source keeps a copy it will not
resume: the guest runs nowhere. Killed after Finish3, the guest runs on the destination
and the source's QEMU stays paused, its migration job with it, until an operator acts.

``virsh`` reaches the hosts over the network through RPC taps (``nettap.py``), each row
over a transport of its own: killed after Perform3 over ssh, after Finish3 over tls.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import busyguest
from tests.libvirt.conftest import REQUIRE_LIBVIRT
from tests.libvirt.netns import NsPair
from tests.libvirt.virsh_postcopy_table import virsh_killed_at

WATCH_S, STABLE_S = 20.0, 3.0
"""Enough here: nothing is left to send at these two points, so nothing changes later."""


@pytest.fixture(scope="module")
def kernel(ns_pair: NsPair, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return busyguest.build(tmp_path_factory.mktemp("busy"), required=REQUIRE_LIBVIRT)


def test_killed_after_perform3_the_guest_runs_nowhere(ns_pair: NsPair, kernel: Path) -> None:
    outcome = virsh_killed_at(
        ns_pair, kernel, "perform", watch_s=WATCH_S, stable_s=STABLE_S, resume=False,
        transport="ssh",
    )  # fmt: skip
    assert outcome.exit == "SIGKILL"
    assert outcome.first.destination[0] in ("running", "absent")  # destroyed within moments
    assert outcome.last.source == ("paused", "post-copy failed")
    assert outcome.last.destination == ("absent", "")
    assert outcome.last.jobs[0].startswith("Unbounded"), outcome.last.jobs
    assert outcome.runs_on == "nowhere"
    assert ns_pair.stray_qemus() == {}


def test_killed_after_finish3_the_source_stays_paused(ns_pair: NsPair, kernel: Path) -> None:
    outcome = virsh_killed_at(
        ns_pair, kernel, "finish", watch_s=WATCH_S, stable_s=STABLE_S, postcopy_mib=100,
        transport="tls",
    )  # fmt: skip
    assert outcome.exit == "SIGKILL"
    assert outcome.last.source == ("paused", "post-copy failed")
    assert outcome.last.destination == ("running", "migrated")
    assert outcome.last.jobs == ("Unbounded (Outgoing migration)", "none")
    assert outcome.runs_on == "destination"
    assert ns_pair.stray_qemus() == {}
