"""Hooks observe every committed event and never steer a migration."""

from __future__ import annotations

import json
import stat
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from migrator import failpoints
from migrator.drivers.api import MigrationParams, PerformResult
from migrator.drivers.null import NullDriver
from migrator.engine.coordinator import Coordinator
from migrator.engine.observers import Hook, HookEvent, HookName
from migrator.failpoints import Failpoints
from migrator.hooks import CommandHook
from migrator.journal.store import Journal
from migrator.records import Migration, StepContext
from migrator.states import State, Step
from tests.blackout import HOOK_SECONDS, gap, slow_hook
from tests.conftest import Hosts

H = HookName


class PerformFails(NullDriver):
    def perform(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, uri: str
    ) -> PerformResult:
        raise OSError("link down")


def hosts(src_cls: type[NullDriver] = NullDriver) -> tuple[NullDriver, NullDriver]:
    name = uuid.uuid4().hex[:10]
    src, dst = src_cls(f"null://src-{name}"), NullDriver(f"null://dst-{name}")
    src.define("vm1")
    return src, dst


class Recorder:
    def __init__(self) -> None:
        self.seen: list[HookEvent] = []

    def __call__(self, hook_event: HookEvent) -> None:
        self.seen.append(hook_event)

    def names(self) -> list[tuple[HookName, str | None, str]]:
        return [
            (h.name, h.event.step.value if h.event.step else None, h.event.kind) for h in self.seen
        ]


def migrated(
    journal: Journal, hooks: list[Hook], src_cls: type[NullDriver] = NullDriver
) -> Migration:
    """A migration by a coordinator with ``hooks``, closed after it: every hook event of
    the migration is delivered by then."""
    src, dst = hosts(src_cls)
    coordinator = Coordinator(journal, hooks=hooks)
    try:
        return coordinator.migrate("vm1", src=src, dst=dst)
    finally:
        coordinator.close()


def test_hooks_see_start_each_step_and_the_end_in_order(journal: Journal) -> None:
    rec = Recorder()
    m = migrated(journal, [rec])
    steps = ("begin", "prepare", "perform", "finish", "confirm")
    expected = [(H.MIGRATION_STARTED, "begin", "intent")]
    for step in steps:
        expected += [(H.STEP_STARTED, step, "intent"), (H.STEP_FINISHED, step, "ok")]
    expected.append((H.MIGRATION_FINISHED, "confirm", "ok"))
    assert rec.names() == expected
    assert rec.seen[-1].migration.state is State.CONFIRMED
    assert [h.event.seq for h in rec.seen if h.name is H.STEP_STARTED] == [1, 3, 5, 7, 9]
    assert all(h.migration.id == m.id for h in rec.seen)


def test_a_hook_sees_the_event_as_the_journal_holds_it(journal: Journal) -> None:
    rec = Recorder()
    m = migrated(journal, [rec], PerformFails)
    [failed] = [h for h in rec.seen if h.event.kind == "error"]
    [stored] = [e for e in journal.history(m.id) if e.seq == failed.event.seq]
    assert failed.event == stored
    assert failed.migration.reason == "perform failed: link down"


def test_a_raising_hook_changes_nothing(journal: Journal, caplog: pytest.LogCaptureFixture) -> None:
    def broken(_event: HookEvent) -> None:
        raise RuntimeError("hook on fire")

    rec = Recorder()
    m = migrated(journal, [broken, rec])
    assert m.state is State.CONFIRMED
    assert len(rec.seen) == 12  # the hook after the broken one is still called
    assert "hook on fire" in caplog.text
    assert [e.seq for e in journal.history(m.id)] == list(range(1, 11))


def test_recovery_delivers_from_the_cursor_then_recovered_then_finished(
    journal: Journal,
) -> None:
    src, dst = hosts()
    first = Recorder()
    crashed = Coordinator(
        journal, hooks=[first], failpoints=Failpoints({"perform.intent": "raise"})
    )
    with pytest.raises(failpoints.Crash):
        crashed.migrate("vm1", src=src, dst=dst)
    assert crashed.delivery.drain()
    [m] = journal.list()
    assert journal.delivered(m.id) == 5  # up to Perform's intent
    rec = Recorder()
    recovering = Coordinator(journal, hooks=[rec])
    recovering.recover(steal=True)
    recovering.close()
    names = [h.name for h in rec.seen]
    assert names[0] is H.RECOVERED
    assert rec.seen[0].event.detail is not None
    assert rec.seen[0].event.detail["from_state"] == "PERFORMING"
    assert rec.seen[0].event.detail["previous_owner"] == crashed.id
    assert names[-1] is H.MIGRATION_FINISHED
    assert rec.seen[-1].migration.state is State.ROLLED_BACK
    assert H.MIGRATION_STARTED not in names
    assert journal.delivered(m.id) is None  # finished, every event delivered


