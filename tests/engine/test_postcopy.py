"""Post-copy's failure rules on test hosts, in the process that drives the migration
(docs/postcopy.md): after the switch's intent every failure goes forward."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrator.inspect import show
from migrator.journal.store import Journal
from tests.conftest import Hosts, assert_replays_consistently, run_cli

SWITCH = {"MIGRATOR_FAILPOINTS": "perform.underway=postcopy"}


@pytest.fixture
def db(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'journal.db'}"
    Journal.open(url, upgrade=True).close()
    yield url
    assert_replays_consistently(url)  # today's engine decides as the journal says


def migrate(db: str, hosts: Hosts, *extra: str, env: dict[str, str] | None = None) -> Any:
    argv = ["migrate", "vm1", "--src", hosts.src_uri, "--dst", hosts.dst_uri, "--live"]
    return run_cli(*argv, "--flag", "postcopy", "--bandwidth", "16", *extra, db=db, env=env)


def only(db: str) -> dict[str, Any]:
    with Journal.open(db) as journal:
        [m] = journal.list()
        return show(journal, m.id)


def steps(m: dict[str, Any]) -> list[tuple[str | None, str, str]]:
    return [(e["step"], e["kind"], e["state"]) for e in m["events"]]


def test_a_perform_whose_reply_is_lost_after_the_switch_goes_forward(db: str, hosts: Hosts) -> None:
    """Without post-copy a lost Perform reply cancels; after the switch the source is
    asked where post-copy is (completed) and the migration goes on to CONFIRMED."""
    hosts.src.set_fault("perform", "lost-reply")
    proc = migrate(db, hosts, env=SWITCH)
    assert proc.returncode == 0, proc.stderr
    m = only(db)
    assert m["state"] == "CONFIRMED"
    assert ("perform", "error", "POSTCOPY_PAUSED") in steps(m)
    assert ("postcopy_resume", "ok", "PERFORMED") in steps(m)
    assert not [e for e in m["events"] if e["cancelled"]]
    assert hosts.states("vm1") == ("absent", "running")


def test_resumptions_that_fail_are_retried_until_one_succeeds(db: str, hosts: Hosts) -> None:
    hosts.src.set_fault("perform", "lost-reply")
    hosts.src.set_fault("postcopy_resume", "error", count=2)
    proc = migrate(db, hosts, env=SWITCH)
    assert proc.returncode == 0, proc.stderr
    m = only(db)
    resumed = [(e["kind"], e["attempt"]) for e in m["events"] if e["step"] == "postcopy_resume"]
    assert resumed == [
        ("intent", 1), ("error", 1), ("intent", 2), ("error", 2), ("intent", 3), ("ok", 3)
    ]  # fmt: skip
    assert m["state"] == "CONFIRMED"


def test_a_switch_the_source_refuses_still_goes_forward(db: str, hosts: Hosts) -> None:
    """The intent is the point of no return: a failed switch is an error event, and the
    transfer carries on to Finish(cancelled=0)."""
    hosts.src.set_fault("postcopy", "error")
    proc = migrate(db, hosts, env=SWITCH)
    assert proc.returncode == 0, proc.stderr
    m = only(db)
    assert ("postcopy", "error", "POSTCOPY_SWITCHING") in steps(m)
    assert ("perform", "ok", "PERFORMED") in steps(m)
    assert m["state"] == "CONFIRMED"


def test_a_lost_destination_after_the_switch_is_in_doubt_not_rolled_back(
    db: str, hosts: Hosts
) -> None:
    """Finish finds no domain after post-copy: the source only has the pages of the
    switch, so nothing is resumed there; IN_DOUBT, exit 3, with what to do."""
    hosts.dst.set_fault("finish", "no-domain")
    proc = migrate(db, hosts, env=SWITCH)
    assert proc.returncode == 3, proc.stderr
    m = only(db)
    assert m["state"] == "IN_DOUBT"
    assert "`migrator resolve`" in m["reason"]
    assert hosts.states("vm1")[0] == "paused"


def test_without_the_flag_nothing_switches(db: str, hosts: Hosts) -> None:
    """``switch`` needs a post-copy capable Perform underway: without ``--flag postcopy``
    the request is ignored, nothing journaled."""
    proc = run_cli(
        "migrate", "vm1", "--src", hosts.src_uri, "--dst", hosts.dst_uri, "--live", db=db,
        env=SWITCH,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    m = only(db)
    assert "postcopy" not in {e["step"] for e in m["events"]}


def test_a_host_without_the_feature_is_refused_in_one_line() -> None:
    """A QMP host whose QEMU cannot open userfaultfd does not offer the feature."""
    from migrator.drivers.api import Feature
    from migrator.engine.preflight import refuse_postcopy
    from migrator.errors import UsageError
    from migrator.flags import MigrateFlags

    plain = frozenset({Feature.MIGRATION_V3})
    both = frozenset({Feature.MIGRATION_V3, Feature.POSTCOPY})
    refuse_postcopy(MigrateFlags.LIVE, {"qmp:///a": plain}, 3)  # not asked: nothing to refuse
    refuse_postcopy(MigrateFlags.POSTCOPY, {"qmp:///a": both, "qmp:///b": both}, 3)
    with pytest.raises(UsageError) as caught:
        refuse_postcopy(MigrateFlags.POSTCOPY, {"qmp:///a": both, "qmp:///b": plain}, 3)
    assert str(caught.value) == (
        "flag postcopy is refused: host qmp:///b cannot switch a migration to post-copy and"
        " resume it after a failure; migrate without it"
    )
    with pytest.raises(UsageError, match="post-copy needs protocol v3"):
        refuse_postcopy(MigrateFlags.POSTCOPY, {"qmp:///a": both}, 2)


def test_when_resumptions_run_out_recover_carries_on(db: str, hosts: Hosts) -> None:
    """Every resumption fails: the migration stays POSTCOPY_PAUSED, saying so; once the
    host answers again, ``recover`` resumes it to CONFIRMED."""
    from migrator.engine.coordinator import Coordinator
    from migrator.failpoints import Failpoints
    from migrator.flags import MigrateFlags
    from migrator.states import State, Step

    hosts.src.set_fault("perform", "lost-reply")
    hosts.src.set_fault("postcopy_resume", "error", message="the source does not answer")
    flags = MigrateFlags.LIVE | MigrateFlags.POSTCOPY
    with Journal.open(db) as journal:
        switching = Failpoints({"perform.underway": "postcopy"})
        coordinator = Coordinator(journal, retry_backoff=0.0, failpoints=switching)
        m = coordinator.migrate("vm1", src=hosts.src, dst=hosts.dst, flags=flags, bandwidth=16)
        coordinator.close()
        assert m.state is State.POSTCOPY_PAUSED
        assert m.reason == "post-copy paused after 30 resumptions; `migrator recover` resumes it"
        assert hosts.states("vm1") == ("paused", "running")
        hosts.src.clear_faults()
        [report] = Coordinator(journal, retry_backoff=0.0).recover(steal=True)
        assert report.result is State.CONFIRMED
        events = journal.history(m.id)
    resumed = [e.attempt for e in events if e.step is Step.POSTCOPY_RESUME]
    assert resumed[-2:] == [31, 31] and max(resumed) == 31
    assert hosts.states("vm1") == ("absent", "running")
