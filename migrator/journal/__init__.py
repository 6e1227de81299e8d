"""The journal: every migration and every event, in SQLite or PostgreSQL."""

from migrator.journal.store import Journal

__all__ = ["Journal"]
