"""The write-ahead layer: an outcome staged to commit with the next intent is durable
before the next hook is called, and a migration costs the commits docs/journal.md lists."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from migrator.drivers.api import DomainState
from migrator.drivers.registry import connect
from migrator.engine.coordinator import Coordinator
from migrator.failpoints import Crash, Failpoints
from migrator.journal.store import Journal
from migrator.records import EventKind, StepContext
from migrator.states import State, Step
from tests.conftest import Hosts

V3 = [Step.BEGIN, Step.PREPARE, Step.PERFORM, Step.FINISH, Step.CONFIRM]


def _null_hosts() -> tuple[Any, Any]:
    """Two in-process hosts of their own; ``vm1`` runs on the first."""
    src, dst = connect(f"null://{uuid.uuid4()}"), connect(f"null://{uuid.uuid4()}")
    src.define("vm1")  # type: ignore[attr-defined]
    return src, dst


def _seen_by_another_reader(db_url: str, migration_id: str) -> list[tuple[str, str]]:
    """What a separate connection reads of the migration's events: (step, kind)."""
    with Journal.open(db_url) as other:
        return [(str(e.step), str(e.kind)) for e in other.history(migration_id)]


class _Watching:
    """Wraps a driver: before each step's hook runs, records what another reader of the
    journal sees, so the test can check what was durable when the hook was called."""

    def __init__(self, driver: Any, db_url: str, seen: dict[Step, list[tuple[str, str]]]):
        self._driver, self._db_url, self._seen = driver, db_url, seen

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._driver, name)
        if name not in {s.value for s in V3}:
            return attr

        def hook(ctx: StepContext, *args: Any) -> Any:
            self._seen[ctx.step] = _seen_by_another_reader(self._db_url, ctx.migration_id)
            return attr(ctx, *args)

        return hook


def test_every_outcome_is_durable_before_the_next_hook_is_called(
    db_url: str, journal: Journal, hosts: Hosts
) -> None:
    seen: dict[Step, list[tuple[str, str]]] = {}
    src, dst = _Watching(hosts.src, db_url, seen), _Watching(hosts.dst, db_url, seen)
    coordinator = Coordinator(journal)
    try:
        migration = coordinator.migrate("vm1", src=src, dst=dst)  # type: ignore[arg-type]
    finally:
        coordinator.close()
    assert migration.state is State.CONFIRMED
    for k, step in enumerate(V3):
        expected = [(str(s), kind) for s in V3[:k] for kind in ("intent", "ok")]
        assert seen[step] == [*expected, (str(step), "intent")], step


def _counting(journal: Journal) -> list[int]:
    """Count the journal's durable commits (units of work the committer ran)."""
    committer = journal._writer.committer
    count = [0]
    run: Callable[..., Any] = committer.run

    def counted(work: Any, **kw: Any) -> Any:
        count[0] += 1
        return run(work, **kw)

    committer.run = counted  # type: ignore[method-assign]
    return count


def test_a_v3_migration_that_succeeds_commits_six_times(journal: Journal) -> None:
    src, dst = _null_hosts()  # no progress samples to commit
    count = _counting(journal)
    coordinator = Coordinator(journal)
    try:
        migration = coordinator.migrate("vm1", src=src, dst=dst)
    finally:
        coordinator.close()
    assert migration.state is State.CONFIRMED
    events = journal.history(migration.id)
    assert [e.seq for e in events] == list(range(1, 11))
    assert [e.state for e in events if e.kind == EventKind.OK][:2] == [State.BEGUN, State.PREPARED]
    # docs/journal.md, "Commits"; heartbeats before hooks on hosts that check fences: none
    assert count[0] == 6


@pytest.mark.parametrize(
    ("step", "result"),
    [
        (Step.BEGIN, State.ROLLED_BACK),  # BEGUN: Confirm(cancelled=1)
        (Step.PREPARE, State.ROLLED_BACK),  # PREPARED: Finish(cancelled=1), Confirm(cancelled=1)
        (Step.FINISH, State.CONFIRMED),  # FINISHED, the destination runs it: Confirm
    ],
    ids=str,
)
def test_an_armed_recorded_failpoint_leaves_that_outcome_committed_alone(
    step: Step, result: State, journal: Journal
) -> None:
    """Recovery then ends the migration as docs/recovery.md's table says for that state."""
    src, dst = _null_hosts()
    coordinator = Coordinator(journal, failpoints=Failpoints({f"{step}.recorded": "raise"}))
    try:
        with pytest.raises(Crash):
            coordinator.migrate("vm1", src=src, dst=dst)
    finally:
        coordinator.close()
    [migration] = journal.list()
    last = journal.history(migration.id)[-1]
    assert (last.step, last.kind, last.state) == (step, EventKind.OK, migration.state)
    recovering = Coordinator(journal, connect=lambda uri: {src.uri: src, dst.uri: dst}[uri])
    try:
        [report] = recovering.recover(steal=True)
    finally:
        recovering.close()
    assert report.result is result
    assert journal.get(migration.id).state is result
    running = (src, dst)[result is State.CONFIRMED]
    assert [h.probe("vm1").state for h in (src, dst)] == [
        DomainState.RUNNING if h is running else DomainState.ABSENT for h in (src, dst)
    ]


class _AbortedDuringPerform:
    """Wraps a source: its Perform completes, but meanwhile an operator asks for an abort
    (through a journal connection of its own)."""

    def __init__(self, driver: Any, db_url: str) -> None:
        self._driver, self._db_url = driver, db_url

    def __getattr__(self, name: str) -> Any:
        return getattr(self._driver, name)

    def perform(self, ctx: StepContext, *args: Any) -> Any:
        with Journal.open(self._db_url) as operator:
            assert operator.request_abort(ctx.migration_id, states=[State.PERFORMING])
        return self._driver.perform(ctx, *args)


def test_an_abort_requested_during_a_perform_that_completes_cancels_finish(
    db_url: str, journal: Journal
) -> None:
    src, dst = _null_hosts()
    coordinator = Coordinator(journal)
    try:
        migration = coordinator.migrate("vm1", src=_AbortedDuringPerform(src, db_url), dst=dst)  # type: ignore[arg-type]
    finally:
        coordinator.close()
    assert migration.state is State.ROLLED_BACK
    assert migration.reason is not None and "aborted" in migration.reason
    events = journal.history(migration.id)
    after = [(e.step, e.kind, e.cancelled) for e in events if e.seq > 5][:4]
    assert after == [
        (Step.PERFORM, EventKind.OK, None),  # committed alone: the forward Finish was refused
        (Step.PERFORM, EventKind.ABORT, None),
        (Step.FINISH, EventKind.INTENT, True),
        (Step.FINISH, EventKind.OK, True),
    ]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
