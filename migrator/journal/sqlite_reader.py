"""``SqliteReader``: a SQLite journal opened to be read, with the standard library alone.

The read commands (``list``, ``show``, ``export``, ``stats``) start in a fraction of the
time a ``Journal`` takes, most of which is importing SQLAlchemy: they run the same queries
(``reads.py``, ``analytics.py``) on a ``sqlite3`` connection (``docs/journal.md``).
``SqliteReader.open`` takes only a journal that is there and at this code's revision; for
anything else (no file yet, a revision to upgrade or refuse, another program's database, a
URL it does not read the way SQLAlchemy would) it returns None, and the caller opens a
``Journal``, which does what it always did.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from migrator.journal.flavor import SQLITE
from migrator.journal.reading import Reads
from migrator.journal.reads import Db
from migrator.journal.revisions import SCHEMA_HEAD
from migrator.redaction import redact

BUSY_TIMEOUT_S = 10.0
"""As long as a ``Journal`` waits for a lock (``lifecycle.SQLITE_BUSY_TIMEOUT_MS``)."""

# sqlite:///relative.db or sqlite:////absolute.db, with no query, no escapes, no memory.
_PLAIN_URL = re.compile(r"sqlite(?:\+pysqlite)?:///(?P<path>[^?#%]+)")
T = TypeVar("T")


class SqliteReader(Reads):
    """The reads of a SQLite journal, on a ``sqlite3`` connection of its own."""

    def __init__(self, conn: sqlite3.Connection, url: str) -> None:
        self.url = url
        self._db = Db(conn, SQLITE, url, sqlite3.Error)

    @classmethod
    def open(cls, url: str) -> SqliteReader | None:
        """The journal at ``url`` opened to be read, or None if a ``Journal`` must open it."""
        matched = _PLAIN_URL.fullmatch(url)
        if matched is None or matched["path"].startswith(":memory:"):
            return None
        path = Path(matched["path"])
        if not path.is_file() or path.stat().st_size == 0:
            return None
        try:
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error:
            return None
        if _revision(conn) != SCHEMA_HEAD:
            conn.close()
            return None
        return cls(conn, redact(url))

    def _read(self, query: Callable[[Db], T]) -> T:
        return query(self._db)

    def close(self) -> None:
        self._db.conn.close()


def _revision(conn: sqlite3.Connection) -> str | None:
    """The revision stamped in the file, None if it has none (or is no database)."""
    try:
        rows = conn.execute("SELECT version_num FROM alembic_version LIMIT 2").fetchall()
    except sqlite3.Error:
        return None
    return str(rows[0][0]) if len(rows) == 1 else None  # else a Journal names what is wrong
