"""The command group itself: exit codes, a fast ``--help``, resources closed by commands."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from migrator.cli.exits import ExitCode, for_state
from migrator.cli.main import cli
from migrator.failpoints import CRASH_EXIT_CODE
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


def _readme_exit_codes() -> dict[int, str]:
    """README's "Exit codes: 0 confirmed (...), 1 rolled back, ..., 143 terminated." as
    {code: its words}, the parenthesised asides left out."""
    text = " ".join((ROOT / "README.md").read_text().split())
    listed = re.search(r"Exit codes: (.*?)\. ", text)
    assert listed is not None, "README no longer lists the exit codes"
    plain = re.sub(r"\([^)]*\)", "", listed.group(1))
    parts = re.split(r"(?:^|, )(\d+) ", plain)[1:]  # code, words, code, words, ...
    return {int(code): words for code, words in zip(parts[::2], parts[1::2], strict=True)}


def _cli_md_exit_codes() -> dict[int, str]:
    """The table under "## Exit codes" in docs/cli.md as {code: meaning}."""
    text = (ROOT / "docs" / "cli.md").read_text()
    table = text[text.index("## Exit codes\n") :].split("\n## ", 1)[0]
    return {
        int(code): meaning for code, meaning in re.findall(r"^\| (\d+) \| (.*) \|$", table, re.M)
    }


WORDS = {ExitCode.OK: "confirmed", ExitCode.USAGE: "usage"}
"""The word the docs give each code by, where it is not the code's own name."""


def _named(code: ExitCode) -> str:
    return WORDS.get(code, code.name.lower().replace("_", " "))


def test_the_exit_codes_are_the_ones_readme_lists() -> None:
    documented = _readme_exit_codes()
    assert sorted(documented) == sorted(int(c) for c in ExitCode)
    for code in ExitCode:
        assert _named(code) in documented[code].lower(), (code, documented[code])


def test_the_exit_codes_are_the_ones_docs_cli_md_tabulates() -> None:
    documented = _cli_md_exit_codes()
    assert sorted(documented) == sorted([*(int(c) for c in ExitCode), CRASH_EXIT_CODE])
    for code in ExitCode:
        meaning = documented[code].lower().replace("_", " ")
        assert _named(code) in meaning or code is ExitCode.OK, (code, documented[code])
    assert documented[ExitCode.OK].startswith("Success")
    assert "failpoint" in documented[CRASH_EXIT_CODE].lower()
    names = re.search(
        r"`migrator\.cli\.exits\.ExitCode` \(([^)]*)\)", (ROOT / "docs" / "cli.md").read_text()
    )
    assert names is not None
    assert re.findall(r"`(\w+)`", names.group(1)) == [c.name for c in ExitCode]


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


ENTRY = """
import atexit, gc, sys
from migrator.cli.main import entry
atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count() > 0, file=sys.stderr))
sys.argv = ["migrator", *sys.argv[1:]]
entry()
"""


@pytest.mark.parametrize(
    ("args", "code"),
    [(["--help"], ExitCode.OK), (["--db", "sqlite:///nowhere/x.db", "show", "x"], ExitCode.USAGE)],
    ids=["help", "usage"],
)
def test_the_process_entry_keeps_the_exit_code_and_leaves_nothing_to_collect_at_exit(
    tmp_path: Path, args: list[str], code: ExitCode
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", ENTRY, *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
        check=False,
    )
    assert proc.returncode == code, proc.stderr
    assert "frozen at exit: True" in proc.stderr  # the exit handlers still ran, after it
    main = (ROOT / "migrator" / "__main__.py").read_text()
    assert "entry()" in main
