"""Failpoints: inert unless armed, strict about their syntax, read from the environment
only by ``Failpoints.from_env`` (the command line's one call)."""

from __future__ import annotations

import pytest

from migrator import failpoints
from migrator.engine.coordinator import Coordinator
from migrator.errors import UsageError
from migrator.failpoints import Crash, Failpoints
from migrator.journal.store import Journal
from tests.conftest import Hosts


def test_parse_accepts_step_points_and_crash() -> None:
    assert failpoints.parse("perform.intent=crash, finish.called=crash") == {
        "perform.intent": "crash",
        "finish.called": "crash",
    }


@pytest.mark.parametrize(
    "spec", ["perform=crash", "perform.intent=explode", "perform.intent", "x.y=crash"]
)
def test_parse_refuses_anything_else(spec: str) -> None:
    with pytest.raises(ValueError, match="bad failpoint"):
        failpoints.parse(spec)


def test_postcopy_is_a_request_only_on_perform_underway() -> None:
    armed = Failpoints(failpoints.parse("perform.underway=postcopy,postcopy.underway=crash"))
    assert armed.asks("perform", "underway", "postcopy")
    assert not armed.asks("postcopy", "underway", "postcopy")
    armed.hit("perform", "underway")  # a request, not a crash: nothing happens
    with pytest.raises(ValueError, match=r"postcopy only on perform\.underway"):
        failpoints.parse("finish.underway=postcopy")


def test_unset_means_inert() -> None:
    armed = Failpoints.from_env({})
    assert not armed and armed.armed == {}
    assert armed.hit("perform", "intent") is None


def test_a_point_fires_only_where_armed() -> None:
    armed = Failpoints.from_env({failpoints.ENV_VAR: "perform.intent=raise"})
    armed.hit("perform", "called")
    armed.hit("finish", "intent")
    with pytest.raises(Crash, match=r"perform\.intent"):
        armed.hit("perform", "intent")


def test_a_malformed_variable_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="MIGRATOR_FAILPOINTS"):
        Failpoints.from_env({failpoints.ENV_VAR: "perform.intent=boom"})


def test_the_coordinator_never_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch, journal: Journal, hosts: Hosts
) -> None:
    """Failpoints are passed in: an armed variable does nothing to a library caller."""
    monkeypatch.setenv(failpoints.ENV_VAR, "perform.intent=raise")
    m = Coordinator(journal).migrate("vm1", src=hosts.src, dst=hosts.dst)
    assert m.state.value == "CONFIRMED"


def test_passed_failpoints_stop_the_migration_where_armed(journal: Journal, hosts: Hosts) -> None:
    armed = Failpoints({"perform.intent": "raise"})
    with pytest.raises(Crash):
        Coordinator(journal, failpoints=armed).migrate("vm1", src=hosts.src, dst=hosts.dst)
    [m] = journal.list()
    assert m.state.value == "PERFORMING"
