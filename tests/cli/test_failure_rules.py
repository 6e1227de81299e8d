"""The failure rules of docs/states.md, end to end: the real CLI in a subprocess, real test
hosts.

Each scenario runs ``migrator migrate --json`` once, on SQLite and on PostgreSQL, and
checks the exit code (docs/cli.md), the final state, the journaled event sequence (the data
``show --json`` prints, read with the same library call), and what the hosts really hold
afterwards. ``assert_invariants`` checks what must hold after any migration.

Faults are armed with the test driver's API (``set_fault``), the same call as
``migrator test-host fault``; ``test_fault_armed_with_the_cli_is_honoured`` covers that path.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from migrator.drivers.api import COOKIE_MAX, BeginResult, DomainState, MigrationParams
from migrator.drivers.null import NullDriver
from migrator.engine.coordinator import Coordinator
from migrator.inspect import show
from migrator.journal.store import Journal
from migrator.records import StepContext
from migrator.states import State
from tests.conftest import Hosts, run_cli, state_of

Step = tuple[str | None, str, bool | None]

EXIT_OK, EXIT_FAILED, EXIT_IN_DOUBT = 0, 1, 3

BEGIN = [("begin", "intent", None), ("begin", "ok", None)]
PREPARE = [("prepare", "intent", None), ("prepare", "ok", None)]
PERFORM = [("perform", "intent", None), ("perform", "ok", None)]
FINISH = [("finish", "intent", False), ("finish", "ok", False)]
CONFIRM = [("confirm", "intent", False), ("confirm", "ok", False)]
CANCEL = [
    ("finish", "intent", True),
    ("finish", "ok", True),
    ("confirm", "intent", True),
    ("confirm", "ok", True),
]
SUCCESS = BEGIN + PREPARE + PERFORM + FINISH + CONFIRM


# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _journal_ready(request: pytest.FixtureRequest) -> None:
    """Create the SQLite journal up front (as PostgreSQL's is), so that each CLI run pays
    for the migration only, not for the first-use schema upgrade (tested elsewhere)."""
    if "db_url" in request.fixturenames:
        Journal.open(request.getfixturevalue("db_url")).close()


def migrate(hosts: Hosts, db: str, *args: str, domain: str = "vm1") -> tuple[int, dict[str, Any]]:
    """``migrator migrate DOMAIN --json``: the exit code and the outcome it printed."""
    proc = run_cli(
        "migrate", domain, "--src", hosts.src_uri, "--dst", hosts.dst_uri, "--json", *args, db=db
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    outcome: dict[str, Any] = json.loads(proc.stdout)
    assert outcome["exit_code"] == proc.returncode
    return proc.returncode, outcome


def view(db: str, migration_id: str) -> dict[str, Any]:
    """What ``migrator show ID --json`` prints (the same library call, without a process)."""
    with Journal.open(db) as journal:
        return show(journal, migration_id)


def steps(m: dict[str, Any]) -> list[Step]:
    return [(e["step"], e["kind"], e["cancelled"]) for e in m["events"]]


def event(m: dict[str, Any], step: str, kind: str, nth: int = 0) -> dict[str, Any]:
    found = [e for e in m["events"] if e["step"] == step and e["kind"] == kind]
    return found[nth]


def image_files(host_dir: Path) -> list[str]:
    images = host_dir / "images"
    return sorted(p.name for p in images.iterdir()) if images.exists() else []


def assert_invariants(m: dict[str, Any], hosts: Hosts) -> None:
    """What must hold after any migration, whatever failed (docs/states.md, docs/recovery.md)."""
    events = m["events"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "seq has a gap"
    assert events[-1]["state"] == m["state"]

    src = state_of(hosts.src, m["domain"])
    dst = state_of(hosts.dst, m["dname"] or m["domain"])
    assert not (src == "running" and dst == "running"), "both copies run"
    kept = "paused" if "paused" in m["flag_names"] else "running"
    if m["state"] == "CONFIRMED":
        assert (src, dst) == ("absent", kept), "CONFIRMED: runs on dst only"
    elif m["state"] == "ROLLED_BACK":
        assert src == kept, "ROLLED_BACK: runs on src"
        if "cleanup failed" in (m["reason"] or ""):
            assert dst in ("absent", "incoming"), "ROLLED_BACK: dst may only hold what never ran"
        else:
            assert dst == "absent", "ROLLED_BACK: dst cleaned up"
    elif m["state"] == "FAILED":
        assert (src, dst) == (kept, "absent"), "FAILED: nothing changed"
    elif m["state"] == "IN_DOUBT":
        assert src == "paused", "IN_DOUBT: the source is kept paused"
        assert dst != "absent", "IN_DOUBT: the destination's copy is not destroyed"

    # Confirm's cancelled flag agrees with what Finish (or, after it raised, the probe) said.
    dst_runs: bool | None = None
    for e in events:
        if e["step"] == "finish":
            assert e["cancelled"] is not None
            dst_runs = bool(e["detail"]["running"]) if e["kind"] == "ok" else None
        elif e["step"] == "probe" and e["kind"] == "ok" and e["detail"]["host"] == m["dst"]:
            dst_runs = e["detail"]["state"] in ("running", "paused")
        elif e["step"] == "confirm":
            assert dst_runs is not None, "Confirm without a Finish outcome to agree with"
            assert e["cancelled"] is (not dst_runs), f"Confirm flag disagrees: {e}"


def run(hosts: Hosts, db: str, *args: str, domain: str = "vm1") -> tuple[int, dict[str, Any]]:
    """Migrate, then return the exit code and the journal's view, invariants checked."""
    code, outcome = migrate(hosts, db, *args, domain=domain)
    m = view(db, outcome["id"])
    assert m["state"] == outcome["state"]
    assert_invariants(m, hosts)
    return code, m


# -- success ---------------------------------------------------------------------------------


def test_live_migration_is_confirmed(db_url: str, hosts: Hosts) -> None:
    checksum = hosts.src.domains()[0]["checksum"]
    code, m = run(hosts, db_url, "--live")
    assert (code, m["state"], m["reason"]) == (EXIT_OK, "CONFIRMED", None)
    assert steps(m) == SUCCESS
    assert m["flag_names"] == ["live"]
    assert hosts.states("vm1") == ("absent", "running")
    [arrived] = hosts.dst.domains()
    assert (arrived["checksum"], arrived["job"], arrived["lease_held"]) == (checksum, None, True)


def test_migration_with_bandwidth_cap_is_confirmed_and_paced(db_url: str, hosts: Hosts) -> None:
    code, m = run(hosts, db_url, "--bandwidth", "32")
    assert (code, m["state"]) == (EXIT_OK, "CONFIRMED")
    assert steps(m) == SUCCESS
    assert m["bandwidth"] == 32
    # 4 MiB at 32 MiB/s takes at least 1/8 s.
    assert event(m, "perform", "ok")["duration"] >= 0.12
    assert hosts.states("vm1") == ("absent", "running")


def test_each_step_gets_the_cookie_the_previous_step_gave(db_url: str, hosts: Hosts) -> None:
    _, m = run(hosts, db_url)
    chain = [
        ("begin", "prepare"),
        ("prepare", "perform"),
        ("perform", "finish"),
        ("finish", "confirm"),
    ]
    for giver, taker in chain:
        out = event(m, giver, "ok")["cookie_out"]
        assert out, f"{giver} gave no cookie"
        assert event(m, taker, "intent")["cookie_in"] == out


# -- Begin -----------------------------------------------------------------------------------


def test_begin_error_fails_and_leaves_hosts_untouched(db_url: str, hosts: Hosts) -> None:
    hosts.src.set_fault("begin", "error")
    src_before = hosts.src.domains()
    code, m = run(hosts, db_url)
    assert (code, m["state"]) == (EXIT_FAILED, "FAILED")
    assert steps(m) == [("begin", "intent", None), ("begin", "error", None)]
    assert m["reason"].startswith("begin failed")
    assert hosts.src.domains() == src_before
    assert hosts.dst.domains() == []


# -- Prepare ---------------------------------------------------------------------------------


def test_prepare_error_is_cancelled_and_rolled_back(db_url: str, hosts: Hosts) -> None:
    hosts.dst.set_fault("prepare", "error")
    code, m = run(hosts, db_url)
    assert (code, m["state"]) == (EXIT_FAILED, "ROLLED_BACK")
    assert steps(m) == [*BEGIN, ("prepare", "intent", None), ("prepare", "error", None), *CANCEL]
    assert m["reason"].startswith("prepare failed")
    assert hosts.states("vm1") == ("running", "absent")


def test_prepare_lost_reply_leaves_no_domain_on_destination(db_url: str, hosts: Hosts) -> None:
    hosts.dst.set_fault("prepare", "lost-reply")
    code, m = run(hosts, db_url)
    assert (code, m["state"]) == (EXIT_FAILED, "ROLLED_BACK")
    assert steps(m) == [*BEGIN, ("prepare", "intent", None), ("prepare", "error", None), *CANCEL]
    assert hosts.dst.domains() == []
    assert image_files(hosts.dst.dir) == []
    assert hosts.states("vm1") == ("running", "absent")


# -- Perform ---------------------------------------------------------------------------------


def test_perform_error_is_cancelled_and_source_runs(db_url: str, hosts: Hosts) -> None:
    hosts.src.set_fault("perform", "error")
    code, m = run(hosts, db_url, "--live")
    assert (code, m["state"]) == (EXIT_FAILED, "ROLLED_BACK")
    perform_failed = [("perform", "intent", None), ("perform", "error", None)]
    assert steps(m) == [*BEGIN, *PREPARE, *perform_failed, *CANCEL]
    assert m["reason"].startswith("perform failed")
    assert hosts.states("vm1") == ("running", "absent")
    assert image_files(hosts.dst.dir) == []


def test_perform_lost_reply_after_copy_resumes_source(db_url: str, hosts: Hosts) -> None:
    # The copy happens and the source is paused; then the reply is lost.
    hosts.src.set_fault("perform", "lost-reply")
    code, m = run(hosts, db_url)
    assert (code, m["state"]) == (EXIT_FAILED, "ROLLED_BACK")
    perform_failed = [("perform", "intent", None), ("perform", "error", None)]
    assert steps(m) == [*BEGIN, *PREPARE, *perform_failed, *CANCEL]
    assert hosts.states("vm1") == ("running", "absent")
    [src_dom] = hosts.src.domains()
    assert (src_dom["lease_held"], src_dom["job"]) == (True, None)
    assert image_files(hosts.dst.dir) == []


def test_perform_hang_times_out_and_rolls_back(db_url: str, hosts: Hosts) -> None:
    hosts.src.set_fault("perform", "hang")
    code, m = run(hosts, db_url, "--timeout", "1")
    assert (code, m["state"]) == (EXIT_FAILED, "ROLLED_BACK")
    error = event(m, "perform", "error")
    assert error["error"]["type"] == "StepTimeout"
    assert error["duration"] >= 0.9
    assert steps(m)[-4:] == CANCEL
    assert hosts.states("vm1") == ("running", "absent")


# -- Finish ----------------------------------------------------------------------------------


def test_finish_without_domain_rolls_back(db_url: str, hosts: Hosts) -> None:
    hosts.dst.set_fault("finish", "no-domain")
    code, m = run(hosts, db_url)
    assert (code, m["state"]) == (EXIT_FAILED, "ROLLED_BACK")
    confirm_cancel = [("confirm", "intent", True), ("confirm", "ok", True)]
    assert steps(m) == [*BEGIN, *PREPARE, *PERFORM, *FINISH, *confirm_cancel]
    assert event(m, "finish", "ok")["detail"]["running"] is False
    assert hosts.states("vm1") == ("running", "absent")


def test_finish_lost_reply_with_domain_running_is_confirmed(db_url: str, hosts: Hosts) -> None:
    # Finish started the domain on dst, then its reply was lost: the probe sees it running.
    hosts.dst.set_fault("finish", "lost-reply")
    code, m = run(hosts, db_url)
    assert (code, m["state"]) == (EXIT_OK, "CONFIRMED")
    assert steps(m) == [
        *BEGIN, *PREPARE, *PERFORM,
        ("finish", "intent", False), ("finish", "error", False),
        ("probe", "ok", None),
        *CONFIRM,
    ]  # fmt: skip
    assert event(m, "probe", "ok")["detail"]["state"] == "running"
    assert not any(e["step"] == "confirm" and e["cancelled"] for e in m["events"])
    assert hosts.states("vm1") == ("absent", "running")


def test_finish_error_with_domain_not_running_rolls_back(db_url: str, hosts: Hosts) -> None:
    # Finish raised having done nothing (once): the probe says "not running", so
    # Finish(cancelled=1) cleans dst and Confirm(cancelled=1) resumes src.
    hosts.dst.set_fault("finish", "error", count=1)
    code, m = run(hosts, db_url)
    assert (code, m["state"]) == (EXIT_FAILED, "ROLLED_BACK")
    assert steps(m) == [
        *BEGIN, *PREPARE, *PERFORM,
        ("finish", "intent", False), ("finish", "error", False),
        ("probe", "ok", None),
        *CANCEL,
    ]  # fmt: skip
    assert event(m, "probe", "ok")["detail"]["state"] == "incoming"
    assert hosts.states("vm1") == ("running", "absent")
    assert image_files(hosts.dst.dir) == []


def test_failing_cleanup_finish_is_retried(db_url: str, hosts: Hosts) -> None:
    # Finish(0) fails, then the first Finish(cancelled=1) too; the second one cleans dst.
    hosts.dst.set_fault("finish", "error", count=2)
    code, m = run(hosts, db_url)
    assert (code, m["state"]) == (EXIT_FAILED, "ROLLED_BACK")
    cleanups = [e for e in m["events"] if e["step"] == "finish" and e["cancelled"]]
    assert [e["kind"] for e in cleanups] == ["intent", "error", "intent", "ok"]
    assert [e["attempt"] for e in cleanups[:3]] == [1, 1, 2]
    assert steps(m)[-2:] == CANCEL[-2:]
    assert "cleanup failed" not in m["reason"]
    assert hosts.states("vm1") == ("running", "absent")
    assert image_files(hosts.dst.dir) == []


def test_retried_cleanup_finish_journals_its_attempt_on_success(db_url: str, hosts: Hosts) -> None:
    hosts.dst.set_fault("finish", "error", count=2)
    _, m = run(hosts, db_url)
    cleanups = [e for e in m["events"] if e["step"] == "finish" and e["cancelled"]]
    assert [(e["kind"], e["attempt"]) for e in cleanups][-2:] == [("intent", 2), ("ok", 2)]


def test_cleanup_finish_failing_always_resumes_source_and_says_dst_may_hold_a_copy(
    db_url: str, hosts: Hosts
) -> None:
    # Every Finish fails, cancelling ones too: 5 cleanup attempts (3 s of backoff), then
    # the source, the only copy that ever ran, is resumed and the reason warns about dst.
    hosts.dst.set_fault("finish", "error")
    code, m = run(hosts, db_url)
    assert (code, m["state"]) == (EXIT_FAILED, "ROLLED_BACK")
    cleanups = [e for e in m["events"] if e["step"] == "finish" and e["cancelled"]]
    assert [e["attempt"] for e in cleanups if e["kind"] == "error"] == [1, 2, 3, 4, 5]
    assert steps(m)[-2:] == CANCEL[-2:]
    assert "incoming copy that never ran may remain" in m["reason"]
    assert hosts.dst.dir.as_posix() in m["reason"]
    assert hosts.states("vm1") == ("running", "incoming")


def test_a_probe_that_fails_is_asked_again_each_attempt_journaled(
    db_url: str, hosts: Hosts
) -> None:
    # The preflight probe takes the first fault; after Finish fails the probe fails
    # twice more, then answers: the destination runs the domain, so the migration goes on.
    hosts.dst.set_fault("finish", "error")
    hosts.dst.set_fault("probe", "unreachable", count=3)
    _, m = run(hosts, db_url, "--probe-patience", "10")
    probes = [e for e in m["events"] if e["step"] == "probe"]
    assert [(e["kind"], e["attempt"]) for e in probes[:3]] == [
        ("error", 1), ("error", 2), ("ok", 3)
    ]  # fmt: skip
    assert [e["detail"].get("retry_in") for e in probes[:3]] == [0.2, 0.4, None]
    assert m["state"] == "ROLLED_BACK"  # it held the incoming copy only: back


def test_a_probe_that_keeps_failing_gives_up_within_its_patience(db_url: str, hosts: Hosts) -> None:
    hosts.dst.set_fault("finish", "error")
    hosts.dst.set_fault("probe", "unreachable")
    code, m = run(hosts, db_url, "--probe-patience", "1")
    assert (code, m["state"]) == (EXIT_IN_DOUBT, "IN_DOUBT")
    probes = [e for e in m["events"] if e["step"] == "probe"]
    assert len(probes) >= 2 and all(e["kind"] == "error" for e in probes)
    assert "retry_in" in probes[0]["detail"] and probes[-1]["detail"] is None
    assert sum(probes[i]["detail"]["retry_in"] for i in range(len(probes) - 1)) <= 1.0


def test_finish_error_with_unprobeable_destination_is_in_doubt(db_url: str, hosts: Hosts) -> None:
    # The preflight probe tolerates the failing dst probe; the one after Finish cannot tell.
    hosts.dst.set_fault("finish", "error")
    hosts.dst.set_fault("probe", "error")
    code, m = run(hosts, db_url)
    assert (code, m["state"]) == (EXIT_IN_DOUBT, "IN_DOUBT")
    assert steps(m) == [
        *BEGIN, *PREPARE, *PERFORM,
        ("finish", "intent", False), ("finish", "error", False),
        ("probe", "error", None),
        (None, "in_doubt", None),
    ]  # fmt: skip
    assert "kept paused" in m["reason"]
    [src_dom] = hosts.src.domains()
    [dst_dom] = hosts.dst.domains()
    assert src_dom["state"] == "paused"
    assert (dst_dom["name"], dst_dom["state"], dst_dom["job"]) == ("vm1", "incoming", m["id"])
    assert image_files(hosts.dst.dir) == [f"incoming-{m['id']}.img"]


# -- Confirm ---------------------------------------------------------------------------------


def test_confirm_failing_once_is_retried_and_confirmed(db_url: str, hosts: Hosts) -> None:
    hosts.src.set_fault("confirm", "error", count=1)
    code, m = run(hosts, db_url)
    assert (code, m["state"]) == (EXIT_OK, "CONFIRMED")
    assert steps(m)[-3:] == [
        ("confirm", "intent", False),
        ("confirm", "error", False),
        ("confirm", "ok", False),
    ]
    assert [e["attempt"] for e in m["events"][-2:]] == [1, 2]
    assert m["reason"] is None  # the failed attempt leaves no reason on a success
    assert hosts.states("vm1") == ("absent", "running")


def test_confirm_failing_always_stays_confirming(db_url: str, hosts: Hosts) -> None:
    # The CLI's Coordinator retries 5 times with 0.2 s doubling backoff: 3 s of sleep.
    hosts.src.set_fault("confirm", "error")
    code, m = run(hosts, db_url)
    assert (code, m["state"]) == (EXIT_FAILED, "CONFIRMING")
    errors = [e for e in m["events"] if e["step"] == "confirm" and e["kind"] == "error"]
    assert [e["attempt"] for e in errors] == [1, 2, 3, 4, 5]
    assert steps(m)[-6] == ("confirm", "intent", False)
    assert "migrator recover" in m["reason"]
    # Past the point of no return: dst runs it, the source copy is paused, not resumed.
    assert hosts.states("vm1") == ("paused", "running")


# -- slow steps, flags, names ----------------------------------------------------------------


def test_slow_prepare_still_confirms(db_url: str, hosts: Hosts) -> None:
    hosts.dst.set_fault("prepare", "slow", seconds=0.5)
    code, m = run(hosts, db_url)
    assert (code, m["state"]) == (EXIT_OK, "CONFIRMED")
    assert steps(m) == SUCCESS
    assert event(m, "prepare", "ok")["duration"] >= 0.5


def test_paused_source_stays_paused_on_destination(db_url: str, hosts: Hosts) -> None:
    hosts.src.define("vm2", memory_mib=4, paused=True)
    code, m = run(hosts, db_url, "--live", domain="vm2")
    assert (code, m["state"]) == (EXIT_OK, "CONFIRMED")
    assert "paused" in m["flag_names"]
    assert hosts.states("vm2") == ("absent", "paused")
    assert hosts.states("vm1") == ("running", "absent")


def test_dname_renames_on_destination(db_url: str, hosts: Hosts) -> None:
    code, m = run(hosts, db_url, "--dname", "vm1-new")
    assert (code, m["state"], m["dname"]) == (EXIT_OK, "CONFIRMED", "vm1-new")
    assert [d["name"] for d in hosts.dst.domains()] == ["vm1-new"]
    assert state_of(hosts.dst, "vm1-new") == "running"
    assert hosts.src.domains() == []


def test_fault_armed_with_the_cli_is_honoured(tmp_path: Path, hosts: Hosts) -> None:
    db_url = f"sqlite:///{tmp_path / 'journal.db'}"  # the journal does not matter here
    proc = run_cli(
        "test-host", "fault", hosts.src_uri, "--step", "perform", "--mode", "error",
        "--message", "disk on fire", "--count", "1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    code, m = run(hosts, db_url)
    assert (code, m["state"]) == (EXIT_FAILED, "ROLLED_BACK")
    assert event(m, "perform", "error")["error"] == {
        "type": "DriverError",
        "message": "disk on fire",
    }
    assert hosts.src.faults() == {}  # the count of 1 is used up


# -- cookies over libvirt's limit (Python API: the test host's cookies are small) -------------


class BigCookieDriver(NullDriver):
    """A null host whose Begin hands out a cookie of ``size`` bytes."""

    size = COOKIE_MAX + 1

    def begin(self, ctx: StepContext, params: MigrationParams) -> BeginResult:
        super().begin(ctx, params)
        return BeginResult(description=params.domain, cookie=b"c" * self.size)


def _null_migration(
    db_url: str, cookie_size: int
) -> tuple[State, list[Any], NullDriver, NullDriver]:
    name = uuid.uuid4().hex[:12]
    src = BigCookieDriver(f"null://src-{name}")
    src.size = cookie_size
    dst = NullDriver(f"null://dst-{name}")
    src.define("vm1")
    with Journal.open(db_url) as journal:
        coordinator = Coordinator(journal)
        try:
            m = coordinator.migrate("vm1", src=src, dst=dst)
        finally:
            coordinator.close()
        history = journal.history(m.id)
    assert [e.seq for e in history] == list(range(1, len(history) + 1))
    return m.state, history, src, dst


def test_cookie_over_4_mib_is_refused(db_url: str) -> None:
    state, history, src, dst = _null_migration(db_url, COOKIE_MAX + 1)
    assert state is State.FAILED
    assert [(e.step, e.kind) for e in history] == [("begin", "intent"), ("begin", "error")]
    assert history[-1].error_type == "CookieTooLarge"
    assert str(COOKIE_MAX) in (history[-1].error_message or "")
    assert history[-1].cookie_out is None
    assert src.domains == {"vm1": DomainState.RUNNING}
    assert dst.domains == {}


def test_cookie_of_exactly_4_mib_is_accepted(db_url: str) -> None:
    state, history, src, dst = _null_migration(db_url, COOKIE_MAX)
    assert state is State.CONFIRMED
    begun = next(e for e in history if e.step == "begin" and e.kind == "ok")
    assert begun.cookie_out is not None and len(begun.cookie_out) == COOKIE_MAX
    assert src.domains == {}
    assert dst.domains == {"vm1": DomainState.RUNNING}
