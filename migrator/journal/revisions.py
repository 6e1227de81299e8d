"""The schema revisions this code knows (``migrations_db/``), without loading SQLAlchemy:
the read commands check a SQLite journal's revision before they decide to load it."""

from __future__ import annotations

SCHEMA_HEAD = "0009"
"""The Alembic head revision the tables of ``schema.py`` match."""

KNOWN_REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008", "0009")
"""Every revision this code can upgrade from, oldest first."""
