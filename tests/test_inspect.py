"""Post-mortem queries on real journals (SQLite and PostgreSQL): list filters, stats,
export, prune. Migrations run between in-process null hosts, so each costs milliseconds."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from migrator import failpoints, inspect
from migrator.drivers.api import FinishResult, MigrationParams, PerformResult, ProbeResult
from migrator.drivers.null import NullDriver
from migrator.engine.coordinator import Coordinator
from migrator.failpoints import Failpoints
from migrator.journal.store import Journal
from migrator.records import StepContext
from migrator.states import TERMINAL, State


class PerformFails(NullDriver):
    def perform(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, uri: str
    ) -> PerformResult:
        raise OSError("link down")


class FinishUnknowable(NullDriver):
    """Finish raises and the host cannot be probed: the migration goes IN_DOUBT."""

    def finish(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, cancelled: bool
    ) -> FinishResult:
        raise RuntimeError("reply lost")

    def probe(self, domain: str) -> ProbeResult:
        raise ConnectionError("host unreachable")


def hosts(
    src_cls: type[NullDriver] = NullDriver, dst_cls: type[NullDriver] = NullDriver
) -> tuple[NullDriver, NullDriver]:
    name = uuid.uuid4().hex[:10]
    src, dst = src_cls(f"null://src-{name}"), dst_cls(f"null://dst-{name}")
    src.define("vm1")
    return src, dst


def run(journal: Journal, src: NullDriver, dst: NullDriver, domain: str = "vm1") -> str:
    coordinator = Coordinator(journal, confirm_attempts=1, retry_backoff=0)
    try:
        return coordinator.migrate(domain, src=src, dst=dst).id
    finally:
        coordinator.close()


def crash_in_performing(journal: Journal, monkeypatch: pytest.MonkeyPatch) -> str:
    src, dst = hosts()
    coordinator = Coordinator(journal, failpoints=Failpoints({"perform.intent": "raise"}))
    with pytest.raises(failpoints.Crash):
        coordinator.migrate("vm1", src=src, dst=dst)
    coordinator.close()
    [m] = [m for m in journal.list() if m.state is State.PERFORMING]
    return m.id


@dataclass
class Mixed:
    journal: Journal
    confirmed: str
    rolled_back: str
    in_doubt: str
    performing: str


@pytest.fixture
def mixed(journal: Journal, monkeypatch: pytest.MonkeyPatch) -> Iterator[Mixed]:
    """Four migrations, oldest first: CONFIRMED, ROLLED_BACK, IN_DOUBT, PERFORMING."""
    confirmed = run(journal, *hosts())
    rolled_back = run(journal, *hosts(src_cls=PerformFails))
    in_doubt = run(journal, *hosts(dst_cls=FinishUnknowable))
    performing = crash_in_performing(journal, monkeypatch)
    yield Mixed(journal, confirmed, rolled_back, in_doubt, performing)


def test_states_of_the_mixed_journal(mixed: Mixed) -> None:
    got = {m.id: m.state for m in mixed.journal.list()}
    assert got == {
        mixed.confirmed: State.CONFIRMED,
        mixed.rolled_back: State.ROLLED_BACK,
        mixed.in_doubt: State.IN_DOUBT,
        mixed.performing: State.PERFORMING,
    }


# -- list filters -------------------------------------------------------------------------------


def test_list_host_matches_source_or_destination(journal: Journal) -> None:
    src, dst = hosts()
    mid = run(journal, src, dst)
    run(journal, *hosts())
    assert [m.id for m in journal.list(host=src.uri)] == [mid]
    assert [m.id for m in journal.list(host=dst.uri.removeprefix("null://"))] == [mid]


def test_list_host_treats_like_wildcards_as_text(journal: Journal) -> None:
    run(journal, *hosts())
    assert journal.list(host="%") == []
    assert journal.list(host="_") == []


def test_list_domain_matches_the_name_on_either_host(journal: Journal) -> None:
    src, dst = hosts()
    src.define("vm2")
    coordinator = Coordinator(journal)
    renamed = coordinator.migrate("vm2", src=src, dst=dst, dname="vm2-new").id
    plain = run(journal, src, dst)
    assert [m.id for m in journal.list(domain="vm2-new")] == [renamed]
    assert [m.id for m in journal.list(domain="vm1")] == [plain]


def test_list_since_and_until_bound_the_creation_time(journal: Journal) -> None:
    first = run(journal, *hosts())
    middle = datetime.now(UTC)
    second = run(journal, *hosts())
    assert [m.id for m in journal.list(until=middle)] == [first]
    assert [m.id for m in journal.list(since=middle)] == [second]
    assert journal.list(since=middle, until=middle - timedelta(seconds=1)) == []


# -- stats ----------------------------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert inspect.percentile(values, 0.5) == 50.0
    assert inspect.percentile(values, 0.95) == 95.0
    assert inspect.percentile([7.0], 0.95) == 7.0


def test_stats_counts_outcomes_steps_and_reasons(mixed: Mixed) -> None:
    data = inspect.stats(mixed.journal)
    assert data["total"] == 4
    assert data["outcomes"] == {"CONFIRMED": 1, "ROLLED_BACK": 1, "IN_DOUBT": 1, "PERFORMING": 1}
    assert data["in_flight"] == 1
    perform = data["steps"]["perform"]
    assert (perform["count"], perform["errors"]) == (3, 1)  # the crash left no outcome
    assert 0 <= perform["p50"] <= perform["p95"] <= perform["max"]
    reasons = [r["reason"] for r in data["top_reasons"]]
    assert "perform failed: link down" in reasons
    assert any(r.startswith("Finish failed and the destination cannot be probed") for r in reasons)


def test_stats_since_the_future_is_empty(mixed: Mixed) -> None:
    data = inspect.stats(mixed.journal, since=datetime.now(UTC) + timedelta(hours=1))
    assert (data["total"], data["outcomes"], data["steps"], data["top_reasons"]) == (0, {}, {}, [])


# -- export ---------------------------------------------------------------------------------


def test_export_holds_every_event_and_the_full_cookies(mixed: Mixed) -> None:
    doc = inspect.export(mixed.journal, mixed.rolled_back[:8])
    history = mixed.journal.history(mixed.rolled_back)
    assert doc["migration"]["id"] == mixed.rolled_back
    assert doc["migration"]["last_seq"] == len(history) == len(doc["events"])
    assert doc["stats"]["steps"]["perform"] == {
        "calls": 1,
        "errors": 1,
        "seconds": pytest.approx(doc["events"][5]["duration"]),
    }
    assert [e["error"] for e in doc["events"] if e["error"]] == [
        {"type": "OSError", "message": "link down"}
    ]


def test_export_all_filters_by_state(mixed: Mixed) -> None:
    docs = list(inspect.export_all(mixed.journal, states=[State.IN_DOUBT, State.PERFORMING]))
    assert [d["migration"]["id"] for d in docs] == [mixed.performing, mixed.in_doubt]


# -- prune ----------------------------------------------------------------------------------


def test_prune_removes_terminal_migrations_and_their_events_only(mixed: Mixed) -> None:
    later = datetime.now(UTC) + timedelta(seconds=1)
    gone = inspect.prune(mixed.journal, before=later)
    assert {m["id"] for m in gone} == {mixed.confirmed, mixed.rolled_back}
    left = {m.id: m.state for m in mixed.journal.list()}
    assert left == {mixed.in_doubt: State.IN_DOUBT, mixed.performing: State.PERFORMING}
    assert mixed.journal.history(mixed.confirmed) == []
    assert len(mixed.journal.history(mixed.in_doubt)) > 0


def test_prune_never_takes_a_non_terminal_state_even_when_asked(mixed: Mixed) -> None:
    later = datetime.now(UTC) + timedelta(seconds=1)
    asked = [State.IN_DOUBT, State.PERFORMING]
    assert not set(asked) & TERMINAL
    assert inspect.prune(mixed.journal, before=later, states=asked) == []
    assert len(mixed.journal.list()) == 4


def test_prune_keeps_what_finished_after_the_cutoff(mixed: Mixed) -> None:
    earlier = datetime.now(UTC) - timedelta(hours=1)
    assert inspect.prune(mixed.journal, before=earlier) == []
    assert len(mixed.journal.list()) == 4


def test_prune_dry_run_deletes_nothing(mixed: Mixed) -> None:
    later = datetime.now(UTC) + timedelta(seconds=1)
    would = inspect.prune(mixed.journal, before=later, states=[State.ROLLED_BACK], dry_run=True)
    assert [m["id"] for m in would] == [mixed.rolled_back]
    assert len(mixed.journal.list()) == 4


def test_duration_buckets_agree_with_the_durations(mixed: Mixed) -> None:
    buckets = (0.0, 0.0005, 0.001, 0.01, 1.0)
    got = mixed.journal.duration_buckets(buckets)
    rows = mixed.journal.step_durations()
    assert set(got) == {(r.step, r.kind) for r in rows}
    for (step, kind), (counts, total, n) in got.items():
        mine = [r.duration for r in rows if (r.step, r.kind) == (step, kind)]
        assert n == len(mine)
        assert total == pytest.approx(sum(mine))
        assert counts == [sum(1 for v in mine if v <= b) for b in buckets]
