"""The crash matrix (docs/recovery.md): every failpoint crossed with every failure scenario.

Each case runs ``migrator migrate`` in a subprocess with ``MIGRATOR_FAILPOINTS=<fp>=crash``
(the process dies with exit 137, like SIGKILL), then, in new processes,
``recover --dry-run --json``, ``recover --json`` and ``recover --json`` again, and checks
the invariants of ``harness.py`` against the real test hosts and the journal; finally
``migrator replay``'s check: today's engine, crashing where the journal says it did, makes
the decisions the journal recorded.

The scenarios' host faults stay armed through recovery: they model how the host behaves,
so a replayed Finish(cancelled=0) meets the same ``no-domain`` or ``lost-reply`` as the
first call did. All 75 cases run on SQLite; on PostgreSQL every failpoint with the success
scenario, and each failing scenario at the step whose fault fires (the recovery logic is the
same; the journal backend is what differs): 23 cases. ``MIGRATOR_CRASH_PG=all`` runs all 75
there too (about a minute more).

Set ``MIGRATOR_CRASH_MATRIX_OUT=FILE`` to have the run write what each case did as JSON;
``python -m tests.crash.matrix_table FILE`` renders it as the table in docs/recovery.md.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrator import failpoints
from tests.conftest import assert_replays_consistently
from tests.crash.harness import (
    FAILPOINTS,
    SCENARIOS,
    TERMINAL,
    Rig,
    backend_rig,
    check_invariants,
    check_recovered_by_another,
    expected_end,
    make_rig,
    reaches,
    sqlite_url,
)

OUT_VAR = "MIGRATOR_CRASH_MATRIX_OUT"
RESULTS: list[dict[str, Any]] = []

ALL_ON_PG = os.environ.get("MIGRATOR_CRASH_PG") == "all"
PG_EXTRA = {
    # Each failing scenario where its fault fires: the failed-outcome states, on PostgreSQL.
    ("prepare-fails", "prepare.called"),
    ("prepare-fails", "prepare.recorded"),
    ("perform-fails", "perform.called"),
    ("perform-fails", "perform.recorded"),
    ("finish-no-domain", "finish.called"),
    ("finish-no-domain", "finish.recorded"),
    ("finish-raises", "finish.called"),
    ("finish-raises", "finish.recorded"),
}


def _on_pg(scenario: str, failpoint: str) -> bool:
    """All 75 with MIGRATOR_CRASH_PG=all; else every failpoint with the success scenario,
    and each failing scenario at the step whose fault fires."""
    return ALL_ON_PG or scenario == "success" or (scenario, failpoint) in PG_EXTRA


REACHED = [
    pytest.param(backend, scenario, fp, id=f"{backend}-{scenario}-{fp}")
    for backend in ("sqlite", "postgres")
    for scenario in SCENARIOS
    for fp in FAILPOINTS
    if reaches(scenario, fp) and (backend == "sqlite" or _on_pg(scenario, fp))
]

UNREACHED = [
    pytest.param(scenario, fp, id=f"sqlite-{scenario}-{fp}")
    for scenario in SCENARIOS
    for fp in FAILPOINTS
    if not reaches(scenario, fp)
]


@pytest.fixture(scope="module", autouse=True)
def _write_results() -> Iterator[None]:
    yield
    out = os.environ.get(OUT_VAR)
    if out:
        Path(out).write_text(json.dumps(RESULTS, indent=1) + "\n")


def _crash(rig: Rig, failpoint: str) -> None:
    proc = rig.cli(*rig.migrate_argv("--json"), env={failpoints.ENV_VAR: f"{failpoint}=crash"})
    assert proc.returncode == failpoints.CRASH_EXIT_CODE, (proc.returncode, proc.stderr)
    assert proc.stdout == "", "a crashed coordinator prints nothing"


@pytest.mark.parametrize(("backend", "scenario", "failpoint"), REACHED)
def test_crash_at_failpoint_is_recovered_to_a_safe_end(
    backend: str, scenario: str, failpoint: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    rig = backend_rig(backend, tmp_path, request)
    rig.arm(SCENARIOS[scenario])
    _crash(rig, failpoint)
    crashed = rig.only_migration()

    # The dry run prints the plan and changes nothing: no journal row, no host byte.
    before = rig.snapshot()
    code, planned = rig.cli_json("recover", "--dry-run")
    assert code == 0
    assert rig.snapshot() == before, "recover --dry-run changed the journal or a host"

    code, done = rig.cli_json("recover")
    assert code == 0, done
    if crashed.state.value in TERMINAL:
        # The crash came after the last outcome was committed: nothing is left to do.
        assert (planned, done) == ([], [])
        m = rig.view(crashed.id)
        assert not any(e["kind"] == "recovery" for e in m["events"])
        action = "-"
    else:
        [plan], [row] = planned, done
        assert (plan["id"], plan["state"]) == (crashed.id, crashed.state.value)
        assert plan["because"] == "owner process is gone"
        assert plan["result"] is None
        assert row["action"] == plan["action"], "recover did not do what --dry-run said"
        assert (row["claimed"], row["because"]) == (True, "owner process is gone")
        m = rig.view(crashed.id)
        assert row["result"] == m["state"]
        claim = check_recovered_by_another(m, crashed.owner or "")
        assert claim["detail"]["plan"] == plan["action"]
        action = plan["action_code"]

    # No scenario here leaves the destination unprobeable, so IN_DOUBT is never legitimate.
    check_invariants(m, rig.hosts)
    assert m["state"] == expected_end(scenario, failpoint), m["reason"]

    code, again = rig.cli_json("recover")
    assert (code, again) == (0, []), "a second recover found something to claim"
    assert_replays_consistently(rig.db)  # today's engine decides as the journal recorded

    RESULTS.append(
        {
            "backend": backend,
            "scenario": scenario,
            "failpoint": failpoint,
            "crashed_in": crashed.state.value,
            "action": action,
            "end": m["state"],
        }
    )


def _outcome(rig: Rig, env: dict[str, str] | None) -> tuple[Any, ...]:
    proc = rig.cli(*rig.migrate_argv("--json"), env=env)
    out = json.loads(proc.stdout)
    m = rig.view(out["id"])
    events = tuple((e["step"], e["kind"], e["cancelled"], e["attempt"]) for e in m["events"])
    return proc.returncode, m["state"], m["reason"], events, rig.hosts.states(rig.domain)


@pytest.mark.parametrize(("scenario", "failpoint"), UNREACHED)
def test_unreached_failpoint_leaves_the_migration_as_without_it(
    scenario: str, failpoint: str, tmp_path: Path
) -> None:
    plain = make_rig(sqlite_url(tmp_path / "plain"), tmp_path / "plain")
    armed = make_rig(sqlite_url(tmp_path / "armed"), tmp_path / "armed")
    for rig in (plain, armed):
        rig.arm(SCENARIOS[scenario])
    expected = _outcome(plain, None)
    assert _outcome(armed, {failpoints.ENV_VAR: f"{failpoint}=crash"}) == expected
    RESULTS.append(
        {
            "backend": "sqlite",
            "scenario": scenario,
            "failpoint": failpoint,
            "crashed_in": None,
            "action": None,
            "end": expected[1],
        }
    )
