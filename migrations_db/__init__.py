"""The Alembic environment that owns the journal's schema (``migrator db upgrade``)."""
