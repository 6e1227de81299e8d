"""Render the crash matrix's results as the Markdown table of docs/recovery.md.

    python -m tests.crash.matrix_table            # runs tests/crash/test_matrix.py first
    python -m tests.crash.matrix_table FILE.json  # renders what a run wrote

A run writes its results when ``MIGRATOR_CRASH_MATRIX_OUT=FILE`` is set (see
``test_matrix.py``). Rows are failpoints, columns scenarios; each cell is the state the
crash left (as ``recover`` found it) and the end state after ``recover``, from the SQLite
run. Cases that also ran on PostgreSQL must have ended the same; a difference is an error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.crash.harness import FAILPOINTS, SCENARIOS

ROOT = Path(__file__).resolve().parents[2]


def cell(result: dict[str, Any]) -> str:
    if result["crashed_in"] is None:
        return f"not reached: {result['end']}"
    if result["action"] == "-":
        return f"{result['end']} (already)"
    return f"{result['crashed_in']} → {result['end']}"


def render(results: list[dict[str, Any]]) -> str:
    by_key = {(r["backend"], r["scenario"], r["failpoint"]): r for r in results}
    pg = [r for r in results if r["backend"] == "postgres"]
    for r in pg:
        lite = by_key[("sqlite", r["scenario"], r["failpoint"])]
        if (lite["crashed_in"], lite["end"]) != (r["crashed_in"], r["end"]):
            raise SystemExit(f"SQLite and PostgreSQL differ: {lite} vs {r}")
    scenarios = list(SCENARIOS.values())
    lines = [
        "| failpoint | " + " | ".join(s.title for s in scenarios) + " |",
        "|---|" + "---|" * len(scenarios),
    ]
    for fp in FAILPOINTS:
        cells = [cell(by_key[("sqlite", s.name, fp)]) for s in scenarios]
        lines.append(f"| `{fp}` | " + " | ".join(cells) + " |")
    ends: dict[str, int] = {}
    for r in results:
        if r["backend"] == "sqlite":
            ends[r["end"]] = ends.get(r["end"], 0) + 1
    summary = ", ".join(f"{n} {end}" for end, n in sorted(ends.items()))
    lines += [
        "",
        f"{sum(ends.values())} cases on SQLite: {summary}; {len(pg)} of them also on"
        " PostgreSQL, with the same results.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    if argv:
        results = json.loads(Path(argv[0]).read_text())
    else:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "matrix.json"
            env = {**os.environ, "MIGRATOR_CRASH_MATRIX_OUT": str(out)}
            cmd = [sys.executable, "-m", "pytest", "tests/crash/test_matrix.py", "-q",
                   "-p", "no:cacheprovider"]  # fmt: skip
            subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=sys.stderr)
            results = json.loads(out.read_text())
    sys.stdout.write(render(results))


if __name__ == "__main__":
    main(sys.argv[1:])