def test_recovery_delivers_every_event_no_hook_was_given(journal: Journal) -> None:
    """The crashed coordinator had no hooks: the recovering one's get the whole history."""
    src, dst = hosts()
    crashed = Coordinator(journal, failpoints=Failpoints({"perform.intent": "raise"}))
    with pytest.raises(failpoints.Crash):
        crashed.migrate("vm1", src=src, dst=dst)
    rec = Recorder()
    recovering = Coordinator(journal, hooks=[rec])
    recovering.recover(steal=True)
    recovering.close()
    [m] = journal.list()
    seqs = [h.event.seq for h in rec.seen]
    assert seqs == sorted(seqs) and seqs[-1] == m.last_seq
    assert [h.name for h in rec.seen[:2]] == [H.MIGRATION_STARTED, H.STEP_STARTED]
    assert H.RECOVERED in [h.name for h in rec.seen]


def test_each_hook_event_has_the_migration_as_of_its_event(journal: Journal) -> None:
    rec = Recorder()
    m = migrated(journal, [rec], PerformFails)
    history = {e.seq: e for e in journal.history(m.id)}
    for h in rec.seen:
        assert (h.migration.state, h.migration.last_seq) == (h.event.state, h.event.seq)
        assert h.migration.updated_at == history[h.event.seq].at
    reasons = [(h.event.step, h.event.kind, h.migration.reason) for h in rec.seen]
    assert reasons[0] == (Step.BEGIN, "intent", None)
    assert ("perform", "error", "perform failed: link down") in reasons
    assert rec.seen[-1].migration.finished_at == m.finished_at


def write_script(path: Path, body: str) -> Path:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_command_hook_gets_name_id_and_the_event_as_json(journal: Journal, tmp_path: Path) -> None:
    log = tmp_path / "hook.log"
    script = write_script(
        tmp_path / "hook.py",
        "import json, sys\n"
        f"with open({str(log)!r}, 'a') as f:\n"
        "    f.write(json.dumps([sys.argv[1:], json.load(sys.stdin)]) + '\\n')\n",
    )
    m = migrated(journal, [CommandHook(str(script))])
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [argv for argv, _ in calls][:2] == [
        ["migration_started", m.id],
        ["step_started", m.id],
    ]
    assert len(calls) == 12
    argv, last = calls[-1]
    assert argv == ["migration_finished", m.id]
    assert last["hook"] == "migration_finished"
    assert last["migration"]["state"] == "CONFIRMED"
    assert last["event"]["seq"] == 10


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_failing_command_hook_is_logged_and_ignored(
    journal: Journal, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    script = write_script(
        tmp_path / "fail.py", "import sys\nsys.stderr.write('nope')\nsys.exit(3)\n"
    )
    m = migrated(journal, [CommandHook(str(script))])
    assert m.state is State.CONFIRMED
    assert "exit 3: nope" in caplog.text


def test_command_hook_refuses_an_empty_command() -> None:
    with pytest.raises(ValueError, match="empty"):
        CommandHook("   ")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_five_second_hook_command_does_not_lengthen_the_blackout(
    journal: Journal, tmp_path: Path, hosts: Hosts
) -> None:
    """On test:/// hosts: the hook sleeps 5 s on Perform's outcome and on Finish's intent;
    the Finish call still starts right after Perform's outcome (inline, 10 s later), and
    the hook ran all the same (closing the coordinator waits for it)."""
    hosts.src.define("vm2", memory_mib=4)
    plain, hooked = (
        Coordinator(journal),
        Coordinator(journal, hooks=[CommandHook(slow_hook(tmp_path))]),
    )
    try:
        without = plain.migrate("vm1", src=hosts.src, dst=hosts.dst)
        started = time.monotonic()
        m = hooked.migrate("vm2", src=hosts.src, dst=hosts.dst)
    finally:
        plain.close()
        hooked.close()
    assert time.monotonic() - started >= 2 * HOOK_SECONDS  # the hook did run, twice
    base, slow = gap(journal, without.id), gap(journal, m.id)
    print(f"test hosts: without hooks {base}, with a {HOOK_SECONDS} s hook {slow}")
    assert slow.outcome_to_intent < HOOK_SECONDS and slow.outcome_to_call < HOOK_SECONDS


def test_each_migration_s_hook_events_come_in_order_while_several_run_at_once(
    journal: Journal,
) -> None:
    """Four threads share one coordinator; a hook that takes a little while lets events of
    several migrations queue up: each migration's still come in seq order, all of them."""
    seen: list[HookEvent] = []

    def slowish(hook_event: HookEvent) -> None:
        time.sleep(0.002)
        seen.append(hook_event)

    coordinator = Coordinator(journal, hooks=[slowish])

    def work() -> None:
        for _ in range(3):
            src, dst = hosts()
            coordinator.migrate("vm1", src=src, dst=dst)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    coordinator.close()
    by_migration: dict[str, list[tuple[HookName, int]]] = {}
    for h in seen:
        by_migration.setdefault(h.migration.id, []).append((h.name, h.event.seq))
    assert len(by_migration) == 12
    expected = [(H.MIGRATION_STARTED, 1)]
    for seq in (1, 3, 5, 7, 9):
        expected += [(H.STEP_STARTED, seq), (H.STEP_FINISHED, seq + 1)]
    expected.append((H.MIGRATION_FINISHED, 10))
    assert all(got == expected for got in by_migration.values())
