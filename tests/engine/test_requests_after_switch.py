"""Runtime requests and the convergence policy after the switch to post-copy, on test hosts
(docs/convergence.md, "After the switch"): ``set-speed`` is the post-copy bandwidth, applied
beside Perform and by whoever resumes a paused post-copy; ``set-downtime`` and a second
``postcopy`` are refused in one line; the policy notes nothing and acts no more."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrator.convergence.policy import Action, Policy
from migrator.drivers.test import TestDriver
from migrator.engine.coordinator import Coordinator
from migrator.engine.flows.postcopy import starter
from migrator.failpoints import Failpoints
from migrator.flags import MigrateFlags
from migrator.journal.store import Journal
from migrator.records import EventKind, Migration
from migrator.states import POSTCOPY_STATES, State
from tests.conftest import Hosts, assert_replays_consistently, run_cli

SWITCH = "perform.underway=postcopy"


@pytest.fixture
def slow(tmp_path: Path) -> Hosts:
    """``vm1`` (8 MiB) dirties 16 MiB/s; at 2 MiB/s its image alone takes 4 s, so a
    switch at Perform's first report leaves seconds of Perform in post-copy."""
    src = TestDriver(f"test://{tmp_path / 'host-a'}")
    dst = TestDriver(f"test://{tmp_path / 'host-b'}")
    src.define("vm1", memory_mib=8, dirty_mib_s=16)
    return Hosts(src, dst)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'journal.db'}"
    Journal.open(url, upgrade=True).close()
    yield url
    assert_replays_consistently(url)


def switching(journal: Journal) -> Coordinator:
    return Coordinator(
        journal, step_timeout=60, failpoints=Failpoints({"perform.underway": "postcopy"})
    )


def migrate(c: Coordinator, hosts: Hosts, policy: Policy | None = None) -> Migration:
    return c.migrate(
        "vm1", src=hosts.src, dst=hosts.dst, flags=MigrateFlags.LIVE | MigrateFlags.POSTCOPY,
        bandwidth=2, policy=policy,
    )  # fmt: skip


def test_after_the_switch_the_policy_notes_nothing_and_takes_no_action(
    journal: Journal, slow: Hosts
) -> None:
    """A budget of 0.5 s runs out while post-copy still sends the image: the policy,
    switched, neither notes it nor aborts (which would cut the stream)."""
    c = switching(journal)
    try:
        m = migrate(c, slow, Policy(budget_s_per_gib=64.0, stall_iterations=1))
    finally:
        c.close()
    assert m.state is State.CONFIRMED, m.reason
    history = journal.history(m.id)
    notes = [e for e in history if e.kind in (EventKind.OVER_BUDGET, EventKind.STALLED)]
    assert notes == [] and [e for e in history if e.kind is EventKind.ACTION] == []
    assert [e for e in history if e.kind is EventKind.ERROR] == []  # Perform was not aborted
    assert slow.states("vm1") == ("absent", "running")


def _when(journal: Journal, states: frozenset[State], done: threading.Event) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not done.is_set():
        found = journal.list(limit=1)
        if found and found[0].state in states:
            return found[0].id
        time.sleep(0.02)
    pytest.fail(f"the migration never reached {sorted(states)}")


def test_set_speed_during_post_copy_is_the_post_copy_bandwidth(
    journal: Journal, slow: Hosts
) -> None:
    ended: list[Migration] = []
    done = threading.Event()
    c = switching(journal)

    def drive() -> None:
        try:
            ended.append(migrate(c, slow))
        finally:
            done.set()

    thread = threading.Thread(target=drive)
    thread.start()
    try:
        mid = _when(journal, frozenset({State.POSTCOPY_ACTIVE}), done)
        asked = c.set_speed(mid, 64)
        thread.join(60)
    finally:
        c.close()
    assert [m.state for m in ended] == [State.CONFIRMED]
    [request] = journal.requests(mid)
    assert (request.id, request.outcome) == (asked.id, "applied")
    assert request.applied_at is not None and request.applied_at >= request.requested_at
    history = journal.history(mid)
    [note] = [e for e in history if e.kind is EventKind.REQUEST]
    assert note.detail is not None and note.detail["setting"] == "postcopy-speed"
    assert note.state in POSTCOPY_STATES
    performed = next(e for e in history if e.kind is EventKind.OK and e.step == "perform")
    assert performed.detail is not None and performed.detail["postcopy_bandwidth_mib"] == 64


