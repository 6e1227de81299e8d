"""The read commands, end to end: ``list``, ``show``, ``db``, ``diagram`` and ``demo`` run as
a user runs them, on journals holding real migrations between real test hosts.

Hostile driver text (terminal escapes, control characters, 100 kB) must reach people
escaped and bounded, and reach programs (``--json``) as the journal holds it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from migrator.drivers.test import TestDriver
from migrator.engine.coordinator import Coordinator
from migrator.engine.reasons import ERROR_TEXT_MAX
from migrator.journal.schema import SCHEMA_HEAD
from migrator.journal.store import Journal
from migrator.states import State
from tests.conftest import Hosts, run_cli

STEPS = ("begin", "prepare", "perform", "finish", "confirm")
EVENT_FIELDS = ("seq", "step", "kind", "at", "cancelled", "cookie_in", "cookie_out", "error")

sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
"""For what the journal's backend cannot change (rendering, option parsing): saves time."""


@dataclass
class Journaled:
    """A journal with three migrations, oldest first: CONFIRMED, ROLLED_BACK, FAILED."""

    url: str
    ids: list[str]
    domains: list[str]
    states: list[str]


@pytest.fixture
def journaled(db_url: str, hosts: Hosts) -> Journaled:
    hosts.src.define("vm2", memory_mib=1)
    hosts.src.define("vm3", memory_mib=1)
    ids, states = [], []
    with Journal.open(db_url) as journal:
        coordinator = Coordinator(journal)
        try:
            for domain, fault in (("vm1", None), ("vm2", "perform"), ("vm3", "begin")):
                if fault:
                    hosts.src.set_fault(fault, "error", count=1)
                m = coordinator.migrate(domain, src=hosts.src, dst=hosts.dst)
                ids.append(m.id)
                states.append(m.state.value)
        finally:
            coordinator.close()
    assert states == ["CONFIRMED", "ROLLED_BACK", "FAILED"]
    return Journaled(db_url, ids, ["vm1", "vm2", "vm3"], states)


def cli_json(*args: str, db: str) -> Any:
    proc = run_cli(*args, "--json", db=db)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# -- list ------------------------------------------------------------------------------------


def test_list_is_newest_first(journaled: Journaled) -> None:
    rows = cli_json("list", db=journaled.url)
    assert [(r["id"], r["domain"], r["state"]) for r in rows] == list(
        zip(journaled.ids[::-1], journaled.domains[::-1], journaled.states[::-1], strict=True)
    )


@sqlite_only
def test_list_filters_by_state_case_insensitively(journaled: Journaled) -> None:
    rows = cli_json("list", "--state", "rolled_back", "--state", "Failed", db=journaled.url)
    assert [(r["domain"], r["state"]) for r in rows] == [("vm3", "FAILED"), ("vm2", "ROLLED_BACK")]


@sqlite_only
def test_list_limit_keeps_the_newest(journaled: Journaled) -> None:
    rows = cli_json("list", "--limit", "2", db=journaled.url)
    assert [r["id"] for r in rows] == journaled.ids[:0:-1]


@sqlite_only
def test_list_table_shows_short_ids_domains_and_states(journaled: Journaled) -> None:
    proc = run_cli("list", db=journaled.url)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "DOMAIN", "SOURCE"]
    short_ids = {mid[:8] for mid in journaled.ids}
    rows = [line for line in lines if line.split()[:1] and line.split()[0] in short_ids]
    for row, mid, domain, state in zip(
        rows, journaled.ids[::-1], journaled.domains[::-1], journaled.states[::-1], strict=True
    ):
        assert row.split()[:2] == [mid[:8], domain]
        assert state in row


# -- show ------------------------------------------------------------------------------------


def test_show_finds_a_migration_by_unique_prefix(journaled: Journaled) -> None:
    mid = journaled.ids[0]
    data = cli_json("show", mid[:8].upper(), db=journaled.url)
    assert (data["id"], data["domain"], data["state"]) == (mid, "vm1", "CONFIRMED")


def _b64_or_none(value: str | None) -> bytes | None:
    return None if value is None else base64.b64decode(value, validate=True)


