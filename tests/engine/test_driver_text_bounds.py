"""Every text a driver returns is bounded before it is journaled, as cookies are: a
description, a Prepare URI, Perform's stats; a probe's detail over its bound is journaled
as its size alone (``drivers/api.py``)."""

from __future__ import annotations

import uuid
from typing import Any

from migrator.drivers.api import (
    DESCRIPTION_MAX,
    DETAIL_MAX,
    URI_MAX,
    BeginResult,
    DomainState,
    FinishResult,
    MigrationParams,
    PerformResult,
    PrepareResult,
    ProbeResult,
)
from migrator.drivers.null import NullDriver
from migrator.engine.coordinator import Coordinator
from migrator.errors import DriverError
from migrator.journal.store import Journal
from migrator.records import Event, StepContext
from migrator.states import State


class Wordy(NullDriver):
    """A null host whose hooks return texts of the sizes it is given."""

    sizes: dict[str, int]

    def begin(self, ctx: StepContext, params: MigrationParams) -> BeginResult:
        super().begin(ctx, params)
        return BeginResult(description="d" * self.sizes.get("description", 1))

    def prepare(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, description: str
    ) -> PrepareResult:
        super().prepare(ctx, params, cookie, description)
        return PrepareResult(uri="u" * self.sizes.get("uri", 1))

    def perform(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, uri: str
    ) -> PerformResult:
        super().perform(ctx, params, cookie, uri)
        return PerformResult(stats={"note": "s" * self.sizes.get("stats", 1)})


class LostFinish(Wordy):
    """A destination whose Finish(0) runs the domain but loses its reply, and whose probe
    answers with a detail of ``sizes["detail"]`` bytes."""

    def finish(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, cancelled: bool
    ) -> FinishResult:
        super().finish(ctx, params, cookie, cancelled)
        if not cancelled:
            raise DriverError("reply lost")
        return FinishResult(running=False)

    def probe(self, domain: str) -> ProbeResult:
        found = super().probe(domain)
        return ProbeResult(found.state, detail={"blob": "b" * self.sizes["detail"]})


def migrate(journal: Journal, **sizes: int) -> tuple[State, list[Event], Wordy, Wordy]:
    name = uuid.uuid4().hex[:12]
    src = Wordy(f"null://src-{name}")
    dst = (LostFinish if "detail" in sizes else Wordy)(f"null://dst-{name}")
    src.sizes = dst.sizes = sizes
    src.define("vm1")
    coordinator = Coordinator(journal)
    try:
        m = coordinator.migrate("vm1", src=src, dst=dst)
    finally:
        coordinator.close()
    return m.state, journal.history(m.id), src, dst


def errors(history: list[Event]) -> list[tuple[Any, str | None]]:
    return [(e.step, e.error_type) for e in history if e.kind == "error"]


def test_a_description_over_its_bound_fails_begin_and_is_never_journaled(
    journal: Journal,
) -> None:
    state, history, src, dst = migrate(journal, description=DESCRIPTION_MAX + 1)
    assert state is State.FAILED
    assert errors(history) == [("begin", "DriverTextTooLarge")]
    assert str(DESCRIPTION_MAX) in (history[-1].error_message or "")
    assert all(e.description is None for e in history)
    assert (src.domains, dst.domains) == ({"vm1": DomainState.RUNNING}, {})


def test_a_description_at_its_bound_is_accepted(journal: Journal) -> None:
    state, _history, _src, _dst = migrate(journal, description=DESCRIPTION_MAX)
    assert state is State.CONFIRMED


def test_a_prepare_uri_over_its_bound_fails_prepare(journal: Journal) -> None:
    state, history, src, _dst = migrate(journal, uri=URI_MAX + 1)
    assert state is State.ROLLED_BACK
    assert ("prepare", "DriverTextTooLarge") in errors(history)
    assert all(e.uri is None or len(e.uri) <= URI_MAX for e in history)
    assert src.domains == {"vm1": DomainState.RUNNING}


def test_perform_stats_over_their_bound_fail_perform(journal: Journal) -> None:
    state, history, _src, _dst = migrate(journal, stats=DETAIL_MAX)
    assert state is State.ROLLED_BACK
    assert ("perform", "DriverTextTooLarge") in errors(history)


def test_a_probe_detail_over_its_bound_is_journaled_as_its_size(journal: Journal) -> None:
    """The probe after a lost Finish reply still decides (the domain runs on the
    destination); its detail is journaled as its size alone."""
    state, history, _src, _dst = migrate(journal, detail=DETAIL_MAX)
    assert state is State.CONFIRMED
    [probe] = [e for e in history if e.step == "probe"]
    assert probe.detail is not None and "detail" not in probe.detail
    assert probe.detail["detail_bytes"] > DETAIL_MAX
    assert probe.detail["state"] == "running"
