"""The command group itself: exit codes, a fast ``--help``, resources closed by commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from migrator.cli.exits import ExitCode, for_state
from migrator.cli.main import cli
from migrator.journal.store import Journal
from migrator.states import State
from tests.conftest import ROOT

HEAVY = ("sqlalchemy", "alembic", "rich", "transitions", "psycopg", "migrator.drivers")
"""What ``migrator --help`` must not import: it needs none of it to print the help."""

LIST_MODULES = """
import sys
from migrator.cli.main import main
try:
    main(["--help"])
except SystemExit:
    pass
print(__import__("json").dumps(sorted(sys.modules)))
"""


def test_exit_codes_are_the_documented_ones() -> None:
    assert {c.name: int(c) for c in ExitCode} == {
        "OK": 0,
        "FAILED": 1,
        "USAGE": 2,
        "IN_DOUBT": 3,
        "INTERRUPTED": 130,
        "TERMINATED": 143,
    }


@pytest.mark.parametrize(
    ("state", "code"),
    [(State.CONFIRMED, ExitCode.OK), (State.IN_DOUBT, ExitCode.IN_DOUBT)]
    + [(s, ExitCode.FAILED) for s in State if s not in (State.CONFIRMED, State.IN_DOUBT)],
    ids=str,
)
def test_a_migration_ends_with_the_exit_code_of_its_state(state: State, code: ExitCode) -> None:
    assert for_state(state) is code


def test_help_imports_no_database_driver_or_rendering_code() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", LIST_MODULES],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    modules = json.loads(proc.stdout.splitlines()[-1])
    assert [m for m in modules if m.startswith(HEAVY)] == []
    assert "Commands:" in proc.stdout


def _open_fds(path: Path) -> list[str]:
    """This process's file descriptors open on ``path`` or its WAL and shared memory."""
    fd_dir = Path("/proc/self/fd")
    targets = []
    for fd in fd_dir.iterdir():
        try:
            targets.append(os.readlink(fd))
        except OSError:
            continue
    return [t for t in targets if t.startswith(str(path))]


@pytest.mark.parametrize("args", [["list"], ["stats"], ["recover"], ["db", "current"]], ids=str)
def test_a_command_closes_the_journal_it_opened(tmp_path: Path, args: list[str]) -> None:
    path = tmp_path / "journal.db"
    Journal.open(f"sqlite:///{path}").close()
    assert _open_fds(path) == []
    result = CliRunner().invoke(cli, ["--db", f"sqlite:///{path}", *args])
    assert result.exit_code == ExitCode.OK, result.output
    assert _open_fds(path) == []
