"""Statistics over the journal, counted by the database: outcomes, reasons, step durations.

Each function takes a ``Connection``; ``Journal`` exposes them (``docs/journal.md``). The
``stats`` command and the Prometheus metrics are built on them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa

from migrator.journal.queries import filters
from migrator.journal.schema import events, migrations
from migrator.records import EventKind
from migrator.states import State

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
