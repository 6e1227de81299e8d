"""Post-copy's crash matrix on test hosts (docs/postcopy.md): a coordinator killed at each
post-copy point, then ``recover`` in new processes.

Each case runs ``migrator migrate --flag postcopy`` with ``perform.underway=postcopy``
(switch as soon as the transfer is underway) and ``<point>=crash`` (exit 137, as SIGKILL),
then ``recover --dry-run --json`` (changes nothing), ``recover --json`` and checks: the
migration ended CONFIRMED; the guest runs on the destination only, its image whole (the
checksum the source had); no step ever went back (no cancelled Finish or Confirm).
``MIGRATOR_POSTCOPY_MATRIX_OUT=FILE`` writes what each case did, for the table in
docs/postcopy.md.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrator import failpoints
from migrator.drivers.test import TestDriver
from migrator.drivers.test.transfer import sha256_of
from tests.conftest import assert_replays_consistently
from tests.crash.harness import (
    Rig,
    backend_rig,
    check_invariants,
    check_recovered_by_another,
    make_rig,
    sqlite_url,
)

POINTS = (
    "postcopy.intent",  # the switch's intent committed, the hosts not told
    "postcopy.called",  # the hosts switched, the outcome not committed
    "postcopy.recorded",  # POSTCOPY_ACTIVE committed
    "postcopy.underway",  # mid post-copy: pages still being sent
    "perform.called",  # every page sent, Perform's outcome not committed
    "perform.recorded",
    "finish.intent",  # Finish after post-copy
    "finish.called",
    "finish.recorded",
    "confirm.intent",
    "confirm.called",
)
SWITCH = "perform.underway=postcopy"
ARGV = ("--live", "--flag", "postcopy", "--bandwidth", "16")
MEMORY_MIB = 8
OUT_VAR = "MIGRATOR_POSTCOPY_MATRIX_OUT"
RESULTS: list[dict[str, Any]] = []

CASES = [pytest.param("sqlite", p, id=f"sqlite-{p}") for p in POINTS] + [
    pytest.param("postgres", p, id=f"postgres-{p}")
    for p in ("postcopy.intent", "postcopy.underway", "finish.called")
]


@pytest.fixture(scope="module", autouse=True)
def _write_results() -> Iterator[None]:
    yield
    out = os.environ.get(OUT_VAR)
    if out:
        Path(out).write_text(json.dumps(RESULTS, indent=1) + "\n")


def checksum(host: TestDriver, name: str) -> str | None:
    """The sha256 of the image ``name`` has on ``host`` (its memory, on a test host)."""
    dom = host._read(name)["domains"][name]
    return sha256_of(host.dir / dom["image"])


def crash(rig: Rig, point: str) -> None:
    env = {failpoints.ENV_VAR: f"{SWITCH},{point}=crash"}
    proc = rig.cli(*rig.migrate_argv(*ARGV, "--json"), env=env)
    assert proc.returncode == failpoints.CRASH_EXIT_CODE, (proc.returncode, proc.stderr)


def check_forward_only(m: dict[str, Any]) -> None:
    """After the switch's intent nothing went back: no cancelled step at all."""
    steps = [(e["step"], e["kind"]) for e in m["events"]]
    assert ("postcopy", "intent") in steps
    assert not [e for e in m["events"] if e["cancelled"]], "a step went back after the switch"


@pytest.mark.parametrize(("backend", "point"), CASES)
def test_a_crash_in_post_copy_is_recovered_forward(
    backend: str, point: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    rig = backend_rig(backend, tmp_path, request, memory_mib=MEMORY_MIB)
    before = checksum(rig.hosts.src, rig.domain)
    crash(rig, point)
    crashed = rig.only_migration()

    snapshot = rig.snapshot()
    code, planned = rig.cli_json("recover", "--dry-run")
    assert code == 0
    assert rig.snapshot() == snapshot, "recover --dry-run changed the journal or a host"
    code, done = rig.cli_json("recover")
    assert code == 0, done
    [plan], [row] = planned, done
    assert row["action"] == plan["action"]
    m = rig.view(crashed.id)
    assert m["state"] == "CONFIRMED", (m["state"], m["reason"])
    check_recovered_by_another(m, crashed.owner or "")
    check_invariants(m, rig.hosts)
    check_forward_only(m)
    assert checksum(rig.hosts.dst, rig.domain) == before, "the guest's memory changed"
    code, again = rig.cli_json("recover")
    assert (code, again) == (0, [])
    assert_replays_consistently(rig.db)
    RESULTS.append(
        {"point": point, "backend": backend, "crashed": str(crashed.state),
         "action": plan["action_code"], "plan": plan["action"], "end": m["state"]}
    )  # fmt: skip


def test_without_a_crash_post_copy_ends_confirmed_with_the_image_whole(tmp_path: Path) -> None:
    rig = make_rig(sqlite_url(tmp_path), tmp_path, memory_mib=MEMORY_MIB)
    before = checksum(rig.hosts.src, rig.domain)
    proc = rig.cli(*rig.migrate_argv(*ARGV), env={failpoints.ENV_VAR: SWITCH})
    assert proc.returncode == 0, proc.stderr
    m = rig.view(rig.only_migration().id)
    states = [e["state"] for e in m["events"]]
    assert states[5:8] == ["POSTCOPY_SWITCHING", "POSTCOPY_ACTIVE", "PERFORMED"], states
    assert m["events"][5]["detail"] == {"reason": "asked by failpoint perform.underway"}
    check_invariants(m, rig.hosts)
    assert checksum(rig.hosts.dst, rig.domain) == before
    assert_replays_consistently(rig.db)


def test_abort_after_the_switch_is_refused_in_one_line(tmp_path: Path) -> None:
    rig = make_rig(sqlite_url(tmp_path), tmp_path, memory_mib=MEMORY_MIB)
    crash(rig, "postcopy.underway")
    m = rig.only_migration()
    proc = rig.cli("abort", m.id)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"migrator: error: migration {m.id} is POSTCOPY_ACTIVE: it switched to post-copy: the"
        " destination runs the guest with part of its memory still on the source, so only"
        " going forward is safe; it cannot be aborted"
    ]
    assert not rig.only_migration().abort_requested
    code, done = rig.cli_json("recover")
    assert (code, done[0]["result"]) == (0, "CONFIRMED")


def test_a_destination_whose_copy_is_lost_ends_in_doubt_with_what_to_do(tmp_path: Path) -> None:
    """Killed mid post-copy, then the destination's incoming copy disappears: nothing can be
    resumed, so IN_DOUBT, the source kept paused, and the reason says how to go on."""
    rig = make_rig(sqlite_url(tmp_path), tmp_path, memory_mib=MEMORY_MIB)
    crash(rig, "postcopy.underway")
    m = rig.only_migration()
    with rig.hosts.dst._txn(rig.domain) as host:
        rig.hosts.dst._remove(host, rig.domain)
    code, done = rig.cli_json("recover")
    assert code == 3 and done[0]["result"] == "IN_DOUBT", done
    view = rig.view(m.id)
    assert rig.hosts.states(rig.domain) == ("paused", "absent")
    assert view["reason"].startswith("post-copy cannot be resumed: post-copy of 'vm1' cannot")
    assert f"`migrator resolve {m.id} --running-on src`" in view["reason"]
    check_forward_only(view)
    proc = rig.cli("resolve", m.id, "--running-on", "src")
    assert proc.returncode in (0, 1), proc.stderr
    assert rig.hosts.states(rig.domain) == ("running", "absent")
    assert_replays_consistently(rig.db)
