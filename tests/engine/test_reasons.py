"""The reason a migration ends with names the cause, not what came after it."""

from __future__ import annotations

from migrator.engine.coordinator import Coordinator
from migrator.journal.store import Journal
from migrator.states import State
from tests.conftest import Hosts


def test_a_failed_prepare_whose_cleanup_fails_too_names_the_prepare_failure(
    journal: Journal, hosts: Hosts
) -> None:
    hosts.dst.set_fault("prepare", "error", message="no space for the guest")
    hosts.dst.set_fault("finish", "error", message="cleanup failed too")
    m = Coordinator(journal, retry_backoff=0.0).migrate("vm1", src=hosts.src, dst=hosts.dst)
    assert m.state is State.ROLLED_BACK
    assert m.reason is not None
    assert m.reason.startswith("prepare failed: no space for the guest; destination cleanup")


def test_resolving_to_the_source_while_the_destination_runs_blames_no_driver(
    journal: Journal, hosts: Hosts
) -> None:
    hosts.dst.set_fault("finish", "lost-reply", count=1)  # it ran; its answer was lost
    hosts.dst.set_fault("probe", "error", count=2)  # pre-flight, then the one after Finish
    m = Coordinator(journal).migrate("vm1", src=hosts.src, dst=hosts.dst)
    assert m.state is State.IN_DOUBT
    assert hosts.states("vm1")[1] == "running"
    operator = Coordinator(
        journal, connect={hosts.src_uri: hosts.src, hosts.dst_uri: hosts.dst}.__getitem__
    )
    end = operator.resolve(m.id[:8], running_on="src")
    assert end.state is State.IN_DOUBT
    assert end.reason is not None
    assert "broken driver" not in end.reason
    assert end.reason.startswith("resolved to the source, but the destination still reports")
    assert f"migrator resolve {m.id[:8]} --running-on dst" in end.reason
