"""What the write path survives, and what it stops on (``docs/journal.md``).

Transient database errors (a connection reset, a server restarting, a busy SQLite file)
are retried with backoff within a bounded time: :func:`retrying` declares that policy with
``tenacity`` and :func:`retried` applies it to the journal's writes and reads (tenacity is
imported at the first error, never at import or on a write that succeeds). A journal is
pinned to the database it opened: a SQLite file by device and inode, a PostgreSQL journal
by its database's and its ``migrations`` table's object ids. A write to anything else (the
file deleted or replaced, the database recreated) stops with ``JournalReplaced`` instead of
vanishing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa

from migrator.errors import JournalReplaced, JournalUnavailable

if TYPE_CHECKING:
    import tenacity

T = TypeVar("T")

RETRY_SECONDS = 15.0
"""How long a write keeps retrying a transient error (PostgreSQL restarting)."""
SQLITE_RETRY_SECONDS = 1.0
"""SQLite's busy timeout already waited; this only covers a busy reported at once."""
FIRST_DELAY = 0.05
MAX_DELAY = 1.0
"""Seconds: the first pause before a transient error is retried, and the longest."""
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


def retrying(engine: sa.Engine, spent: float = 0.0) -> tenacity.Retrying:
    """The journal's retry: a transient error is tried again after ``FIRST_DELAY``, the
    pause doubling up to ``MAX_DELAY``, and no attempt begins past ``retry_seconds`` from
    the first (``spent`` seconds ago)."""
    import tenacity

    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(lambda exc: cause_is_transient(exc, engine)),
        wait=tenacity.wait_exponential(multiplier=FIRST_DELAY, max=MAX_DELAY),
        stop=tenacity.stop_before_delay(retry_seconds(engine) - spent),
        reraise=True,
    )


def retried(attempt: Callable[[], T], engine: sa.Engine) -> T:
    """``attempt()``, then again as :func:`retrying` says while its error is transient.

    The first attempt runs outside tenacity, whose bookkeeping (tens of microseconds a
    call) would otherwise cost every write, nearly all of which succeed at once; the
    policy is handed that attempt's error as its own first one, and the time it took.
    """
    started = time.monotonic()
    try:
        return attempt()
    except JournalUnavailable as exc:
        failed = [exc]

    def again() -> T:
        if failed:
            raise failed.pop()
        return attempt()

    return retrying(engine, spent=time.monotonic() - started)(again)


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
    """True if ``exc`` is a JournalUnavailable caused by a transient database error."""
    if not isinstance(exc, JournalUnavailable):
        return False
    cause = exc.__cause__
    orig = cause.orig if isinstance(cause, sa.exc.DBAPIError) else cause
    return orig is not None and is_transient(orig, engine.dialect.loaded_dbapi)
