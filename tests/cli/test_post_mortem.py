"""From ``list`` and ``show`` alone, a person finds why a migration failed, at which step,
on which host, and what recovery did: for every failure rule of docs/states.md and every case
of the crash matrix (crashes are the in-process ``raise`` failpoint, then ``recover``).

The text checked is what the CLI prints: the same render functions, on a console as wide
as the CLI's when its output is not a terminal.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.console import Console

from migrator import failpoints, inspect
from migrator.cli.render import header, migrations_table, timeline
from migrator.drivers.test import TestDriver
from migrator.engine.coordinator import Coordinator
from migrator.journal.store import Journal
from tests.crash.harness import FAILPOINTS, SCENARIOS, reaches

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

SIDE = {"begin": "src", "prepare": "dst", "perform": "src", "finish": "dst", "confirm": "src"}


@dataclass
class Seen:
    """What ``show`` and ``list`` print for one migration."""

    header: dict[str, str]
    show: str
    row: str


def printed(*renderables: object) -> str:
    out = io.StringIO()
    console = Console(file=out, width=400, highlight=False, soft_wrap=False)
    for r in renderables:
        console.print(r)
    return out.getvalue()


def look(journal: Journal, migration_id: str) -> Seen:
    data = inspect.show(journal, migration_id)
    text = printed(header(data), timeline(data))
    rows: dict[str, str] = {}
    for line in printed(header(data)).splitlines():
        key, _, value = line.strip().partition("  ")
        rows.setdefault(key, value.strip())
    listed = printed(migrations_table([inspect.migration_dict(journal.get(migration_id))]))
    return Seen(rows, text, listed.splitlines()[1])


def rig(tmp_path: Path) -> tuple[TestDriver, TestDriver]:
    src = TestDriver(f"test://{tmp_path / 'a'}")
    dst = TestDriver(f"test://{tmp_path / 'b'}")
    src.define("vm1", memory_mib=1)
    return src, dst


def host(src: TestDriver, dst: TestDriver, side: str) -> TestDriver:
    return src if side == "src" else dst


# -- the failure rules -----------------------------------------------------------------------

RULES = [
    # (name, faults as (side, step, mode), end state, the step that failed or None)
    ("begin-fails", [("src", "begin", "error")], "FAILED", "begin"),
    ("prepare-fails", [("dst", "prepare", "error")], "ROLLED_BACK", "prepare"),
    ("perform-fails", [("src", "perform", "error")], "ROLLED_BACK", "perform"),
    ("finish-no-domain", [("dst", "finish", "no-domain")], "ROLLED_BACK", None),
    ("finish-raises-dst-runs", [("dst", "finish", "lost-reply")], "CONFIRMED", "finish"),
    (
        "finish-raises-probe-fails",
        [("dst", "finish", "error"), ("dst", "probe", "error")],
        "IN_DOUBT",
        "finish",
    ),
    ("confirm-fails", [("src", "confirm", "error")], "CONFIRMING", "confirm"),
]


@pytest.mark.parametrize(
    ("faults", "end", "failed_step"),
    [pytest.param(f, e, s, id=n) for n, f, e, s in RULES],
)
def test_list_and_show_explain_each_failure_rule(
    journal: Journal,
    tmp_path: Path,
    faults: list[tuple[str, str, str]],
    end: str,
    failed_step: str | None,
) -> None:
    src, dst = rig(tmp_path)
    for side, step, mode in faults:
        host(src, dst, side).set_fault(step, mode, message=f"{step} broke on {side}")
    coordinator = Coordinator(journal, confirm_attempts=2, retry_backoff=0)
    m = coordinator.migrate("vm1", src=src, dst=dst)
    assert m.state.value == end
    seen = look(journal, m.id)
    assert end in seen.row
    if end != "CONFIRMED":
        assert m.reason
        assert m.reason[:60] in seen.row  # list says why
        assert seen.header["reason"].startswith(m.reason[:60])
    if failed_step is not None:
        side = SIDE[failed_step]
        uri = host(src, dst, side).uri
        assert seen.header["failed at"].startswith(f"{failed_step} on {side} {uri} (seq ")
        if faults[0][2] == "error":
            assert f"{failed_step} broke on {side}" in seen.header["failed at"]
    else:
        assert "failed at" not in seen.header


# -- the crash matrix -------------------------------------------------------------------------

CASES = [
    pytest.param(scenario, fp, id=f"{scenario}-{fp}")
    for scenario in SCENARIOS
    for fp in FAILPOINTS
    if reaches(scenario, fp)
]


@pytest.mark.parametrize(("scenario", "failpoint"), CASES)
def test_show_explains_each_crash_and_its_recovery(
    journal: Journal,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    scenario: str,
    failpoint: str,
) -> None:
    src, dst = rig(tmp_path)
    for side, step, mode in SCENARIOS[scenario].faults:
        host(src, dst, side).set_fault(step, mode)
    armed = failpoints.Failpoints({failpoint: "raise"})
    crashed = Coordinator(journal, retry_backoff=0, failpoints=armed)
    with pytest.raises(failpoints.Crash):
        crashed.migrate("vm1", src=src, dst=dst)
    [m] = journal.list()
    crash_state = m.state
    last = journal.history(m.id)[-1]
    reports = Coordinator(journal, retry_backoff=0).recover(steal=True)
    if not reports:  # the crash came after the end state was committed: nothing to recover
        assert m.state.value in ("CONFIRMED", "ROLLED_BACK", "FAILED")
        assert "recovered" not in look(journal, m.id).header
        return
    seen = look(journal, m.id)
    step = last.step.value if last.step else "-"
    assert seen.header["recovered"].startswith(f"seq {last.seq + 1} by ")
    assert (
        f"coordinator {crashed.id} stopped in {crash_state} after seq {last.seq}"
        f" ({step} {last.kind}); claimed because " in seen.header["recovered"]
    )
    assert "RECOVERY by" in seen.show
    end = journal.get(m.id)
    assert end.state.value in seen.row
    if end.reason:
        assert end.reason[:60] in seen.row
    errors = [e for e in journal.history(m.id) if e.kind == "error" and e.step is not None]
    errors = [e for e in errors if e.step is not None and e.step.value != "probe"]
    if errors:
        first = errors[0]
        assert first.step is not None
        side = SIDE[first.step.value]
        expected = f"{first.step.value} on {side} {host(src, dst, side).uri} (seq {first.seq})"
        assert seen.header["failed at"].startswith(expected)


def test_show_says_who_resolved_an_in_doubt_migration(journal: Journal, tmp_path: Path) -> None:
    src, dst = rig(tmp_path)
    dst.set_fault("finish", "error", count=1)
    dst.set_fault("probe", "error", count=2)  # the pre-flight probe, then the one after Finish
    m = Coordinator(journal).migrate("vm1", src=src, dst=dst)
    assert m.state.value == "IN_DOUBT"
    operator = Coordinator(journal, coordinator_id="ops-desk:1:abc")
    operator.resolve(m.id[:8], running_on="src")
    seen = look(journal, m.id)
    [resolve] = [e for e in journal.history(m.id) if e.kind == "resolve"]
    assert seen.header["resolved"] == f"seq {resolve.seq} by ops-desk:1:abc: the domain runs on src"
    assert seen.header["failed at"].startswith(f"finish on dst {dst.uri}")
    assert "ROLLED_BACK" in seen.row
