"""The coordinator through the Python API: write-ahead order, failure rules, timeouts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from migrator.drivers.api import (
    BeginResult,
    ConfirmResult,
    Feature,
    FinishResult,
    MigrationParams,
    PerformResult,
)
from migrator.drivers.null import NullDriver
from migrator.engine.coordinator import Coordinator
from migrator.errors import DomainExists, DomainNotFound, NoCommonProtocol, UsageError
from migrator.failpoints import Crash, Failpoints
from migrator.flags import MigrateFlags
from migrator.journal.store import Journal
from migrator.records import Progress, StepContext
from migrator.states import TERMINAL, State, Step
from tests.conftest import ROOT, Hosts, state_of


def _unique(name: str) -> str:
    return f"null://{name}-{uuid.uuid4().hex[:8]}"


def _null_pair(name: str) -> tuple[NullDriver, NullDriver]:
    src, dst = NullDriver(_unique(name)), NullDriver(_unique(name))
    src.define("vm1")
    return src, dst


def _steps(journal: Journal, mid: str) -> list[tuple[str | None, str, bool | None]]:
    return [(e.step.value if e.step else None, e.kind, e.cancelled) for e in journal.history(mid)]


class JournalWatchingDriver(NullDriver):
    """Records, inside each hook, what the journal already holds: the write-ahead check."""

    seen: list[tuple[str, str, str]]

    def __init__(self, uri: str, journal: Journal) -> None:
        super().__init__(uri)
        self.journal = journal
        self.seen = []

    def _look(self, ctx: StepContext) -> None:
        m = self.journal.get(ctx.migration_id)
        last = self.journal.history(ctx.migration_id)[-1]
        self.seen.append((str(ctx.step), m.state.value, last.kind))

    def begin(self, ctx: StepContext, params: MigrationParams) -> BeginResult:
        self._look(ctx)
        return super().begin(ctx, params)

    def perform(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, uri: str
    ) -> PerformResult:
        self._look(ctx)
        return super().perform(ctx, params, cookie, uri)

    def confirm(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, cancelled: bool
    ) -> ConfirmResult:
        self._look(ctx)
        return super().confirm(ctx, params, cookie, cancelled)


def test_every_hook_runs_after_its_intent_is_committed(journal: Journal) -> None:
    src = JournalWatchingDriver(_unique("wal"), journal)
    dst = NullDriver(_unique("wal"))
    src.define("vm1")
    Coordinator(journal).migrate("vm1", src=src, dst=dst)
    assert src.seen == [
        ("begin", "BEGINNING", "intent"),
        ("perform", "PERFORMING", "intent"),
        ("confirm", "CONFIRMING", "intent"),
    ]


def test_success_journals_ten_events_and_moves_the_domain(journal: Journal) -> None:
    src, dst = _null_pair("ok")
    m = Coordinator(journal).migrate("vm1", src=src, dst=dst, flags=MigrateFlags.LIVE)
    assert m.state is State.CONFIRMED
    assert [e.seq for e in journal.history(m.id)] == list(range(1, 11))
    assert "vm1" not in src.domains and dst.domains["vm1"].value == "running"


def test_the_journal_keeps_cookies_and_hands_each_to_the_next_step(
    journal: Journal, hosts: Hosts
) -> None:
    m = Coordinator(journal).migrate("vm1", src=hosts.src, dst=hosts.dst)
    events = journal.history(m.id)
    outs = [e.cookie_out for e in events if e.kind == "ok" and e.step is not Step.CONFIRM]
    ins = [e.cookie_in for e in events if e.kind == "intent" and e.step is not Step.BEGIN]
    assert outs == ins and all(outs)


def test_a_paused_source_adds_the_paused_flag(journal: Journal, hosts: Hosts) -> None:
    hosts.src.define("vm2", memory_mib=1, paused=True)
    m = Coordinator(journal).migrate("vm2", src=hosts.src, dst=hosts.dst, flags=MigrateFlags.LIVE)
    assert m.flags & MigrateFlags.PAUSED
    assert hosts.states("vm2") == ("absent", "paused")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"bandwidth": -1}, UsageError),
        ({"domain": "nope"}, DomainNotFound),
        ({"protocol": 1}, UsageError),
    ],
)
def test_bad_input_is_refused_before_anything_is_journaled(
    journal: Journal, kwargs: dict[str, object], error: type[Exception]
) -> None:
    src, dst = _null_pair("bad")
    kwargs = dict(kwargs)  # the parameter is shared by the SQLite and PostgreSQL runs
    domain = str(kwargs.pop("domain", "vm1"))
    with pytest.raises(error):
        Coordinator(journal).migrate(domain, src=src, dst=dst, **kwargs)  # type: ignore[arg-type]
    assert journal.list() == []


def test_a_domain_already_on_the_destination_is_refused(journal: Journal) -> None:
    src, dst = _null_pair("exists")
    dst.define("vm1")
    with pytest.raises(DomainExists):
        Coordinator(journal).migrate("vm1", src=src, dst=dst)
    assert journal.list() == []


def test_same_host_is_refused(journal: Journal) -> None:
    src, _ = _null_pair("same")
    with pytest.raises(UsageError, match="same host"):
        Coordinator(journal).migrate("vm1", src=src, dst=NullDriver(src.uri))


def test_drivers_without_a_common_protocol_are_refused(journal: Journal) -> None:
    class V2Only(NullDriver):
        def features(self) -> frozenset[Feature]:
            return frozenset({Feature.MIGRATION_V2})

    src, _ = _null_pair("proto")
    with pytest.raises(NoCommonProtocol, match="no common migration protocol"):
        Coordinator(journal).migrate("vm1", src=src, dst=V2Only(_unique("v2")))


def test_a_hung_hook_becomes_a_timeout_failure_of_its_step(journal: Journal, hosts: Hosts) -> None:
    hosts.src.set_fault("perform", "hang")
    start = time.monotonic()
    m = Coordinator(journal, step_timeout=0.5).migrate("vm1", src=hosts.src, dst=hosts.dst)
    assert time.monotonic() - start < 10
    assert m.state is State.ROLLED_BACK
    errors = [e for e in journal.history(m.id) if e.kind == "error"]
    assert errors[0].step is Step.PERFORM and errors[0].error_type == "StepTimeout"
    assert hosts.states("vm1") == ("running", "absent")


def test_confirm_is_retried_with_backoff_then_left_confirming(
    journal: Journal, hosts: Hosts
) -> None:
    hosts.src.set_fault("confirm", "error", message="src unreachable")
    m = Coordinator(journal, confirm_attempts=3, retry_backoff=0.01).migrate(
        "vm1", src=hosts.src, dst=hosts.dst
    )
    assert m.state is State.CONFIRMING
    attempts = [
        e.attempt for e in journal.history(m.id) if e.step is Step.CONFIRM and e.kind == "error"
    ]
    assert attempts == [1, 2, 3]
    assert m.reason is not None and "migrator recover" in m.reason
    assert state_of(hosts.dst, "vm1") == "running"


def test_finish_cancelled_that_reports_running_is_a_broken_driver(journal: Journal) -> None:
    class Broken(NullDriver):
        def finish(
            self, ctx: StepContext, params: MigrationParams, cookie: bytes, cancelled: bool
        ) -> FinishResult:
            return FinishResult(running=True)

    src, _ = _null_pair("broken")
    dst = Broken(_unique("broken"))

    class FailingPerform(NullDriver):
        def perform(
            self, ctx: StepContext, params: MigrationParams, cookie: bytes, uri: str
        ) -> PerformResult:
            raise RuntimeError("link down")

    failing = FailingPerform(_unique("broken"))
    failing.define("vm1")
    m = Coordinator(journal).migrate("vm1", src=failing, dst=dst)
    assert m.state is State.IN_DOUBT
    assert m.reason is not None and "broken driver" in m.reason
    # Perform failed before it paused the source, and IN_DOUBT calls nothing after: the
    # source is left as the failed Perform left it, running (Confirm never resumed it).
    assert failing.domains["vm1"].value == "running"
    assert [e.step for e in journal.history(m.id) if e.step is Step.CONFIRM] == []
    del src


def test_progress_reaches_the_callback_and_the_journal(journal: Journal, hosts: Hosts) -> None:
    samples: list[Progress] = []
    m = Coordinator(journal, on_progress=lambda _m, p: samples.append(p)).migrate(
        "vm1", src=hosts.src, dst=hosts.dst, bandwidth=64
    )
    assert samples and samples[-1].remaining == 0
    assert samples[-1].transferred == samples[-1].total == 4 * 1024 * 1024
    assert journal.get(m.id).progress == samples[-1].as_dict()


def test_a_driver_error_message_is_journaled_as_text_with_nul_escaped(
    journal: Journal, hosts: Hosts
) -> None:
    hosts.dst.set_fault("prepare", "error", message="disk \x1b[31mfull\x00")
    m = Coordinator(journal).migrate("vm1", src=hosts.src, dst=hosts.dst)
    error = next(e for e in journal.history(m.id) if e.kind == "error")
    assert error.error_type == "DriverError"
    assert error.error_message == "disk \x1b[31mfull\\x00"  # NUL escaped: PostgreSQL refuses it


@pytest.mark.parametrize("point", ["begin.intent", "perform.called", "finish.recorded"])
def test_a_failpoint_kills_the_process_leaving_the_journal_at_that_point(
    tmp_path: Path, point: str
) -> None:
    db = f"sqlite:///{tmp_path / 'j.db'}"
    hosts = [f"test://{tmp_path / h}" for h in ("a", "b")]
    env = {**os.environ, "MIGRATOR_DB": db}
    subprocess.run(
        [sys.executable, "-m", "migrator", "test-host", "define", hosts[0], "vm1"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    proc = subprocess.run(
        [sys.executable, "-m", "migrator", "migrate", "vm1", "--src", hosts[0], "--dst", hosts[1]],
        env={**env, "MIGRATOR_FAILPOINTS": f"{point}=crash"},
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 137, proc.stderr
    with Journal.open(db) as journal:
        (m,) = journal.list()
        last = journal.history(m.id)[-1]
    step, where = point.split(".")
    assert last.step is not None and last.step.value == step
    assert last.kind == ("intent" if where in ("intent", "called") else "ok")


class ForgetfulDriver(NullDriver):
    """Records each ``forget`` with the journaled state of its migration at that moment."""

    def __init__(self, uri: str, journal: Journal, *, fails: bool = False) -> None:
        super().__init__(uri)
        self.journal, self.fails = journal, fails
        self.forgotten: list[tuple[str, str, State]] = []

    def forget(self, migration_id: str, params: MigrationParams) -> None:
        state = self.journal.get(migration_id).state
        self.forgotten.append((migration_id, params.domain, state))
        if self.fails:
            raise RuntimeError("cannot forget")


def test_both_hosts_are_told_once_the_end_state_is_journaled(journal: Journal) -> None:
    src, dst = (ForgetfulDriver(_unique("forget"), journal) for _ in range(2))
    src.define("vm1")
    m = Coordinator(journal).migrate("vm1", src=src, dst=dst)
    assert src.forgotten == dst.forgotten == [(m.id, "vm1", State.CONFIRMED)]


def test_a_host_that_cannot_forget_changes_nothing_else(journal: Journal) -> None:
    src = ForgetfulDriver(_unique("forget"), journal, fails=True)
    dst = ForgetfulDriver(_unique("forget"), journal)
    src.define("vm1")
    m = Coordinator(journal).migrate("vm1", src=src, dst=dst)
    assert m.state is State.CONFIRMED
    assert dst.forgotten == [(m.id, "vm1", State.CONFIRMED)]


def test_an_unfinished_migration_is_not_forgotten_until_recovery_ends_it(
    journal: Journal,
) -> None:
    src, dst = (ForgetfulDriver(_unique("forget"), journal) for _ in range(2))
    src.define("vm1")
    crashed = Coordinator(journal, failpoints=Failpoints({"perform.intent": "raise"}))
    with pytest.raises(Crash):
        crashed.migrate("vm1", src=src, dst=dst)
    assert src.forgotten == dst.forgotten == []
    [m] = journal.list()
    Coordinator(journal, connect={src.uri: src, dst.uri: dst}.__getitem__).recover(steal=True)
    assert [f[0] for f in src.forgotten] == [f[0] for f in dst.forgotten] == [m.id]
    assert src.forgotten[0][2] in TERMINAL
