"""What the write path survives, and what it stops on (``docs/journal.md``).

Transient database errors (a connection reset, a server restarting, a busy SQLite file)
are retried with backoff within a bounded time. A journal is pinned to the database it
opened: a SQLite file by device and inode, a PostgreSQL journal by its database's and its
``migrations`` table's object ids. A write to anything else (the file deleted or replaced,
the database recreated) stops with ``JournalReplaced`` instead of vanishing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from migrator.errors import JournalReplaced

RETRY_SECONDS = 15.0
"""How long a write keeps retrying a transient error (PostgreSQL restarting)."""
SQLITE_RETRY_SECONDS = 1.0
"""SQLite's busy timeout already waited; this only covers a busy reported at once."""
FIRST_DELAY = 0.05
MAX_DELAY = 1.0
SQLITE_BUSY_CODES = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED (primary codes)
PG_TRANSIENT_STATES = ("08", "57P")  # connection exceptions; admin shutdown, cannot connect now

_PG_IDENTITY = sa.text(
    "SELECT (SELECT oid FROM pg_database WHERE datname = current_database()),"
    " to_regclass('migrations')::oid"
)


def retry_seconds(engine: sa.Engine) -> float:
    return SQLITE_RETRY_SECONDS if engine.dialect.name == "sqlite" else RETRY_SECONDS


def is_transient(exc: BaseException, dbapi: Any) -> bool:
    """True for errors that a later attempt may not meet: busy, reset, restarting."""
    if not isinstance(exc, dbapi.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in SQLITE_BUSY_CODES
    state = getattr(exc, "sqlstate", None)
    return state is None or state.startswith(PG_TRANSIENT_STATES)


class Backoff:
    """Sleeps that double up to MAX_DELAY, until ``seconds`` have passed."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.delay = FIRST_DELAY

    def wait(self) -> bool:
        """Sleep before the next attempt; False (no sleep) once the time is up."""
        if time.monotonic() + self.delay > self.deadline:
            return False
        time.sleep(self.delay)
        self.delay = min(self.delay * 2, MAX_DELAY)
        return True


class Pin:
    """The identity of the database a journal opened, checked before its writes."""

    def __init__(self, engine: sa.Engine, url: str) -> None:
        self.url = url
        self.dialect = engine.dialect.name
        database = engine.url.database if self.dialect == "sqlite" else None
        self.path = Path(database) if database else None
        self._stat_path = str(database)  # os.stat on a Path converts it again on every write
        self.file: tuple[int, int] | None = None
        self.database: tuple[Any, ...] | None = None

    def take_file(self) -> None:
        """Remember the SQLite file (device, inode) as it is now."""
        if self.path is not None:
            self.file = self._file_identity()

    def check_file(self) -> None:
        """Before each write: the SQLite file at the path is still the one opened."""
        if self.path is None:
            return
        now = self._file_identity()
        if self.file is None:
            self.file = now
        elif now != self.file:
            what = "deleted" if now is None else "replaced by another file"
            raise JournalReplaced(url=self.url, detail=f"{self.path} was {what} since")

    def check_connection(self, dbapi_conn: Any) -> None:
        """On each new PostgreSQL connection: the same database and ``migrations`` table."""
        if self.dialect != "postgresql":
            return
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(str(_PG_IDENTITY))
            found = tuple(cursor.fetchone())
        finally:
            cursor.close()
        dbapi_conn.rollback()
        if self.database is None:
            self.database = found
        elif found != self.database:
            raise JournalReplaced(url=self.url, detail="the database or its tables were recreated")

    def _file_identity(self) -> tuple[int, int] | None:
        assert self.path is not None
        try:
            st = os.stat(self._stat_path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino


def cause_is_transient(exc: BaseException, engine: sa.Engine) -> bool:
    """True if ``exc`` (a JournalUnavailable) was caused by a transient database error."""
    cause = exc.__cause__
    orig = cause.orig if isinstance(cause, sa.exc.DBAPIError) else cause
    return orig is not None and is_transient(orig, engine.dialect.loaded_dbapi)