def test_show_json_has_every_field(journaled: Journaled) -> None:
    rolled_back = journaled.ids[1]
    data = cli_json("show", rolled_back, db=journaled.url)
    assert data["id"] == rolled_back
    assert (data["domain"], data["state"], data["protocol"]) == ("vm2", "ROLLED_BACK", 3)
    assert data["src"].startswith("test:///") and data["dst"].startswith("test:///")
    events = data["events"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    for e in events:
        assert set(EVENT_FIELDS) <= set(e)
        assert e["step"] in STEPS
        assert datetime.fromisoformat(e["at"]).tzinfo is not None
        assert e["cancelled"] in (None, True, False)
        _b64_or_none(e["cookie_in"])
        _b64_or_none(e["cookie_out"])
        assert e["error"] is None or set(e["error"]) == {"type", "message"}
    [error] = [e for e in events if e["error"]]
    assert (error["step"], error["error"]["type"]) == ("perform", "DriverError")
    begun = next(e for e in events if (e["step"], e["kind"]) == ("begin", "ok"))
    assert json.loads(_b64_or_none(begun["cookie_out"]) or b"")["host"]  # the driver's own bytes
    assert [e["cancelled"] for e in events if e["step"] == "confirm"] == [True, True]


@sqlite_only
def test_show_timeline_names_every_step_and_the_state(journaled: Journaled) -> None:
    proc = run_cli("show", journaled.ids[0], db=journaled.url)
    assert proc.returncode == 0, proc.stderr
    for step in STEPS:
        assert f" {step} " in proc.stdout
    assert "CONFIRMED" in proc.stdout
    assert journaled.ids[0] in proc.stdout


@sqlite_only
def test_test_host_define_and_list(journaled: Journaled, hosts: Hosts) -> None:
    defined = run_cli("test-host", "define", hosts.src_uri, "vm4", "--paused", "--memory", "1")
    assert defined.returncode == 0, defined.stderr
    assert "vm4 (paused, 1 MiB)" in defined.stdout
    rows = cli_json("test-host", "list", hosts.src_uri, db=journaled.url)
    assert rows == hosts.src.domains()
    assert [(r["name"], r["state"], r["job"]) for r in rows] == [
        ("vm2", "running", None),
        ("vm3", "running", None),
        ("vm4", "paused", None),
    ]


# -- hostile driver text -----------------------------------------------------------------------

HOSTILE = "\x1b[31mRED\x07\u202eevil " + "A" * 100_000


@dataclass
class Hostile:
    url: str
    migration_id: str


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    """A migration whose Perform failed with HOSTILE as its error text (set with the CLI)."""
    tmp = tmp_path_factory.mktemp("hostile")
    url = f"sqlite:///{tmp / 'journal.db'}"
    src, dst = TestDriver(f"test://{tmp / 'host-a'}"), TestDriver(f"test://{tmp / 'host-b'}")
    src.define("vm1", memory_mib=4)
    armed = run_cli(
        "test-host", "fault", src.uri, "--step", "perform", "--mode", "error", "--message", HOSTILE
    )
    assert armed.returncode == 0, armed.stderr
    proc = run_cli("migrate", "vm1", "--src", src.uri, "--dst", dst.uri, "--json", db=url)
    assert proc.returncode == 1, proc.stderr
    yield Hostile(url, json.loads(proc.stdout)["id"])


def assert_safe_for_a_terminal(text: str, bound: int) -> None:
    for raw in ("\x1b", "\x07", "\u202e"):
        assert raw not in text
    assert len(text) < bound


def test_show_escapes_and_bounds_hostile_error_text(hostile: Hostile) -> None:
    proc = run_cli("show", hostile.migration_id, db=hostile.url)
    assert proc.returncode == 0, proc.stderr
    assert_safe_for_a_terminal(proc.stdout, 20_000)
    assert "\\x1b[31mRED\\x07\\u202eevil" in proc.stdout
    assert "chars)" in proc.stdout  # says how much it left out


def test_list_escapes_and_bounds_hostile_reason(hostile: Hostile) -> None:
    proc = run_cli("list", db=hostile.url)
    assert proc.returncode == 0, proc.stderr
    assert_safe_for_a_terminal(proc.stdout, 2_000)
    assert "\\x1b[31mRED\\x07" in proc.stdout


def test_show_json_keeps_hostile_error_text_as_journaled(hostile: Hostile) -> None:
    proc = run_cli("show", hostile.migration_id, "--json", db=hostile.url)
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout  # JSON escapes it
    data = json.loads(proc.stdout)
    [error] = [e["error"] for e in data["events"] if e["error"]]
    # The coordinator journals at most ERROR_TEXT_MAX (64 KiB) of a driver's text.
    assert error == {"type": "DriverError", "message": HOSTILE[:ERROR_TEXT_MAX]}
    assert data["reason"].startswith("perform failed: \x1b[31mRED\x07\u202eevil AAA")


# -- db -------------------------------------------------------------------------------------


def test_db_current_says_up_to_date(db_url: str) -> None:
    Journal.open(db_url).close()
    proc = run_cli("db", "current", db=db_url)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{SCHEMA_HEAD} (up to date)"


def test_db_upgrade_is_idempotent(journaled: Journaled) -> None:
    for _ in range(2):
        proc = run_cli("db", "upgrade", db=journaled.url)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip().endswith(f"at revision {SCHEMA_HEAD}")
    with Journal.open(journaled.url) as journal:
        assert [m.id for m in journal.list()] == journaled.ids[::-1]


def test_db_upgrade_creates_a_new_sqlite_journal(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    proc = run_cli("db", "upgrade", db=url)
    assert proc.returncode == 0, proc.stderr
    with Journal.open(url, upgrade=False) as journal:
        assert journal.revision() == SCHEMA_HEAD


# -- diagram and demo -------------------------------------------------------------------------


def test_diagram_is_a_mermaid_state_diagram(tmp_path: Path) -> None:
    proc = run_cli("diagram", db=f"sqlite:///{tmp_path / 'unused.db'}")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "stateDiagram-v2"
    assert "    [*] --> NEW" in lines
    for state in State:
        assert state.value in proc.stdout
    assert "classDef" not in proc.stdout


@sqlite_only
def test_diagram_of_a_migration_highlights_its_path(journaled: Journaled) -> None:
    proc = run_cli("diagram", journaled.ids[1][:8], db=journaled.url)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "stateDiagram-v2"
    assert any(line.strip().startswith("classDef taken") for line in lines)
    taken = {line.split()[1] for line in lines if line.strip().startswith("class ")}
    assert {"NEW", "PERFORM_FAILED", "ROLLED_BACK"} <= taken
    assert not taken & {"CONFIRMED", "FAILED", "IN_DOUBT"}


def test_demo_migrates_and_prints_confirmed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    proc = run_cli("--db", url, "demo", "--memory", "8")
    assert proc.returncode == 0, proc.stderr
    assert "CONFIRMED" in proc.stdout
    with Journal.open(url) as journal:
        [m] = journal.list()
    assert (m.domain, m.state) == ("demo-vm", State.CONFIRMED)


@pytest.mark.no_replay  # migrations created by hand, never driven
@sqlite_only
def test_list_shows_a_page_and_says_how_many_more_all_streams_every_one(db_url: str) -> None:
    with Journal.open(db_url) as journal:
        for i in range(57):
            journal.create(
                domain=f"vm{i}", src="null://a", dst="null://b", protocol=3, flags=1,
                bandwidth=0, owner="c",
            )  # fmt: skip
    page = run_cli("list", db=db_url)
    assert page.returncode == 0, page.stderr
    assert len([line for line in page.stdout.splitlines() if " vm" in line]) == 50
    assert page.stderr == "... and 7 more (--limit N or --all shows them)\n"
    assert len(json.loads(run_cli("list", "--json", db=db_url).stdout)) == 57
    every = cli_json("list", "--all", db=db_url)
    assert every == cli_json("list", "--limit", "57", db=db_url)
    assert [r["domain"] for r in every][-1] == "vm0"
    table = run_cli("list", "--all", db=db_url)
    assert table.returncode == 0 and table.stderr == ""
    assert len([line for line in table.stdout.splitlines() if " vm" in line]) == 57
    assert table.stdout.splitlines()[0].split()[:2] == ["ID", "DOMAIN"]
    assert run_cli("list", "--limit", "57", db=db_url).stderr == ""
    refused = run_cli("list", "--all", "--limit", "3", db=db_url)
    assert refused.returncode == 2 and "--limit or --all" in refused.stderr


@sqlite_only
def test_list_all_of_an_empty_journal(db_url: str) -> None:
    assert cli_json("list", "--all", db=db_url) == []
    assert "no migrations" in run_cli("list", "--all", db=db_url).stdout
