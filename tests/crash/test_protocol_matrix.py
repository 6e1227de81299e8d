"""What v3 buys, measured: the crash matrix run for protocols v1, v2 and v3.

Each case migrates with ``--protocol N`` in a forked ``migrator`` process that dies at a
failpoint (``os._exit(137)``, as SIGKILL), runs ``migrator recover``, and records where the
domain survived: on the source, on the destination, or nowhere. Two host behaviours:

- ``clean``: the hosts do what they are asked; every failpoint of the protocol's steps.
- ``finish-fails``: the destination's Finish always raises (a host that cannot start the
  domain and cannot say so); no crash, and a crash where the transfer just ended and where
  Finish was just called (``MIGRATOR_PROTOCOL_MATRIX=all``: every failpoint from there on).

Invariants: never both copies running; every case ends in a terminal state; the journal
replays consistently; with v3 the domain is never lost. v1 and v2 lose it exactly where
Finish fails after Perform ended the source: that is the table in docs/protocols.md
(``MIGRATOR_PROTOCOL_MATRIX_OUT=FILE`` writes the results; ``python -m
tests.crash.protocol_table FILE`` renders them).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrator import failpoints
from migrator.states import SEQUENCES, Step
from tests.conftest import assert_replays_consistently
from tests.crash.harness import Rig, make_rig, sqlite_url

OUT_VAR = "MIGRATOR_PROTOCOL_MATRIX_OUT"
RESULTS: list[dict[str, Any]] = []
"""What the cases of this run found, for ``MIGRATOR_PROTOCOL_MATRIX_OUT`` only."""
TERMINAL = ("CONFIRMED", "ROLLED_BACK", "FAILED", "LOST")
ACTIVE = ("running", "paused")

FINISH = {3: Step.FINISH, 2: Step.FINISH2, 1: Step.FINISH1}
PERFORM = {3: Step.PERFORM, 2: Step.PERFORM2, 1: Step.PERFORM1}


TUNNELLED = 0
"""The protocol key of tunnelled v3 in this matrix (journaled as protocol 3)."""
FINISH[TUNNELLED], PERFORM[TUNNELLED] = Step.FINISH, Step.PERFORM


def failpoints_of(protocol: int) -> list[str]:
    if protocol == TUNNELLED:
        steps = [Step.PREPARE_TUNNEL if s is Step.PREPARE else s for s in SEQUENCES[3]]
        return [f"{step}.{p}" for step in steps for p in failpoints.POINTS]
    return [f"{step}.{p}" for step in SEQUENCES[protocol] for p in failpoints.POINTS]


def after_transfer(protocol: int) -> list[str]:
    """The failpoints from the end of Perform's call on (with ``MIGRATOR_PROTOCOL_MATRIX=all``;
    by default the two that matter most, for CI time: each case waits out Finish's retries)."""
    points = failpoints_of(protocol)
    if os.environ.get("MIGRATOR_PROTOCOL_MATRIX") != "all":
        return [f"{PERFORM[protocol]}.called", f"{FINISH[protocol]}.called"]
    return points[points.index(f"{PERFORM[protocol]}.called") :]


CASES = (
    [
        pytest.param(v, "clean", fp, id=f"v{v}-clean-{fp}")
        for v in (3, 2, 1)
        for fp in failpoints_of(v)
    ]
    + [
        pytest.param(TUNNELLED, "clean", fp, id=f"tunnelled-clean-{fp}")
        for fp in failpoints_of(TUNNELLED)
    ]
    + [
        pytest.param(v, "finish-fails", fp, id=f"v{v}-finish-fails-{fp or 'no-crash'}")
        for v in (3, 2, 1)
        for fp in [None, *after_transfer(v)]
    ]
)


