"""What a recovered migration says about itself: its end reason (``migrations.reason``).

The reason is the one-line answer to "why did this migration end so?", shown by ``list``
and ``show``; after recovery it must still name the original cause and any warning about
what the destination may hold, not the noise of a retry that later succeeded.
"""

from __future__ import annotations

import pytest

from migrator.engine.coordinator import Coordinator
from migrator.journal.store import Journal
from migrator.records import Migration
from tests.conftest import Hosts

ATTEMPTS = 2


def _migrate_then_recover(journal: Journal, hosts: Hosts) -> tuple[Migration, Migration]:
    """Migrate until Confirm runs out of attempts (CONFIRMING), then recover it."""
    first = Coordinator(journal, confirm_attempts=ATTEMPTS, retry_backoff=0.0)
    try:
        stuck = first.migrate("vm1", src=hosts.src, dst=hosts.dst)
    finally:
        first.close()
    assert stuck.state.value == "CONFIRMING"
    assert stuck.reason is not None and "`migrator recover` retries it" in stuck.reason
    second = Coordinator(journal, confirm_attempts=ATTEMPTS, retry_backoff=0.0)
    try:
        [report] = second.recover(steal=True)  # the first coordinator is this process
    finally:
        second.close()
    return stuck, journal.get(report.id)


def test_rolled_back_by_recover_after_confirm_retries_keeps_the_original_cause(
    journal: Journal, hosts: Hosts
) -> None:
    hosts.src.set_fault("perform", "error", message="disk on fire")
    hosts.src.set_fault("confirm", "error", count=ATTEMPTS)
    _, m = _migrate_then_recover(journal, hosts)
    assert m.state.value == "ROLLED_BACK"
    assert m.reason == "perform failed: disk on fire"


@pytest.mark.no_replay  # cleanup Finish gave up after 2 attempts; replay's coordinator tries 5
def test_rolled_back_by_recover_keeps_the_warning_that_dst_may_hold_a_copy(
    journal: Journal, hosts: Hosts
) -> None:
    # Every cleanup Finish(cancelled=1) fails: the source is resumed all the same and the
    # reason warns that an incoming copy may remain on the destination; Confirm then needs
    # recover. The warning must survive: the copy is still there.
    hosts.src.set_fault("perform", "error")
    hosts.dst.set_fault("finish", "error")
    hosts.src.set_fault("confirm", "error", count=ATTEMPTS)
    _, m = _migrate_then_recover(journal, hosts)
    assert m.state.value == "ROLLED_BACK"
    assert hosts.states("vm1") == ("running", "incoming")
    assert m.reason is not None and "an incoming copy that never ran may remain" in m.reason
