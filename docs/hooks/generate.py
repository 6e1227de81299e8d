"""MkDocs hook: pages generated at build time, so they never drift from the code.

- ``reference.md``: every command's ``--help`` (``migrator.cli.reference``);
- ``states.svg``: the state machine drawn by graphviz from the state table, or, where
  graphviz is not installed, a note saying so (the page keeps the Mermaid source).
"""

from __future__ import annotations

from typing import Any

from mkdocs.structure.files import File, Files

from migrator.cli.reference import markdown
from migrator.diagram import Format, GraphvizMissing, render

PLACEHOLDER = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="640" height="40">'
    '<text x="10" y="25" font-family="sans-serif" font-size="14">'
    "graphviz was not installed when this site was built: see the Mermaid source below"
    "</text></svg>\n"
)


def _states_svg() -> str:
    try:
        return render(Format.SVG).decode()
    except GraphvizMissing:
        return PLACEHOLDER


def on_files(files: Files, config: Any) -> Files:
    files.append(File.generated(config, "reference.md", content=markdown()))
    files.append(File.generated(config, "states.svg", content=_states_svg()))
    return files