def test_requests_journaled_while_post_copy_is_paused_are_applied_by_its_resumption(
    db: str, slow: Hosts
) -> None:
    """The coordinator killed right after the switch: ``set-speed`` is accepted, applied
    by ``recover``'s resumption; ``set-downtime`` and ``postcopy`` are refused in one line."""
    argv = ["migrate", "vm1", "--src", slow.src_uri, "--dst", slow.dst_uri, "--live",
            "--flag", "postcopy", "--bandwidth", "2"]  # fmt: skip
    env = {"MIGRATOR_FAILPOINTS": f"{SWITCH},postcopy.recorded=crash"}
    assert run_cli(*argv, db=db, env=env).returncode == 137
    with Journal.open(db) as journal:
        [m] = journal.list()
    assert m.state is State.POSTCOPY_ACTIVE
    asked = run_cli("set-speed", m.id, "32", db=db)
    assert asked.returncode == 0, asked.stderr
    downtime = run_cli("set-downtime", m.id, "500", db=db)
    assert (downtime.returncode, downtime.stderr.splitlines()) == (2, [
        f"migrator: error: migration {m.id} is POSTCOPY_ACTIVE: it switched to post-copy,"
        " where the destination runs the guest and a downtime means nothing; set-speed"
        " still applies"
    ])  # fmt: skip
    again = run_cli("postcopy", m.id, db=db)
    assert (again.returncode, again.stderr.splitlines()) == (2, [
        f"migrator: error: migration {m.id} is POSTCOPY_ACTIVE: it switched to post-copy already"
    ])  # fmt: skip
    recovered = run_cli("recover", "--json", db=db)
    assert [r["result"] for r in json.loads(recovered.stdout)] == ["CONFIRMED"], recovered.stderr
    shown: dict[str, Any] = json.loads(run_cli("show", m.id, "--json", db=db).stdout)
    [request] = shown["requests"]
    assert (request["kind"], request["value"], request["outcome"]) == ("speed", 32, "applied")
    assert request["applied_at"] >= request["requested_at"]
    [note] = [e for e in shown["events"] if e["kind"] == "request"]
    assert (note["step"], note["state"]) == ("postcopy_resume", "POSTCOPY_RESUMING")
    assert note["detail"]["setting"] == "postcopy-speed"
    resumed = next(
        e for e in shown["events"] if e["step"] == "postcopy_resume" and e["kind"] == "ok"
    )
    assert resumed["detail"]["postcopy_bandwidth_mib"] == 32
    text = run_cli("show", m.id, db=db).stdout
    shown_line = r"request +\d+ speed 32: requested \S+, applied \S+ \(applied\)"
    assert re.search(shown_line, text), text
    assert slow.states("vm1") == ("absent", "running")


def test_a_postcopy_request_left_from_before_the_switch_says_it_had_switched(
    journal: Journal, slow: Hosts
) -> None:
    """The budget (0.5 s) runs out while the image still goes (4 s): the policy switches,
    an operator's request journaled just before is stamped with what happened, not with a
    refusal that reads like a failure."""
    holder: dict[str, Coordinator] = {}

    def start(run: Any) -> Any:
        switch = starter(run)

        def start_postcopy(reason: str) -> None:
            holder["c"].request_postcopy(run.migration.id)  # journaled in PERFORMING
            switch(reason)

        return start_postcopy

    c = holder["c"] = Coordinator(journal, step_timeout=60, postcopy=start)
    try:
        m = migrate(c, slow, Policy(budget_s_per_gib=64.0, action=Action.POSTCOPY))
    finally:
        c.close()
    assert m.state is State.CONFIRMED, m.reason
    [request] = journal.requests(m.id)
    assert request.outcome == "not applied: the migration had switched to post-copy already"
