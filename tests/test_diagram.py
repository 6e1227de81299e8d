"""The diagram is drawn from the state table: every state and transition, the path taken."""

from __future__ import annotations

import shutil

import pytest

from migrator import diagram
from migrator.diagram import mermaid
from migrator.states import TERMINAL, TRANSITIONS, State


def test_dot_has_every_transition_of_the_table() -> None:
    text = diagram.dot()
    for t in TRANSITIONS:
        assert f'    {t.source} -> {t.dest} [label="{t.trigger}"];' in text
    for state in TERMINAL:
        assert f"    {state} [peripheries=2];" in text
    assert diagram.TAKEN_FILL not in text


def test_dot_highlights_the_path_taken() -> None:
    path = [State.NEW, State.BEGINNING, State.FAILED]
    text = diagram.dot(path)
    assert f'    {State.BEGINNING} [fillcolor="{diagram.TAKEN_FILL}"' in text
    taken_edges = [line for line in text.splitlines() if "penwidth=2.5" in line]
    assert [line.split(" [")[0].strip() for line in taken_edges] == [
        "NEW -> BEGINNING",
        "BEGINNING -> FAILED",
    ]


def test_mermaid_format_is_the_state_tables_mermaid() -> None:
    path = [State.NEW, State.BEGINNING]
    assert diagram.render(diagram.Format.MERMAID, path) == mermaid(path).encode()


def test_svg_without_dot_names_the_missing_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(diagram.GraphvizMissing, match="apt-get install graphviz"):
        diagram.render(diagram.Format.SVG)


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz not installed")
def test_svg_with_dot_draws_every_state() -> None:
    svg = diagram.render(diagram.Format.SVG).decode()
    for t in TRANSITIONS:
        assert f">{t.source}<" in svg
