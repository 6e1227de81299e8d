"""A bare ``list`` shows a page of the newest migrations and says how many more match."""

from __future__ import annotations

import json
from pathlib import Path

from migrator.cli.read import PAGE
from migrator.journal.store import Journal
from tests.conftest import run_cli


def _journal_of(tmp_path: Path, count: int) -> str:
    url = f"sqlite:///{tmp_path / 'journal.db'}"
    with Journal.open(url) as journal:
        for i in range(count):
            journal.create(
                domain=f"vm{i}", src="test:///a", dst="test:///b", protocol=3, flags=0,
                bandwidth=0, owner="test",
            )  # fmt: skip
    return url


def test_a_bare_list_shows_a_page_and_how_many_more(tmp_path: Path) -> None:
    url = _journal_of(tmp_path, PAGE + 7)
    proc = run_cli("list", db=url)
    assert proc.returncode == 0, proc.stderr
    assert sum(" NEW " in line for line in proc.stdout.splitlines()) == PAGE
    assert proc.stderr == "... and 7 more (--limit N or --all shows them)\n"


def test_list_all_and_json_show_everything(tmp_path: Path) -> None:
    url = _journal_of(tmp_path, PAGE + 7)
    everything = run_cli("list", "--all", db=url)
    assert sum(" NEW " in line for line in everything.stdout.splitlines()) == PAGE + 7
    assert everything.stderr == ""
    assert len(json.loads(run_cli("list", "--json", db=url).stdout)) == PAGE + 7


def test_a_page_that_holds_everything_says_nothing_more(tmp_path: Path) -> None:
    proc = run_cli("list", db=_journal_of(tmp_path, PAGE))
    assert proc.returncode == 0 and proc.stderr == ""
