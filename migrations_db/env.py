"""Alembic environment. The engine hands in its connection through ``config.attributes``,
so the version stamp commits in the same transaction as the revision's DDL; run from the
``alembic`` command line, the URL comes from ``sqlalchemy.url`` or ``MIGRATOR_DB``."""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import context

from migrator.journal.schema import with_postgresql_options

config = context.config
metadata = with_postgresql_options()


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or os.environ.get(
        "MIGRATOR_DB", "sqlite:///./migrator.db"
    )
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
