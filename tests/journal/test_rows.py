"""The columns the reads select are the tables' columns, in the order the mapping reads."""

from __future__ import annotations

import dataclasses

from migrator.journal import rows
from migrator.journal.schema import events, migrations
from migrator.records import Event, Migration


def _names(columns: str) -> list[str]:
    return [c.strip() for c in columns.split(",")]


def test_the_selected_columns_are_every_column_of_each_table() -> None:
    assert _names(rows.MIGRATION_COLUMNS) == list(migrations.c.keys())
    # An event's position and reason are read with it by the log's reads (``log.py``).
    assert [*_names(rows.EVENT_COLUMNS), "position", "reason"] == list(events.c.keys())


def test_the_selected_columns_are_the_records_fields() -> None:
    assert _names(rows.MIGRATION_COLUMNS) == [f.name for f in dataclasses.fields(Migration)]
    assert _names(rows.EVENT_COLUMNS) == [f.name for f in dataclasses.fields(Event)]
