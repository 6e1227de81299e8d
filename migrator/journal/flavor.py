"""What SQLite and PostgreSQL's drivers differ in, for the SQL the journal reads: how a
statement names its parameters, and how a timestamp, a JSON value or a boolean is passed
to them and comes back.

The read queries (``reads.py``) run on plain DBAPI connections (``docs/journal.md``):
this module knows the two drivers' values without SQLAlchemy, which it does not import.
The text SQLite's journal stores a timestamp as is written here once, for the SQLAlchemy
type of the tables (``schema.UTCDateTime``) and for the reads alike.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

_NAIVE_LENGTHS = frozenset({19, 26})
"""``YYYY-MM-DD HH:MM:SS`` and ``YYYY-MM-DD HH:MM:SS.ffffff``: no zone."""
_NAMED = re.compile(r"(?<![:\w]):(\w+)")


_recent: tuple[datetime | None, str, datetime | None, str] = (None, "", None, "")
"""The last two timestamps ``sqlite_text`` wrote, with their text (see there)."""


def sqlite_text(value: datetime | None) -> str | None:
    """A timestamp as SQLite's journal stores it: naive UTC, microseconds, a space.

    A journal write binds the same two objects many times (its time: the state change's and
    every event's; its lease), and ``isoformat`` costs a microsecond: the last two are
    remembered, by identity (``datetime`` is immutable). Threads replace the pair whole."""
    global _recent  # a memo, not state: each value has one text
    if value is None:
        return None
    recent = _recent
    if value is recent[0]:
        return recent[1]
    if value is recent[2]:
        return recent[3]
    if value.tzinfo is UTC:  # the journal's own times: drop the "+00:00"
        text = value.isoformat(" ", "microseconds")[:26]
    else:
        text = value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    _recent = (value, text, recent[0], recent[1])
    return text


def sqlite_datetime(value: str | None) -> datetime | None:
    """A timestamp SQLite's journal stored, timezone-aware in UTC."""
    if value is None:
        return None
    if len(value) in _NAIVE_LENGTHS:  # as ``sqlite_text`` wrote it: appending the zone is
        return datetime.fromisoformat(value + "+00:00")  # a fifth of the cost of replace()
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def sqlite_iso(value: str | None) -> str | None:
    """``sqlite_datetime(value).isoformat()``, made from the text itself where it has the
    shape ``sqlite_text`` writes (``YYYY-MM-DD HH:MM:SS.ffffff``, UTC): ``export --all``
    gives every event's time, and parsing it costs more than the rest of the event."""
    if value is None:
        return None
    if len(value) != 26 or value[10] != " " or value[19] != ".":
        parsed = sqlite_datetime(value)
        return None if parsed is None else parsed.isoformat()
    clock = value[11:19] if value.endswith("000000") else value[11:]  # as isoformat() does
    return f"{value[:10]}T{clock}+00:00"


def _utc_iso(value: datetime | None) -> str | None:
    return None if value is None else _utc(value).isoformat()  # type: ignore[union-attr]


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _json_text(value: str | None) -> Any:
    # Most events have no detail: SQLAlchemy's JSON type stored None as the text "null".
    return None if value is None or value == "null" else json.loads(value)


def _same(value: Any) -> Any:
    return value


def _boolean(value: int | None) -> bool | None:
    return None if value is None else bool(value)


@functools.lru_cache(maxsize=256)
def _pyformat(sql: str) -> str:
    return _NAMED.sub(r"%(\1)s", sql.replace("%", "%%"))


@dataclass(frozen=True, slots=True)
class Flavor:
    """One driver's parameters and values; ``SQLITE`` and ``POSTGRESQL`` are the two."""

    name: str
    sql: Callable[[str], str]
    """The driver's text of a statement written with ``:name`` parameters."""
    bind_time: Callable[[datetime], Any]
    time: Callable[[Any], datetime | None]
    iso: Callable[[Any], str | None]
    """A timestamp as ``time`` gives it, as ISO text in UTC (``datetime.isoformat()``)."""
    json: Callable[[Any], Any]
    boolean: Callable[[Any], bool | None]


SQLITE = Flavor("sqlite", _same, sqlite_text, sqlite_datetime, sqlite_iso, _json_text, _boolean)
"""The standard library's ``sqlite3``: named parameters as written; timestamps as text,
JSON as text, booleans as integers."""
POSTGRESQL = Flavor("postgresql", _pyformat, _same, _utc, _utc_iso, _same, _same)
"""psycopg 3: ``%(name)s`` parameters; its own timestamps, JSON and booleans."""


def flavor(dialect: str) -> Flavor:
    """The flavor of a SQLAlchemy dialect's name (``sqlite``, ``postgresql``)."""
    return SQLITE if dialect == "sqlite" else POSTGRESQL
