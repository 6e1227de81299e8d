"""One import path per public name: no module but a package's front door (``__init__.py``)
gives names defined elsewhere a second path (issue: ``drivers/base.py``, ``coordinator.py``
and ``recovery.py`` once re-exported the engine and the driver seam)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

MODULES = sorted(
    p for p in (ROOT / "migrator").rglob("*.py") if p.name not in ("__init__.py", "__main__.py")
)


def _imported_names(tree: ast.Module) -> set[str]:
    return {
        alias.asname or alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("migrator")
        for alias in node.names
    }


def _all(tree: ast.Module) -> list[str]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return [ast.literal_eval(e) for e in node.value.elts]  # type: ignore[attr-defined]
    return []


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_module_exports_only_what_it_defines(path: Path) -> None:
    tree = ast.parse(path.read_text())
    assert sorted(set(_all(tree)) & _imported_names(tree)) == []


def test_the_check_catches_a_re_export(tmp_path: Path) -> None:
    tree = ast.parse("from migrator.drivers.api import Driver\n__all__ = ['Driver']\n")
    assert set(_all(tree)) & _imported_names(tree) == {"Driver"}


def test_the_re_export_modules_are_gone() -> None:
    assert not (ROOT / "migrator" / "drivers" / "base.py").exists()
    assert not (ROOT / "migrator" / "coordinator.py").exists()
