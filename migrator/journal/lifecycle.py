"""The journal database's lifecycle: engines, connection settings, the schema revision.

Opening a journal creates its engine (SQLite with the pragmas crash safety needs), reads
the Alembic revision, refuses a journal a newer migrator wrote, and upgrades an older one
under a lock (``docs/journal.md``). Database errors become journal errors here too.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from migrator.errors import JournalUnavailable, SchemaOutOfDate
from migrator.journal import schema
from migrator.limits import is_utf8
from migrator.redaction import redact

SQLITE_BUSY_TIMEOUT_MS = 10_000


@contextlib.contextmanager
def translated(url: str) -> Iterator[None]:
    """The one edge where SQLAlchemy's database errors become journal errors."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        reason = str(exc.orig).splitlines()[0] if exc.orig is not None else str(exc)
        raise JournalUnavailable(url=url, reason=reason) from exc


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = FULL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def create_engine(url: str) -> sa.Engine:
    """An engine for ``url``; JournalUnavailable for a bad URL or a missing driver."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        _refuse_sqlite(url, parsed)
        engine = sa.create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    try:
        return sa.create_engine(parsed, pool_pre_ping=True)
    except (ImportError, sa.exc.NoSuchModuleError) as exc:
        raise JournalUnavailable(url=redact(url), reason=f"driver not installed ({exc})") from None


def parse_url(url: str) -> sa.URL:
    """``url`` parsed, with a port that is a number; else JournalUnavailable."""
    if not is_utf8(url) or "\x00" in url:
        raise JournalUnavailable(url=repr(url[:80]), reason="not valid UTF-8 text")
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise JournalUnavailable(url=redact(url), reason=f"not a database URL ({exc})") from None
    try:
        _ = parsed.port
    except ValueError:
        raise JournalUnavailable(url=redact(url), reason="its port is not a number") from None
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise JournalUnavailable(url=redact(url), reason=f"port {parsed.port} is out of range")
    return parsed


def _refuse_sqlite(url: str, parsed: sa.URL) -> None:
    """An in-memory database keeps nothing once the command ends; options are not ours."""
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file::memory:"):
        raise JournalUnavailable(
            url=redact(url),
            reason="an in-memory SQLite journal keeps nothing: give a file, sqlite:///PATH",
        )
    if parsed.query:
        options = ", ".join(sorted(parsed.query))
        raise JournalUnavailable(
            url=redact(url), reason=f"a SQLite journal URL takes no options (got {options})"
        )
    _refuse_foreign(redact(url), Path(database))


def script_location() -> str:
    """The directory of the Alembic environment (``migrations_db/``)."""
    import migrations_db

    return str(Path(migrations_db.__file__).parent)


def read_revision(conn: sa.Connection, url: str = "") -> str | None:
    """The revision stamped in the database, None for an empty one.

    A stamp Alembic cannot upgrade from is named in one line (``JournalUnavailable``):
    several revisions (its primary key admits no repeated one), or none in a database
    that holds migrator's tables (``upgrade`` repairs that one if the tables are HEAD's).
    """
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    stamped = sorted({row[0] for row in conn.execute(sa.text(_STAMPS))})
    if len(stamped) > 1:
        raise JournalUnavailable(
            url=url,
            reason=f"its alembic_version table holds several revisions ({', '.join(stamped)}):"
            " a journal has one; delete the rows that are not the revision its tables match",
        )
    if not stamped and sa.inspect(conn).has_table("migrations"):
        raise JournalUnavailable(
            url=url,
            reason="its alembic_version table is empty but it holds migrator's tables: the"
            " schema revision is unknown; insert the revision its tables match"
            f" (this migrator's is {schema.SCHEMA_HEAD}) into alembic_version",
        )
    return stamped[0] if stamped else None


_STAMPS = "SELECT version_num FROM alembic_version"


def revision(engine: sa.Engine, url: str) -> str | None:
    with translated(url), engine.connect() as conn:
        return read_revision(conn, url)


def _restamp(conn: sa.Connection) -> None:
    """An empty ``alembic_version`` beside tables exactly as ``SCHEMA_HEAD`` has them
    (every table, column and index of ``schema.py``, nothing else) is stamped HEAD again:
    ``db upgrade`` repairs a truncated stamp it can prove. Any other empty stamp stays, and
    ``read_revision`` names it."""
    inspector = sa.inspect(conn)
    if not inspector.has_table("alembic_version"):
        return
    if conn.execute(sa.text(_STAMPS)).first() is not None:
        return
    found = set(inspector.get_table_names()) - {"alembic_version"}
    if found != set(schema.metadata.tables):
        return
    for name, table in schema.metadata.tables.items():
        columns = {c["name"] for c in inspector.get_columns(name)}
        indexes = {  # not PostgreSQL's index behind a unique constraint (``unique=True``)
            i["name"] for i in inspector.get_indexes(name) if not i.get("duplicates_constraint")
        }
        if columns != set(table.columns.keys()) or indexes != {i.name for i in table.indexes}:
            return
    conn.execute(
        sa.text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": schema.SCHEMA_HEAD}
    )


def refuse_newer(url: str, found: str | None) -> None:
    """SchemaOutOfDate(newer=True) for a revision this code does not know."""
    if found is not None and found not in schema.KNOWN_REVISIONS:
        raise SchemaOutOfDate(url=url, found=found, expected=schema.SCHEMA_HEAD, newer=True)


def upgrade(engine: sa.Engine, url: str, target: str = "head") -> None:
    """Apply the Alembic revisions up to ``target``; each commits with its stamp.

    A journal stamped with a revision this code does not know is refused, never touched.
    """
    from alembic import command
    from alembic.config import Config

    with translated(url), _upgrade_lock(engine):
        with engine.begin() as conn:
            _restamp(conn)
        refuse_newer(url, revision(engine, url))
        config = Config()
        config.set_main_option("script_location", script_location())
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, target)


def _refuse_foreign(url: str, path: Path) -> None:
    """A SQLite file holding another program's tables is not made a journal (a ``--db``
    typo): looked at read-only, before any pragma (WAL) could change a byte of it."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            query = "SELECT name FROM sqlite_master WHERE type = 'table'"
            names = {row[0] for row in conn.execute(query)}
        finally:
            conn.close()
    except sqlite3.Error:
        return  # not a database at all: opening it says so
    tables = {n for n in names if not n.startswith("sqlite_")}
    foreign = sorted(tables - {*schema.metadata.tables, "alembic_version"})
    if foreign and "alembic_version" not in names:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise JournalUnavailable(
            url=url, reason=f"not a migrator journal: it holds another program's tables ({shown})"
        )


def ensure_schema(engine: sa.Engine, url: str, *, auto_upgrade: bool) -> None:
    """Return if the schema is at ``SCHEMA_HEAD``; upgrade it if allowed; else refuse."""
    found = revision(engine, url)
    if found == schema.SCHEMA_HEAD:
        return
    refuse_newer(url, found)
    if not auto_upgrade:
        raise SchemaOutOfDate(url=url, found=found, expected=schema.SCHEMA_HEAD)
    upgrade(engine, url)


def _sqlite_file(engine: sa.Engine) -> Path | None:
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    return Path(database) if database and database != ":memory:" else None


@contextlib.contextmanager
def _upgrade_lock(engine: sa.Engine) -> Iterator[None]:
    """Serialize first-use upgrades of one SQLite file across processes.

    The lock is a sibling file, never the database itself: closing any descriptor of
    the database file would drop the POSIX locks SQLite holds on it in this process,
    and another process could then checkpoint and delete the WAL under our writes.
    """
    path = _sqlite_file(engine)
    if path is None:
        yield
        return
    lock = path.with_name(path.name + ".upgrade-lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
