"""The read commands on a SQLite journal load only what reading needs: no SQLAlchemy,
no Alembic, no engine, no write path (``docs/journal.md``, read commands)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from migrator.journal.revisions import KNOWN_REVISIONS, SCHEMA_HEAD
from migrator.journal.store import Journal
from tests.conftest import ROOT

UNNEEDED = (
    "sqlalchemy",
    "alembic",
    "transitions",
    "psycopg",
    "migrator.drivers",
    "migrator.engine",
    "migrator.journal.writes",
    "migrator.journal.committer",
    "migrator.journal.store",
)
"""What a read command must not import to read a SQLite journal at this revision."""

MODULES_AFTER = """
import json, sys
from migrator.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    assert not exc.code, exc.code
print(json.dumps(sorted(sys.modules)))
"""


def _modules(url: str, *args: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MIGRATOR_DB": url}
    proc = subprocess.run(
        [sys.executable, "-c", MODULES_AFTER, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    return list(json.loads(proc.stdout.splitlines()[-1]))


@pytest.fixture
def journal_url(tmp_path: Path) -> tuple[str, str]:
    url = f"sqlite:///{tmp_path / 'j.db'}"
    with Journal.open(url) as journal:
        m = journal.create(
            domain="vm", src="null://a", dst="null://b", protocol=3, flags=1, bandwidth=0,
            owner="c",
        )  # fmt: skip
    return url, m.id


@pytest.mark.parametrize(
    "args",
    [["list"], ["list", "--json"], ["show", "ID"], ["stats"], ["export", "--all"]],
    ids=" ".join,
)
def test_a_read_command_loads_no_database_library_engine_or_write_path(
    journal_url: tuple[str, str], args: list[str]
) -> None:
    url, mid = journal_url
    modules = _modules(url, *[mid if a == "ID" else a for a in args])
    assert [m for m in modules if m.startswith(UNNEEDED)] == []
    assert "migrator.journal.sqlite_reader" in modules


def test_a_read_command_on_a_journal_to_upgrade_opens_and_upgrades_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'j.db'}"
    with Journal.open(url, check=False) as journal:
        journal.upgrade(KNOWN_REVISIONS[-2])
    assert "migrator.journal.store" in _modules(url, "list")
    with Journal.open(url, upgrade=False) as journal:
        assert journal.revision() == SCHEMA_HEAD
