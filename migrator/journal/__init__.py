"""The journal: every migration and every event, in SQLite or PostgreSQL.

``Journal`` (``store``) is the front door; ``lifecycle``, ``writes``, ``queries``,
``reads``, ``analytics`` and ``rows`` do its jobs, and ``SqliteReader`` (``sqlite_reader``)
reads a SQLite journal without SQLAlchemy for the read commands (``docs/journal.md``).
``Journal`` is imported on first use, so reading ``DEFAULT_URL`` (as ``migrator --help``
does) loads no database code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from migrator.journal.store import Journal

DEFAULT_URL = "sqlite:///./migrator.db"
"""The journal used when none is named: ``migrator.db`` in the working directory."""

__all__ = ["DEFAULT_URL", "Journal"]


def __getattr__(name: str) -> Any:
    if name != "Journal":
        raise AttributeError(f"module 'migrator.journal' has no attribute {name!r}")
    from migrator.journal.store import Journal

    return Journal
