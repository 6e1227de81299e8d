"""The goals of ``docs/performance.md`` checked against one run's figures.

``evaluate(results)`` gives one row per figure: what is measured, the goal's target, the
figure, its baseline from the same run, their ratio, and whether the goal is met (None for
a figure shown for context). It reads the results as ``bench_all`` makes them, or as its
``--json`` file holds them (thread counts then are strings):

    python -m tests.benchmarks.goals RESULTS.json

prints the table of a saved run again.
"""

from __future__ import annotations

from typing import Any

Row = tuple[str, str, str, str, str, bool | None]
LABEL = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
DBOS_TARGET = {"sqlite": 4.0, "postgresql": 3.0}


def _at(by_threads: dict[Any, float], threads: int) -> float | None:
    value = by_threads.get(threads, by_threads.get(str(threads)))
    return None if value is None else float(value)


def _rate(value: float) -> str:
    return f"{value:,.0f}/s"


def _throughput_rows(name: str, sweep: dict[str, Any], threads: list[int]) -> list[Row]:
    db, engine, ceiling = LABEL[name], sweep["engine"], sweep["ceiling"]
    e1, c1 = _at(engine, 1), _at(ceiling, 1)
    rows: list[Row] = []
    if e1 and c1:
        r = e1 / c1
        rows.append(
            (
                f"1. sequential, {db}: engine / ceiling",
                "≥ 0.85",
                _rate(e1),
                f"ceiling {_rate(c1)}",
                f"{r:.2f}",
                r >= 0.85,
            )
        )
    top, target, base_kind = (32, 2.0, "ceiling") if name == "sqlite" else (8, 3.0, "engine")
    et, base = _at(engine, top), (c1 if base_kind == "ceiling" else e1)
    if et and base:
        r = et / base
        rows.append(
            (
                f"2. {top} threads, {db}: engine / sequential {base_kind}",
                f"≥ {target:g}",
                _rate(et),
                f"sequential {base_kind} {_rate(base)}",
                f"{r:.2f}",
                r >= target,
            )
        )
    for t in threads:
        e, c, d = _at(engine, t), _at(ceiling, t), _at(sweep.get("dbos", {}), t)
        if e and d:
            r = e / d
            rows.append(
                (
                    f"3. {t} thread(s), {db}: engine / DBOS",
                    f"≥ {DBOS_TARGET[name]:g}",
                    _rate(e),
                    f"DBOS {_rate(d)}",
                    f"{r:.2f}",
                    r >= DBOS_TARGET[name],
                )
            )
        if e and c and t != 1:
            rows.append(
                (
                    f"{t} threads, {db}: engine / ceiling at {t} threads",
                    "—",
                    _rate(e),
                    f"ceiling {_rate(c)}",
                    f"{e / c:.2f}",
                    None,
                )
            )
    return rows


def _recover_rows(rec: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    null = {int(k): v for k, v in rec.get("null", {}).items()}
    for n, r in sorted(null.items()):
        goal = n >= 10_000
        rows.append(
            (
                f"{'4. ' if goal else ''}recover {n:,} orphans, null://",
                "≤ 10 s for 10,000" if goal else "—",
                f"{r['seconds']:.2f} s ({r['per_migration_ms']:.2f} ms each)",
                "—",
                f"{r['seconds'] / 10:.2f} of the budget" if goal else "—",
                r["seconds"] <= 10 if goal else None,
            )
        )
    if null:
        n, r = max(null.items())
        first = r["first_action_s"]
        rows.append(
            (
                f"4. recover {n:,} orphans, null://: first action",
                "≤ 100 ms",
                f"{1000 * first:.0f} ms",
                "—",
                f"{first / 0.1:.2f} of the budget",
                first <= 0.1,
            )
        )
    test = sorted((int(k), v) for k, v in rec.get("test", {}).items())
    for n, r in test:
        rows.append(
            (
                f"recover {n:,} orphans, test:///",
                "—",
                f"{r['seconds']:.1f} s ({r['per_migration_ms']:.1f} ms each)",
                "—",
                "—",
                None,
            )
        )
    if len(test) == 2:
        (n0, r0), (n1, r1) = test
        growth = r1["per_migration_ms"] / r0["per_migration_ms"]
        rows.append(
            (
                f"4. test:/// cost per migration, {n1:,} vs {n0:,} orphans",
                "flat (≤ 1.2)",
                f"{r1['per_migration_ms']:.1f} ms",
                f"{r0['per_migration_ms']:.1f} ms at {n0:,}",
                f"{growth:.2f}",
                growth <= 1.2,
            )
        )
    return rows


def _seconds_row(label: str, fig: dict[str, Any], budget: float) -> Row:
    s = fig["seconds"]
    return (
        label,
        f"≤ {1000 * budget:.0f} ms",
        f"{1000 * s:,.0f} ms ({fig['peak_mib']:.0f} MiB)",
        "—",
        f"{s / budget:.2f} of the budget",
        s <= budget,
    )


def _inspect_rows(ins: dict[str, Any]) -> list[Row]:
    size = f"{ins['migrations']:,} migrations / {ins['events']:,} events"
    rows = [
        _seconds_row(f"5. `list` on {size}", ins["list"], 0.3),
        (*_seconds_row(f"`list --limit 20` on {size}", ins["list --limit 20"], 0.3)[:5], None),
        _seconds_row(f"5. `show ID` on {size}", ins["show ID"], 0.3),
        _seconds_row(f"5. `stats` on {size}", ins["stats"], 0.5),
    ]
    export, small = ins["export --all"], ins["small export --all"]
    rate = export["events_per_s"]
    rows.append(
        (
            f"5. `export --all` on {size}: events/s",
            "≥ 50,000/s",
            f"{rate:,.0f}/s",
            "—",
            f"{rate / 50_000:.2f} of the target",
            rate >= 50_000,
        )
    )
    growth = export["peak_mib"] / small["peak_mib"]
    rows.append(
        (
            f"5. `export --all` on {size}: peak memory",
            "constant (≤ 1.5×)",
            f"{export['peak_mib']:.0f} MiB",
            f"{small['peak_mib']:.0f} MiB on 20 migrations",
            f"{growth:.2f}",
            growth <= 1.5,
        )
    )
    rows.append(_seconds_row("6. `migrator --help`", ins["--help"], 0.15))
    rows.append(_seconds_row("6. `migrator list` on 20 migrations", ins["small list"], 0.3))
    return rows


def evaluate(results: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    tp = results.get("throughput")
    if tp:
        for name in ("sqlite", "postgresql"):
            if name in tp:
                rows += _throughput_rows(name, tp[name], tp["threads"])
    if "recover" in results:
        rows += _recover_rows(results["recover"])
    if "inspect" in results:
        rows += _inspect_rows(results["inspect"])
    return rows


def markdown(rows: list[Row]) -> str:
    lines = [
        "| goal | target | measured | baseline (same run) | ratio | met |",
        "|---|---|---:|---:|---:|---|",
    ]
    for goal, target, measured, base, r, met in rows:
        verdict = "—" if met is None else ("yes" if met else "**not yet**")
        lines.append(f"| {goal} | {target} | {measured} | {base} | {r} | {verdict} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import json
    import sys
    from pathlib import Path

    print(markdown(evaluate(json.loads(Path(sys.argv[1]).read_text()))))
