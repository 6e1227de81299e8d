"""Statistics over the journal, counted by the database: outcomes, reasons, step durations.

Each function takes a ``Db`` (``reads.py``: SQL that SQLite and PostgreSQL both run, on a
DBAPI connection); ``Journal`` and ``SqliteReader`` expose them (``docs/journal.md``). The
``stats`` command and the Prometheus metrics are built on them. On a large journal they read
indexes, never every event: ``step_summaries`` counts and ranks step durations on the
(step, kind, duration) index of revision 0002.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from migrator.journal.reads import Db, Filters, in_list, where_sql
from migrator.records import EventKind
from migrator.states import State, Step

STEP_OUTCOMES = (EventKind.OK.value, EventKind.ERROR.value)
"""The event kinds that end a driver hook's call, and carry its duration."""
ALL = Filters()
"""Every migration."""
_KINDS = f"kind IN ({', '.join(repr(k) for k in STEP_OUTCOMES)})"
_OUTCOME = f"{_KINDS} AND step IS NOT NULL AND duration IS NOT NULL"
"""Step outcomes (``STEP_OUTCOMES``) with their duration."""


@dataclasses.dataclass(frozen=True, slots=True)
class StepDuration:
    """How long one step's driver hook took, and whether it succeeded."""

    step: str
    kind: str
    duration: float


class Histogram(NamedTuple):
    """Step outcomes of one (step, kind): how many took at most each bucket's seconds,
    their total seconds and how many there were."""

    counts: list[int]
    total: float
    calls: int


def _count_by(db: Db, key: str, filters: Filters) -> list[tuple[Any, int]]:
    where, params = filters.where(db.flavor)
    sql = f"SELECT {key}, count(*) AS n FROM migrations{where_sql(where)}"
    found = db.rows(f"{sql} GROUP BY {key} ORDER BY n DESC, {key}", params)
    return [(row[0], int(row[1])) for row in found]


def count_by_state(db: Db, filters: Filters = ALL) -> list[tuple[State, int]]:
    """``(state, count)`` of the migrations ``filters`` choose, most first."""
    return [(State(s), n) for s, n in _count_by(db, "state", filters)]


def count_by_reason(db: Db, filters: Filters = ALL) -> list[tuple[str | None, int]]:
    """``(reason, count)`` of the migrations ``filters`` choose, most first."""
    return _count_by(db, "reason", filters)


def step_durations(db: Db, filters: Filters = ALL) -> list[StepDuration]:
    """The duration of every step outcome of the migrations ``filters`` choose."""
    where, params = filters.where(db.flavor)
    chosen = f"SELECT id FROM migrations{where_sql(where)}"
    sql = f"SELECT step, kind, duration FROM migration_events WHERE {_OUTCOME}"
    if where:
        sql += f" AND migration_id IN ({chosen})"
    return [StepDuration(r[0], r[1], float(r[2])) for r in db.rows(sql, params)]


def duration_buckets(db: Db, buckets: Sequence[float]) -> dict[tuple[str, str], Histogram]:
    """Per (step, kind) of step outcomes, a histogram of their durations over ``buckets``."""
    params = {f"b{i}": float(b) for i, b in enumerate(buckets)}
    columns = "".join(f", sum(CASE WHEN duration <= :{n} THEN 1 ELSE 0 END)" for n in params)
    sql = (
        f"SELECT step, kind, sum(duration), count(*){columns} FROM migration_events"
        f" WHERE {_OUTCOME} GROUP BY step, kind"
    )
    return {
        (r[0], r[1]): Histogram([int(n or 0) for n in r[4:]], float(r[2] or 0.0), int(r[3]))
        for r in db.rows(sql, params)
    }


@dataclasses.dataclass(frozen=True, slots=True)
class StepSummary:
    """One step's outcomes: how many, how many failed, nearest-rank p50 and p95, the max."""

    count: int
    errors: int
    p50: float
    p95: float
    max: float


def rank(fraction: float, count: int) -> int:
    """The 1-based nearest rank of the ``fraction`` percentile among ``count`` values."""
    return max(1, math.ceil(fraction * count))


def summarize(durations: Iterable[StepDuration]) -> dict[str, StepSummary]:
    """Per step, the summary of ``durations`` (all of them in memory: for small sets)."""
    by_step: dict[str, list[StepDuration]] = {}
    for d in durations:
        by_step.setdefault(d.step, []).append(d)
    out = {}
    for step, rows in sorted(by_step.items()):
        values = sorted(r.duration for r in rows)
        n = len(values)
        out[step] = StepSummary(
            count=n,
            errors=sum(1 for r in rows if r.kind == EventKind.ERROR),
            p50=values[rank(0.50, n) - 1],
            p95=values[rank(0.95, n) - 1],
            max=values[-1],
        )
    return out


def _nth(db: Db, step: str, kinds: Sequence[str], n: int, total: int) -> float:
    """The ``n``-th smallest duration (1-based) of ``step``'s ``total`` outcomes of ``kinds``.

    Read from the nearer end of the (step, kind, duration) index, at an offset: the p95 and
    the max are near its top. Several kinds: the database orders their durations.
    """
    ascending = n - 1 <= total - n
    params: dict[str, Any] = {"step": step, "offset": n - 1 if ascending else total - n}
    chosen = in_list("kind", "k", kinds, params) if len(kinds) > 1 else "kind = :k0"
    params.setdefault("k0", kinds[0])
    sql = (
        f"SELECT duration FROM migration_events WHERE step = :step AND {chosen}"
        f" AND duration IS NOT NULL ORDER BY duration{'' if ascending else ' DESC'}"
        " LIMIT 1 OFFSET :offset"
    )
    return float(db.one(sql, params))


def step_summaries(db: Db) -> dict[str, StepSummary]:
    """Per step, the summary of all its outcomes, from the (step, kind, duration) index:
    counts per (step, kind), the percentiles and the max at their rank; no event is loaded."""
    out = {}
    sql = (
        "SELECT kind, count(*) FROM migration_events"
        f" WHERE step = :step AND {_KINDS} AND duration IS NOT NULL GROUP BY kind"
    )
    for step in sorted(s.value for s in Step):
        runs = {row[0]: int(row[1]) for row in db.rows(sql, {"step": step})}
        total = sum(runs.values())
        if total:
            kinds = sorted(runs)
            out[step] = StepSummary(
                count=total,
                errors=runs.get(EventKind.ERROR.value, 0),
                p50=_nth(db, step, kinds, rank(0.50, total), total),
                p95=_nth(db, step, kinds, rank(0.95, total), total),
                max=_nth(db, step, kinds, total, total),
            )
    return out