def expected_end(protocol: int, behaviour: str, failpoint: str | None) -> str:
    """v3 goes back until the transfer completed; v2 and v1 replay an interrupted Perform
    (the source still runs it) and so go forward from Perform on, back before it."""
    if behaviour == "finish-fails":
        return "ROLLED_BACK" if protocol in (3, TUNNELLED) else "LOST"
    assert failpoint is not None
    step = failpoint.partition(".")[0]
    points = failpoints_of(protocol)
    if protocol in (3, TUNNELLED):
        back = points.index(failpoint) <= points.index(f"{PERFORM[protocol]}.intent")
        return "ROLLED_BACK" if back else "CONFIRMED"
    if step in ("dump_xml", "prepare1"):
        return "FAILED"
    return "ROLLED_BACK" if step == "prepare2" else "CONFIRMED"


@pytest.fixture(scope="module", autouse=True)
def _write_results() -> Iterator[None]:
    yield
    out = os.environ.get(OUT_VAR)
    if out:
        Path(out).write_text(json.dumps(RESULTS, indent=1) + "\n")


def survived(rig: Rig, m: dict[str, Any]) -> str:
    src = rig.hosts.src.probe(m["domain"]).state
    dst = rig.hosts.dst.probe(m["dname"] or m["domain"]).state
    on_src, on_dst = src in ACTIVE, dst in ACTIVE
    assert not (src == "running" and dst == "running"), "both copies run"
    if on_src and on_dst:
        return "both (one paused)"
    return "src" if on_src else "dst" if on_dst else "nowhere"


@pytest.mark.parametrize(("protocol", "behaviour", "failpoint"), CASES)
def test_where_the_domain_survives(
    protocol: int, behaviour: str, failpoint: str | None, tmp_path: Path
) -> None:
    rig = make_rig(sqlite_url(tmp_path), tmp_path)
    if behaviour == "finish-fails":
        rig.hosts.dst.set_fault(str(FINISH[protocol]), "error", message="cannot start it")
    env = {failpoints.ENV_VAR: f"{failpoint}=crash"} if failpoint else None
    how = ["--tunnelled"] if protocol == TUNNELLED else ["--protocol", str(protocol)]
    proc = rig.cli(*rig.migrate_argv(*how, "--json"), env=env)
    crashed_in = None
    if failpoint:
        assert proc.returncode == failpoints.CRASH_EXIT_CODE, (proc.returncode, proc.stderr)
        crashed_in = rig.only_migration().state.value
        code, done = rig.cli_json("recover")
        assert code == (1 if any(r["result"] == "LOST" for r in done) else 0), done
    m = rig.view(rig.only_migration().id)
    assert m["protocol"] == (protocol or 3)
    assert m["state"] in TERMINAL, (m["state"], m["reason"])
    seqs = [e["seq"] for e in m["events"]]
    assert seqs == list(range(1, len(seqs) + 1))
    assert m["state"] == expected_end(protocol, behaviour, failpoint), m["reason"]
    where = survived(rig, m)
    expected = {"CONFIRMED": "dst", "ROLLED_BACK": "src", "FAILED": "src", "LOST": "nowhere"}
    assert where == expected[m["state"]], (m["state"], where, m["reason"])
    if protocol in (3, TUNNELLED):
        assert where != "nowhere", "v3 must never lose the domain"
    assert_replays_consistently(rig.db)
    RESULTS.append(
        {
            "protocol": protocol,
            "behaviour": behaviour,
            "failpoint": failpoint,
            "crashed_in": crashed_in,
            "end": m["state"],
            "where": where,
        }
    )


def test_v2_and_v1_lose_the_domain_only_where_finish_fails_after_perform() -> None:
    """The seed's argument, over every case of the matrix: each case above checks that it
    ends as ``expected_end`` says and that ``LOST`` leaves the domain nowhere, so the table
    of expected ends is what the hosts did. Needs no other test to have run first."""
    ends = {(p, b, fp): expected_end(p, b, fp) for p, b, fp in (c.values for c in CASES)}
    lost = {(p, b) for (p, b, _fp), end in ends.items() if end == "LOST"}
    assert lost == {(2, "finish-fails"), (1, "finish-fails")}
    assert all(end == "LOST" for (p, b, _fp), end in ends.items() if (p, b) in lost)
    assert {p for (p, _b, _fp) in ends} == {3, TUNNELLED, 2, 1}
