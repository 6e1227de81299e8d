"""The documentation stays true: each test fails when the code changes and the docs do not."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from migrator.cli.main import cli
from migrator.diagram import mermaid
from migrator.journal import schema
from migrator.states import State
from tests.conftest import ROOT

DOCS = ROOT / "docs"
HELP_WIDTH = 100
README_TITLE = [
    "# migrator",
    "Crash-safe live migration of VMs with libvirt's five-step protocol, journaled in SQLite or"
    " PostgreSQL.",
    "",
]
README_COMMANDS = [
    (
        "Run the demo (fresh machine):",
        "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/migrator demo",
    ),
    (
        "Run the tests (fresh machine; PostgreSQL on 127.0.0.1:5432, QEMU and libvirt are used"
        " if present):",
        "python3 -m venv .venv && .venv/bin/pip install -e '.[test]'"
        " && .venv/bin/pytest -n 2 --dist loadfile",
    ),
]
README_HEAD_LINES = 15
"""The two commands must be within this many lines of the top of the README."""


def fenced_blocks(text: str, info: str | None = None) -> list[str]:
    """The contents of the ``` blocks of a Markdown text (only ```INFO ones, if given)."""
    blocks = re.findall(r"^```([^\n]*)\n(.*?)^```[ \t]*$", text, flags=re.M | re.S)
    return [body for tag, body in blocks if info is None or tag.strip() == info]


def command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command of the CLI, groups included, as argument tuples: (), ("db",), ..."""
    yield prefix
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from command_paths(command, (*prefix, name))
        else:
            yield (*prefix, name)


def help_text(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(
        cli, [*path, "--help"], prog_name="migrator", terminal_width=HELP_WIDTH
    )
    assert result.exit_code == 0, result.output
    return result.output


def section(text: str, heading: str) -> str:
    """The text under a Markdown heading line, up to the next heading of any level."""
    start = text.index(heading + "\n") + len(heading) + 1
    following = re.search(r"^#", text[start:], flags=re.M)
    return text[start:] if following is None else text[start : start + following.start()]


def test_state_diagram_in_states_md_is_what_migrator_diagram_prints() -> None:
    assert fenced_blocks((DOCS / "states.md").read_text(), "mermaid") == [mermaid()]


@pytest.mark.parametrize("state", list(State), ids=str)
def test_every_state_has_a_row_in_the_states_table(state: State) -> None:
    assert f"| `{state}` |" in (DOCS / "states.md").read_text()


@pytest.mark.parametrize("path", list(command_paths(cli)), ids=lambda p: " ".join(p) or "migrator")
def test_every_command_help_is_quoted_verbatim_in_cli_md(path: tuple[str, ...]) -> None:
    expected = help_text(path)
    blocks = fenced_blocks((DOCS / "cli.md").read_text())
    assert any(expected in block for block in blocks), (
        f"docs/cli.md lacks this help text in a fenced block; paste it:\n{expected}"
    )


@pytest.mark.parametrize("table", schema.metadata.sorted_tables, ids=lambda t: t.name)
def test_every_column_has_a_row_in_journal_md(table: sa.Table) -> None:
    rows = section((DOCS / "journal.md").read_text(), f"### `{table.name}`")
    missing = [c.name for c in table.columns if f"| `{c.name}` |" not in rows]
    assert missing == []


def test_embed_example_runs_and_confirms_its_migration() -> None:
    # This checkout's package first, whatever the environment has installed.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    env.pop("MIGRATOR_FAILPOINTS", None)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "embed.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert ": CONFIRMED" in proc.stdout.splitlines()[0]


def test_readme_starts_with_the_demo_and_test_commands() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert lines[: len(README_TITLE)] == README_TITLE
    head = "\n".join(lines[:README_HEAD_LINES]) + "\n"
    # Each command verbatim in its own ```sh block, after its sentence and a blank line, so
    # that Markdown renders it as code (an indented line right under a sentence would join it).
    assert fenced_blocks(head, "sh") == [command + "\n" for _, command in README_COMMANDS]
    positions = []
    for sentence, command in README_COMMANDS:
        block = f"\n{sentence}\n\n```sh\n{command}\n```\n"
        assert block in head, f"README.md should start with:\n{block}"
        positions.append(head.index(block))
    assert positions == sorted(positions)  # the demo first, then the tests


# -- the docs site -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", list(command_paths(cli)), ids=lambda p: " ".join(p) or "migrator")
def test_generated_cli_reference_quotes_every_help_text(path: tuple[str, ...]) -> None:
    from migrator.cli.reference import markdown

    reference = markdown()
    title = " ".join(("migrator", *path))
    assert f"## `{title}`\n" in reference
    assert any(help_text(path) == block for block in fenced_blocks(reference, "text"))


@pytest.mark.slow
def test_mkdocs_build_strict_builds_the_site_with_the_generated_pages(tmp_path: Path) -> None:
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    reference = (site / "reference" / "index.html").read_text()
    for path in command_paths(cli):
        assert f"migrator {' '.join(path)}".strip() in reference
    assert '<figure class="diagram"><svg' in (site / "states" / "index.html").read_text()
    assert (site / "export.schema.json").is_file()
    assert "failed at" in (site / "post-mortem" / "index.html").read_text()
    home = (site / "index.html").read_text()
    for page in sorted(DOCS.glob("*.md")):  # every page is in the menu, listed or not
        target = "." if page.stem == "index" else f"{page.stem}/"
        assert f'href="{target}"' in home, page.name
