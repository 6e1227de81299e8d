"""Protocol v3's flow (``migrator/engine/flows/v3.py``): recovery forward from Perform."""

from __future__ import annotations

import pytest

from migrator.engine.coordinator import Coordinator
from migrator.failpoints import Crash, Failpoints
from migrator.journal.store import Journal
from migrator.records import Event, EventKind
from migrator.states import State, Step
from tests.conftest import Hosts


def _one(history: list[Event], step: Step, kind: EventKind) -> Event:
    [event] = [e for e in history if e.step is step and e.kind == kind]
    return event


@pytest.mark.parametrize("point", ["perform.called", "perform.intent"])
def test_recovery_from_performing_hands_finish_performs_cookie(
    journal: Journal, hosts: Hosts, point: str
) -> None:
    """The transfer completed (or, from ``perform.intent``, never started): recovery must
    not hand Finish Prepare's cookie as if it were Perform's."""
    crashed = Coordinator(journal, failpoints=Failpoints({point: "raise"}))
    with pytest.raises(Crash):
        crashed.migrate("vm1", src=hosts.src, dst=hosts.dst)
    crashed.close()
    [report] = Coordinator(journal, retry_backoff=0.0).recover(steal=True)
    history = journal.history(report.id)
    prepared = _one(history, Step.PREPARE, EventKind.OK)
    finish = next(e for e in history if e.step is Step.FINISH and e.kind == EventKind.INTENT)
    if point == "perform.intent":  # the source never sent it: back, as before
        assert report.result is State.ROLLED_BACK
        assert finish.cancelled
        return
    assert report.result is State.CONFIRMED
    performs = [e for e in history if e.step is Step.PERFORM and e.kind != EventKind.INTENT]
    [performed] = performs
    assert performed.attempt == 2 and performed.detail and performed.detail["recovered"]
    assert performed.cookie_out and performed.cookie_out != prepared.cookie_out
    assert finish.cookie_in == performed.cookie_out
    assert b'"sent"' in finish.cookie_in  # the test driver's Perform cookie says what it sent
