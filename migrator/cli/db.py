"""``migrator db``: the journal's schema (Alembic revisions in ``migrations_db/``)."""

from __future__ import annotations

import click

from migrator.cli import context


@click.group()
def db() -> None:
    """The journal's schema (Alembic)."""


@db.command()
def upgrade() -> None:
    """Create or upgrade the journal schema to this version of migrator."""
    with context.errors():
        journal = context.journal(check=False)
        journal.upgrade()
        click.echo(f"journal {journal.url} at revision {journal.revision()}")


@db.command()
def current() -> None:
    """Print the journal's schema revision."""
    from migrator.journal.schema import KNOWN_REVISIONS, SCHEMA_HEAD

    with context.errors():
        found = context.journal(check=False).revision()
    if found == SCHEMA_HEAD:
        state = "up to date"
    elif found is not None and found not in KNOWN_REVISIONS:
        state = f"newer than this migrator (knows up to {SCHEMA_HEAD}): upgrade migrator"
    else:
        state = f"expected {SCHEMA_HEAD}: run `migrator db upgrade`"
    click.echo(f"{found or 'none'} ({state})")
