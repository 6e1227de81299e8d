"""What the two drivers differ in: parameters, timestamps, JSON and booleans."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from migrator.journal.flavor import (
    POSTGRESQL,
    SQLITE,
    flavor,
    sqlite_datetime,
    sqlite_iso,
    sqlite_text,
)


def test_postgresql_names_its_parameters_as_psycopg_does() -> None:
    sql = "SELECT a FROM t WHERE b LIKE :host ESCAPE '/' AND c::text = :c1 AND d = '%'"
    assert POSTGRESQL.sql(sql) == (
        "SELECT a FROM t WHERE b LIKE %(host)s ESCAPE '/' AND c::text = %(c1)s AND d = '%%'"
    )
    assert SQLITE.sql(sql) == sql


def test_each_dialect_has_its_flavor() -> None:
    assert flavor("sqlite") is SQLITE and flavor("postgresql") is POSTGRESQL


@pytest.mark.parametrize(
    "at",
    [
        datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        datetime(2026, 1, 2, 5, 4, 5, 1, tzinfo=timezone(timedelta(hours=2))),
    ],
)
def test_a_timestamp_comes_back_from_its_sqlite_text_as_the_same_instant_in_utc(
    at: datetime,
) -> None:
    back = sqlite_datetime(sqlite_text(at))
    assert back == at and back is not None and back.utcoffset() == timedelta(0)
    assert back.isoformat() == at.astimezone(UTC).isoformat()
    assert sqlite_iso(sqlite_text(at)) == POSTGRESQL.iso(at) == at.astimezone(UTC).isoformat()


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("2026-01-02 03:04:05", "2026-01-02T03:04:05+00:00"),
        ("2026-01-02 03:04:05.5", "2026-01-02T03:04:05.500000+00:00"),
        ("2026-01-02 05:04:05+02:00", "2026-01-02T03:04:05+00:00"),
    ],
)
def test_sqlite_text_of_other_shapes_is_read_in_utc(text: str, iso: str) -> None:
    back = sqlite_datetime(text)
    assert back is not None and back.isoformat() == iso == sqlite_iso(text)


def test_sqlite_json_and_booleans_are_decoded() -> None:
    assert SQLITE.json("null") is None and SQLITE.json(None) is None
    assert SQLITE.json('{"a": [1]}') == {"a": [1]}
    assert (SQLITE.boolean(1), SQLITE.boolean(0), SQLITE.boolean(None)) == (True, False, None)


def test_sqlite_text_remembers_recent_timestamps_without_mixing_them_up() -> None:
    times = [datetime(2026, 1, 2, 3, 4, 5, k, tzinfo=UTC) for k in range(4)]
    expected = [t.replace(tzinfo=None).isoformat(" ", "microseconds") for t in times]
    for k in [0, 1, 0, 1, 2, 0, 3, 3, 2, 1]:
        assert sqlite_text(times[k]) == expected[k]
