"""Core statements compiled once and run on the DBAPI cursor."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from migrator.journal.schema import migrations
from migrator.journal.statement import MAX_SHAPES, Statement

DIALECTS = [sqlite.dialect(), postgresql.dialect(paramstyle="pyformat")]


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_expand_renders_an_in_list_with_its_values(dialect: sa.Dialect) -> None:
    stmt = sa.select(migrations.c.id).where(migrations.c.state.in_(["NEW", "FAILED"]))
    compiled = Statement(stmt, dialect, expand=True)
    params = compiled.params({})
    values = list(params.values()) if isinstance(params, dict) else list(params)
    assert values == ["NEW", "FAILED"]


def test_an_in_list_of_values_that_need_a_bind_processor_is_refused() -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    stmt = sa.select(migrations.c.id).where(migrations.c.created_at.in_([when]))
    with pytest.raises(TypeError, match="bind processor"):
        Statement(stmt, sqlite.dialect(), expand=True)


def test_bind_processors_apply_to_named_values() -> None:
    stmt = migrations.update().values(updated_at=sa.bindparam("now"))
    compiled = Statement(stmt, sqlite.dialect())
    (value,) = compiled.params({"now": datetime(2026, 1, 1, tzinfo=UTC)})
    assert isinstance(value, str)  # SQLite's DateTime stores text


def _table() -> tuple[sa.Table, sqlite3.Connection]:
    t = sa.Table("t", sa.MetaData(), sa.Column("a", sa.Integer), sa.Column("b", sa.Text))
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, a INTEGER, b TEXT)")
    return t, db


def test_sqlite_gets_a_none_written_into_the_statement_as_null() -> None:
    t, db = _table()
    statement = Statement(t.insert(), sqlite.dialect())
    statement.execute(db.cursor(), {"a": None, "b": "x"})
    statement.execute_many(db.cursor(), [{"a": 1, "b": None}, {"a": 2}, {"a": None, "b": "y"}])
    rows = db.execute("SELECT a, b FROM t ORDER BY k").fetchall()
    assert rows == [(None, "x"), (1, None), (2, None), (None, "y")]


def test_past_its_shapes_a_statement_binds_its_nones() -> None:
    t, db = _table()
    statement = Statement(t.insert(), sqlite.dialect())
    statement._shapes = {(k,): "unused" for k in range(100, 100 + MAX_SHAPES)}
    statement.execute(db.cursor(), {"a": None, "b": "x"})
    assert db.execute("SELECT a, b FROM t").fetchall() == [(None, "x")]
