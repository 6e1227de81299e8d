"""Render the protocol crash matrix as the tables of docs/protocols.md.

    python -m tests.crash.protocol_table            # runs test_protocol_matrix.py (all) first
    python -m tests.crash.protocol_table FILE.json  # renders what a run wrote

Rows are crash points, named by the step's place in the sequence (v3's Begin and v2's
DumpXML share the first row; v1 has none); columns are protocols; each cell says where the
domain survived and the end state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from migrator import failpoints

ROOT = Path(__file__).resolve().parents[2]

PHASE = {
    "begin": "Begin / DumpXML", "dump_xml": "Begin / DumpXML",
    "prepare": "Prepare", "prepare2": "Prepare", "prepare1": "Prepare",
    "prepare_tunnel": "Prepare",
    "perform": "Perform", "perform2": "Perform", "perform1": "Perform",
    "finish": "Finish", "finish2": "Finish", "finish1": "Finish",
    "confirm": "Confirm",
}  # fmt: skip
PHASES = ["Begin / DumpXML", "Prepare", "Perform", "Finish", "Confirm"]
POINT = {"intent": "after its intent", "called": "after its call", "recorded": "after its outcome"}
TITLES = {
    "clean": "Hosts that do what they are asked",
    "finish-fails": "The destination's Finish always fails",
}


def row_of(failpoint: str | None) -> str:
    if failpoint is None:
        return "no crash"
    step, _, point = failpoint.partition(".")
    return f"{PHASE[step]}, {POINT[point]}"


def cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return "-"
    where = "**nowhere**" if r["where"] == "nowhere" else f"on {r['where']}"
    return f"{where} ({r['end']})"


def render(results: list[dict[str, Any]]) -> str:
    out: list[str] = []
    for behaviour, title in TITLES.items():
        mine = [r for r in results if r["behaviour"] == behaviour]
        if not mine:
            continue
        by = {(row_of(r["failpoint"]), r["protocol"]): r for r in mine}
        labels = ["no crash"]
        labels += [f"{ph}, {POINT[p]}" for ph in PHASES for p in failpoints.POINTS]
        columns = [v for v in (1, 2, 3, 0) if any(r["protocol"] == v for r in mine)]
        names = ["v3 tunnelled" if v == 0 else f"v{v}" for v in columns]
        out += [f"**{title}**", "", "| crash | " + " | ".join(names) + " |"]
        out.append("|---|" + "---|" * len(columns))
        for label in labels:
            cells = [by.get((label, v)) for v in columns]
            if any(cells):
                out.append(f"| {label} | " + " | ".join(cell(c) for c in cells) + " |")
        out.append("")
    lost = sorted({r["protocol"] or 3 for r in results if r["where"] == "nowhere"})
    out.append(
        f"{len(results)} cases; the domain was lost with "
        + (", ".join(f"v{v}" for v in lost) or "no protocol")
        + (", never with v3." if 3 not in lost else ".")
    )
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> None:
    if argv:
        results = json.loads(Path(argv[0]).read_text())
    else:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "matrix.json"
            env = {
                **os.environ,
                "MIGRATOR_PROTOCOL_MATRIX_OUT": str(out),
                "MIGRATOR_PROTOCOL_MATRIX": "all",
            }
            cmd = [sys.executable, "-m", "pytest", "tests/crash/test_protocol_matrix.py", "-q",
                   "-p", "no:cacheprovider"]  # fmt: skip
            subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=sys.stderr)
            results = json.loads(out.read_text())
    sys.stdout.write(render(results))


if __name__ == "__main__":
    main(sys.argv[1:])
