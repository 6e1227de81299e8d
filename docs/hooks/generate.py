"""MkDocs hook: pages generated at build time, so they never drift from the code.

- ``reference.md``: every command's ``--help`` (``migrator.cli.reference``);
- ``states.svg``: the state machine drawn by graphviz from the state table, or, where
  graphviz is not installed, a note saying so (the page keeps the Mermaid source).

It also adds to the navigation, under "More", any page of ``docs/`` that ``mkdocs.yml``
does not list, so that a new page is never left out of the site's menu.
"""

from __future__ import annotations

from pathlib import Path
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


def _listed(nav: Any) -> set[str]:
    if isinstance(nav, str):
        return {nav}
    if isinstance(nav, dict):
        return set().union(*(_listed(v) for v in nav.values()))
    if isinstance(nav, list):
        return set().union(*(_listed(v) for v in nav))
    return set()


def on_config(config: Any) -> Any:
    listed = _listed(config["nav"])
    pages = sorted(p.name for p in Path(config["docs_dir"]).glob("*.md"))
    missing = [p for p in pages if p not in listed]
    if missing:
        config["nav"].append({"More": missing})
    return config


def on_files(files: Files, config: Any) -> Files:
    files.append(File.generated(config, "reference.md", content=markdown()))
    files.append(File.generated(config, "states.svg", content=_states_svg()))
    return files
