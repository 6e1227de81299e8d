"""The Alembic revisions and the SQLAlchemy tables describe the same schema."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from migrator.errors import JournalUnavailable, SchemaOutOfDate
from migrator.journal import schema
from migrator.journal.lifecycle import script_location
from migrator.journal.schema import UTCDateTime
from migrator.journal.store import Journal
from tests.conftest import ROOT


def test_models_and_migrations_do_not_drift(db_url: str) -> None:
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, schema.metadata)
    engine.dispose()
    assert diff == []


def test_schema_head_constant_is_the_alembic_head() -> None:
    config = Config()
    config.set_main_option("script_location", script_location())
    script = ScriptDirectory.from_config(config)
    assert script.get_current_head() == schema.SCHEMA_HEAD
    assert [r.revision for r in script.walk_revisions()][::-1] == list(schema.KNOWN_REVISIONS)


def test_sqlite_file_is_created_and_upgraded_on_first_use(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    with Journal.open(f"sqlite:///{path}") as journal:
        assert journal.revision() == schema.SCHEMA_HEAD
    assert path.exists()


def test_sqlite_runs_in_wal_mode_with_synchronous_full(tmp_path: Path) -> None:
    with (
        Journal.open(f"sqlite:///{tmp_path / 'j.db'}") as journal,
        journal.engine.connect() as conn,
    ):
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_postgres_journal_must_be_upgraded_explicitly(pg_url: str) -> None:
    with pytest.raises(SchemaOutOfDate, match="migrator db upgrade"):
        Journal.open(pg_url)
    Journal.open(pg_url, upgrade=True).close()
    with Journal.open(pg_url) as journal:
        assert journal.revision() == schema.SCHEMA_HEAD


def test_a_schema_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    Journal.open(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(SchemaOutOfDate, match="9999"):
        Journal.open(f"sqlite:///{path}")


def test_a_file_that_is_not_a_database_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not sqlite\x00" * 100)
    with pytest.raises(JournalUnavailable, match="not a database"):
        Journal.open(f"sqlite:///{path}")
    assert path.read_bytes() == b"this is not sqlite\x00" * 100


def test_passwords_never_appear_in_the_journal_url() -> None:
    from migrator.redaction import redact

    assert "s3cret" not in redact("postgresql+psycopg://bob:s3cret@db.example/x")
    assert "***" in redact("postgresql+psycopg://bob:s3cret@db.example/x")


def test_a_fresh_journal_keeps_its_writes_while_another_process_reads_it(tmp_path: Path) -> None:
    """Regression: the first-use upgrade once closed a descriptor of the database file,
    dropping SQLite's locks in the writing process, so a reader's close deleted the WAL
    and every later write of the migration was lost (it printed CONFIRMED regardless)."""
    import json
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT, run_cli

    db = f"sqlite:///{tmp_path / 'fresh.db'}"
    src, dst = f"test://{tmp_path / 'a'}", f"test://{tmp_path / 'b'}"
    assert run_cli("test-host", "define", src, "vm1", "--memory", "8").returncode == 0
    env = {**os.environ, "MIGRATOR_DB": db}
    args = ["migrate", "vm1", "--src", src, "--dst", dst, "--bandwidth", "8"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "migrator", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            listed = run_cli("list", "--json", db=db)
            if listed.returncode == 0 and "PERFORMING" in listed.stdout:
                break
            time.sleep(0.1)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert "CONFIRMED" in out
    final = json.loads(run_cli("list", "--json", db=db).stdout)
    assert [m["state"] for m in final] == ["CONFIRMED"]


_OLD_ROW = (
    "INSERT INTO migrations (id, domain, src, dst, protocol, flags, bandwidth, state, owner,"
    " fence, last_seq, abort_requested, created_at, updated_at) VALUES"
    " ('0e6f7a52-1c55-4f3e-9d2c-5a1f0e1d2c3b', 'vm-old', 'null://a', 'null://b', 3, 0, 0,"
    " 'NEW', 'test', 1, 0, false, :at, :at)"
)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_journal_at_an_older_revision_upgrades_to_the_head_keeping_its_rows(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """From 0005, the last revision before traces: every later revision runs on its rows."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    previous = "0005"
    with Journal.open(url, check=False) as journal:
        journal.upgrade(previous)
        assert journal.revision() == previous
        with journal.engine.begin() as conn:  # the row as that revision's code wrote it
            conn.execute(sa.text(_OLD_ROW), {"at": datetime(2026, 1, 1, tzinfo=UTC)})
    with Journal.open(url, upgrade=True) as journal:
        assert journal.revision() == schema.SCHEMA_HEAD
        [old] = journal.list()
        assert old.domain == "vm-old"
        assert old.trace_id == old.id.replace("-", "")  # revision 0007 gave it one
        with journal.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, schema.metadata) == []


@pytest.mark.parametrize(
    "at",
    [
        datetime(2026, 11, 30, 9, 41, 2, 123456, tzinfo=UTC),
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(999, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
        datetime(2026, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=-7, minutes=-30))),
    ],
)
def test_sqlite_timestamps_are_the_text_sqlalchemy_writes_and_read_back_the_same(
    at: datetime,
) -> None:
    dialect = sa.create_engine("sqlite://").dialect
    generic_bind = sa.DateTime().dialect_impl(dialect).bind_processor(dialect)
    generic_read = sa.DateTime().dialect_impl(dialect).result_processor(dialect, None)
    assert generic_bind is not None and generic_read is not None
    ours = UTCDateTime().bind_processor(dialect)(at)
    assert ours == generic_bind(at.astimezone(UTC).replace(tzinfo=None))
    back = UTCDateTime().result_processor(dialect, None)(ours)
    assert back == at and back.tzinfo is UTC
    assert back == generic_read(ours).replace(tzinfo=UTC)


SQLITE_ONLY = """
import sys
from migrator.journal.store import Journal
with Journal.open(sys.argv[1]) as journal:
    journal.create(domain="vm", src="null://a", dst="null://b", protocol=3, flags=1,
                   bandwidth=0, owner="c")
print(sorted(m for m in sys.modules if m.startswith("sqlalchemy.dialects.")))
"""


def test_a_sqlite_journal_never_loads_the_postgresql_dialect(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'j.db'}"
    Journal.open(url).close()  # created and upgraded here: Alembic's run is not measured
    proc = subprocess.run(
        [sys.executable, "-c", SQLITE_ONLY, url],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
        check=True,
    )
    loaded = proc.stdout.strip()
    assert "sqlalchemy.dialects.sqlite" in loaded
    assert "postgresql" not in loaded


def test_the_postgresql_outcome_index_is_partial_as_its_revision_makes_it() -> None:
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.schema import CreateIndex

    metadata = schema.with_postgresql_options()
    [index] = [i for i in metadata.tables["migration_events"].indexes if "duration" in i.name]
    ddl = str(CreateIndex(index).compile(dialect=postgresql.dialect()))
    assert ddl.endswith("WHERE duration IS NOT NULL")
