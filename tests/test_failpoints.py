"""Failpoints: inert unless set, strict about their syntax."""

from __future__ import annotations

import pytest

from migrator import failpoints
from migrator.coordinator import Coordinator
from migrator.errors import UsageError
from migrator.journal.store import Journal


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


def test_unset_means_inert(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(failpoints.ENV_VAR, raising=False)
    assert failpoints.active() == {}
    failpoints.hit("perform.intent")  # returns: nothing armed


def test_a_malformed_variable_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, journal: Journal
) -> None:
    monkeypatch.setenv(failpoints.ENV_VAR, "perform.intent=boom")
    with pytest.raises(UsageError, match="MIGRATOR_FAILPOINTS"):
        Coordinator(journal)
