"""The journal's read queries: migrations and their events, as records.

Each read is written here once, as SQL that SQLite and PostgreSQL both run (``:name``
parameters), and runs on a DBAPI connection (``Db``): ``Journal``'s, taken from its
SQLAlchemy engine, or ``SqliteReader``'s, the standard library's ``sqlite3``, which lets
the read commands start without loading SQLAlchemy (``docs/journal.md``). Functions open
no transaction of their own; the caller owns the connection.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from migrator.errors import AmbiguousMigrationId, JournalUnavailable, MigrationNotFound
from migrator.journal.flavor import Flavor
from migrator.journal.rows import (
    EVENT_COLUMNS,
    MIGRATION_COLUMNS,
    event_form_of,
    event_of,
    migration_of,
)
from migrator.records import Event, Migration, Request, RequestKind
from migrator.states import State

STREAM_CHUNK = 500
"""Migrations read at a time when streaming (a page)."""
EXPORT_CHUNK = 100
"""Migrations read at a time with their events (one query for the events of a page): an
export's memory is a page of documents, about 2 MiB at ten events per migration."""
ID_LENGTH = 36
"""A whole migration id: a UUID as text."""

_ID_CHARS = frozenset("0123456789abcdef-")
_MIGRATIONS = f"SELECT {MIGRATION_COLUMNS} FROM migrations"
_EVENTS = f"SELECT {EVENT_COLUMNS} FROM migration_events"
_NEWEST_FIRST = " ORDER BY created_at DESC, id"


