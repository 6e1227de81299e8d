"""Statistics over the journal, counted by the database: outcomes, reasons, step durations.

Each function takes a ``Connection``; ``Journal`` exposes them (``docs/journal.md``). The
``stats`` command and the Prometheus metrics are built on them. On a large journal they read
indexes, never every event: ``step_summaries`` counts and ranks step durations on the
(step, kind, duration) index of revision 0002.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa

from migrator.journal.queries import filters
from migrator.journal.schema import events, migrations
from migrator.records import EventKind
from migrator.states import State, Step

STEP_OUTCOMES = (EventKind.OK.value, EventKind.ERROR.value)
"""The event kinds that end a driver hook's call, and carry its duration."""


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


def _count_by(
    conn: sa.Connection,
    key: sa.ColumnElement[Any],
    states: Iterable[State],
    since: datetime | None,
) -> list[tuple[Any, int]]:
    count = sa.func.count().label("n")
    query = (
        sa.select(key, count)
        .where(*filters(states, since, None, None, None))
        .group_by(key)
        .order_by(count.desc(), key)
    )
    return [(row[0], int(row[1])) for row in conn.execute(query)]


def count_by_state(
    conn: sa.Connection, *, since: datetime | None = None
) -> list[tuple[State, int]]:
    """``(state, count)`` of the migrations created at or after ``since``, most first."""
    return [(State(s), n) for s, n in _count_by(conn, migrations.c.state, (), since)]


def count_by_reason(
    conn: sa.Connection, *, states: Iterable[State] = (), since: datetime | None = None
) -> list[tuple[str | None, int]]:
    """``(reason, count)`` of the migrations in ``states`` (any if empty), most first."""
    return [(r, n) for r, n in _count_by(conn, migrations.c.reason, states, since)]


def step_durations(conn: sa.Connection, *, since: datetime | None = None) -> list[StepDuration]:
    """The duration of every step outcome of the migrations created at or after ``since``."""
    query = (
        sa.select(events.c.step, events.c.kind, events.c.duration)
        .join(migrations, migrations.c.id == events.c.migration_id)
        .where(
            events.c.kind.in_(STEP_OUTCOMES),
            events.c.step.is_not(None),
            events.c.duration.is_not(None),
            *filters((), since, None, None, None),
        )
    )
    return [StepDuration(r.step, r.kind, float(r.duration)) for r in conn.execute(query)]


def duration_buckets(
    conn: sa.Connection, buckets: Sequence[float]
) -> dict[tuple[str, str], Histogram]:
    """Per (step, kind) of step outcomes, a histogram of their durations over ``buckets``."""
    d = events.c.duration
    columns = [sa.func.sum(sa.case((d <= b, 1), else_=0)) for b in buckets]
    query = (
        sa.select(events.c.step, events.c.kind, sa.func.sum(d), sa.func.count(), *columns)
        .where(events.c.kind.in_(STEP_OUTCOMES), events.c.step.is_not(None), d.is_not(None))
        .group_by(events.c.step, events.c.kind)
    )
    return {
        (r[0], r[1]): Histogram([int(n or 0) for n in r[4:]], float(r[2] or 0.0), int(r[3]))
        for r in conn.execute(query)
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


def _outcomes(step: str, kind: str) -> sa.Select[Any]:
    """The durations of ``step``'s outcomes of ``kind``, in the order of their index."""
    d = events.c.duration
    return (
        sa.select(d).where(events.c.step == step, events.c.kind == kind, d.is_not(None)).order_by(d)
    )


def _nth(conn: sa.Connection, runs: dict[str, int], step: str, n: int) -> float:
    """The ``n``-th smallest duration (1-based) of ``step``'s outcomes of every kind in ``runs``.

    One kind: one look-up at an offset of the (step, kind, duration) index. Several: their
    index-ordered streams merged, read up to rank ``n`` (constant memory).
    """
    if len(runs) == 1:
        (kind,) = runs
        return float(conn.execute(_outcomes(step, kind).limit(1).offset(n - 1)).scalar_one())
    streams = [
        (float(r[0]) for r in conn.execute(_outcomes(step, kind).execution_options(yield_per=1000)))
        for kind in runs
    ]
    return next(itertools.islice(heapq.merge(*streams), n - 1, None))


def step_summaries(conn: sa.Connection) -> dict[str, StepSummary]:
    """Per step, the summary of all its outcomes, from the (step, kind, duration) index:
    counts and maxima per (step, kind), percentiles at their rank; no event is loaded."""
    d = events.c.duration
    out = {}
    for step in sorted(s.value for s in Step):
        runs: dict[str, int] = {}
        top = 0.0
        for kind in STEP_OUTCOMES:
            where = (events.c.step == step, events.c.kind == kind, d.is_not(None))
            n = int(conn.execute(sa.select(sa.func.count()).where(*where)).scalar_one())
            if n:
                runs[kind] = n
                top = max(
                    top, float(conn.execute(sa.select(sa.func.max(d)).where(*where)).scalar_one())
                )
        total = sum(runs.values())
        if total:
            out[step] = StepSummary(
                count=total,
                errors=runs.get(EventKind.ERROR.value, 0),
                p50=_nth(conn, runs, step, rank(0.50, total)),
                p95=_nth(conn, runs, step, rank(0.95, total)),
                max=top,
            )
    return out
