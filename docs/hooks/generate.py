"""MkDocs hook: pages generated at build time, so they never drift from the code.

- ``reference.md``: every command's ``--help`` (``migrator.cli.reference``).

(The diagrams are drawn by the other hook, ``diagrams.py``.)

It also adds to the navigation, under "More", any page of ``docs/`` that ``mkdocs.yml``
does not list, so that a new page is never left out of the site's menu.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

from migrator.cli.reference import markdown


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
    return files