@dataclass(frozen=True, slots=True)
class Db:
    """A DBAPI connection, its driver's flavor, and where errors are reported from."""

    conn: Any
    flavor: Flavor
    url: str
    errors: type[Exception]
    """The driver's base exception (its ``Error``), translated into JournalUnavailable."""

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
        cursor = self.conn.cursor()
        try:
            cursor.execute(self.flavor.sql(sql), params or {})
            return list(cursor.fetchall())
        except self.errors as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise JournalUnavailable(url=self.url, reason=reason) from exc
        finally:
            cursor.close()

    def one(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        """The first column of the only row ``sql`` gives."""
        return self.rows(sql, params)[0][0]


@dataclass(frozen=True, slots=True)
class Filters:
    """What ``list`` (and the analytics) choose migrations by; empty chooses all."""

    states: tuple[State, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    domain: str | None = None
    host: str | None = None
    owner: str | None = None

    @classmethod
    def of(
        cls,
        states: Iterable[State] = (),
        since: datetime | None = None,
        until: datetime | None = None,
        domain: str | None = None,
        host: str | None = None,
        owner: str | None = None,
    ) -> Filters:
        return cls(tuple(states), since, until, domain, host, owner)

    def where(self, f: Flavor) -> tuple[list[str], dict[str, Any]]:
        """The conditions on ``migrations`` and their parameters."""
        where: list[str] = []
        params: dict[str, Any] = {}
        if self.states:
            where.append(in_list("state", "s", [s.value for s in self.states], params))
        if self.since is not None:
            where.append("created_at >= :since")
            params["since"] = f.bind_time(self.since)
        if self.until is not None:
            where.append("created_at <= :until")
            params["until"] = f.bind_time(self.until)
        if self.domain is not None:
            where.append("(domain = :domain OR dname = :domain)")
            params["domain"] = self.domain
        if self.host is not None:
            where.append("(src LIKE :host ESCAPE '/' OR dst LIKE :host ESCAPE '/')")
            params["host"] = contains(self.host)
        if self.owner is not None:
            where.append("owner LIKE :owner ESCAPE '/'")
            params["owner"] = contains(self.owner)
        return where, params


def in_list(column: str, prefix: str, values: Sequence[Any], params: dict[str, Any]) -> str:
    """``column IN (:prefix0, ...)``, its values added to ``params``."""
    names = [f"{prefix}{i}" for i in range(len(values))]
    params.update(zip(names, values, strict=True))
    return f"{column} IN ({', '.join(':' + n for n in names)})"


def contains(text: str) -> str:
    """A LIKE pattern (escape character ``/``) matching values that contain ``text``."""
    escaped = text.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return f"%{escaped}%"


def where_sql(where: Sequence[str]) -> str:
    return f" WHERE {' AND '.join(where)}" if where else ""


def get(db: Db, migration_id: str) -> Migration:
    found = db.rows(f"{_MIGRATIONS} WHERE id = :id", {"id": migration_id})
    if not found:
        raise MigrationNotFound(migration_id=migration_id)
    return migration_of(found[0], db.flavor)


def abort_requested(db: Db, migration_id: str) -> bool:
    found = db.rows("SELECT abort_requested FROM migrations WHERE id = :id", {"id": migration_id})
    return bool(found and found[0][0])


def find(db: Db, prefix: str) -> Migration:
    """The one migration whose id starts with ``prefix``."""
    cleaned = prefix.strip().lower()
    if not cleaned or not _ID_CHARS.issuperset(cleaned):
        raise MigrationNotFound(migration_id=prefix)
    where, params = _prefixed(db, cleaned)
    found = db.rows(f"{_MIGRATIONS} WHERE {where} LIMIT 2", params)
    if not found:
        raise MigrationNotFound(migration_id=prefix)
    if len(found) > 1:
        count = db.one(f"SELECT count(*) FROM migrations WHERE {where}", params)
        raise AmbiguousMigrationId(prefix=prefix, count=int(count))
    return migration_of(found[0], db.flavor)


def _prefixed(db: Db, prefix: str) -> tuple[str, dict[str, Any]]:
    """Ids starting with ``prefix`` (hexadecimal digits and dashes), found on the primary
    key: a whole id is an equality; on SQLite (whose LIKE cannot use the index) a range
    narrows the LIKE."""
    if len(prefix) == ID_LENGTH:
        return "id = :id", {"id": prefix}
    like = {"like": prefix + "%"}
    if db.flavor.name != "sqlite":
        return "id LIKE :like", like
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return "id >= :low AND id < :high AND id LIKE :like", {**like, "low": prefix, "high": upper}


def page(
    db: Db, filters: Filters, *, after: Migration | None = None, limit: int | None = STREAM_CHUNK
) -> list[Migration]:
    """Up to ``limit`` (None: every) migrations matching ``filters``, newest first, that
    come after ``after`` in that order (a keyset page: each page is its own short read, so
    a long stream holds no snapshot open while others write)."""
    where, params = filters.where(db.flavor)
    if after is not None:
        # A plain range first, which the indexes on created_at serve, then the tie-break.
        where.append("created_at <= :after_at AND (created_at < :after_at OR id > :after_id)")
        params.update(after_at=db.flavor.bind_time(after.created_at), after_id=after.id)
    sql = _MIGRATIONS + where_sql(where) + _NEWEST_FIRST
    if limit is not None:
        sql += " LIMIT :limit"
        params["limit"] = limit
    return [migration_of(row, db.flavor) for row in db.rows(sql, params)]


def count(db: Db, filters: Filters) -> int:
    where, params = filters.where(db.flavor)
    return int(db.one("SELECT count(*) FROM migrations" + where_sql(where), params))


def history(db: Db, migration_id: str) -> list[Event]:
    """Every event of a migration, oldest first."""
    found = db.rows(f"{_EVENTS} WHERE migration_id = :id ORDER BY seq", {"id": migration_id})
    return [event_of(row, db.flavor) for row in found]


def histories(db: Db, ids: Sequence[str]) -> dict[str, list[Event]]:
    """Every event of each migration of ``ids``, oldest first, in one query."""
    out: dict[str, list[Event]] = {i: [] for i in ids}
    if not ids:
        return out
    params: dict[str, Any] = {}
    chosen = in_list("migration_id", "m", ids, params)
    for row in db.rows(f"{_EVENTS} WHERE {chosen} ORDER BY migration_id, seq", params):
        out[row[0]].append(event_of(row, db.flavor))
    return out


def event_forms(db: Db, ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """The JSON form of every event of each migration of ``ids``, oldest first, in one
    query (``rows.event_form_of``: no record is made)."""
    out: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    if not ids:
        return out
    params: dict[str, Any] = {}
    chosen = in_list("migration_id", "m", ids, params)
    f = db.flavor
    for row in db.rows(f"{_EVENTS} WHERE {chosen} ORDER BY migration_id, seq", params):
        out[row[0]].append(event_form_of(row, f))
    return out


def requests(db: Db, migration_id: str) -> list[Request]:
    """Every runtime request of a migration, oldest first (revision 0009)."""
    found = db.rows(
        "SELECT id, kind, value, requested_at, applied_at, outcome FROM migration_requests"
        " WHERE migration_id = :id ORDER BY id",
        {"id": migration_id},
    )
    time = db.flavor.time
    return [
        Request(int(r[0]), migration_id, RequestKind(r[1]), r[2], time(r[3]), time(r[4]), r[5])  # type: ignore[arg-type]  # NOT NULL
        for r in found
    ]


def policy(db: Db, migration_id: str) -> dict[str, Any] | None:
    """A migration's journaled convergence policy, in its dict form; None if it has none."""
    found = db.rows(
        "SELECT policy FROM migration_policies WHERE migration_id = :id", {"id": migration_id}
    )
    value = db.flavor.json(found[0][0]) if found else None
    return dict(value) if isinstance(value, dict) else None
