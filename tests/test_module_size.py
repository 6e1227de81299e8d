"""Small modules stay small: every module of the package is at most 400 lines
(docs/architecture.md: one module owns one thing)."""

from __future__ import annotations

from pathlib import Path

import migrator

LIMIT = 400


def test_every_module_is_at_most_400_lines() -> None:
    root = Path(migrator.__file__).parent
    sizes = {
        p.relative_to(root.parent): len(p.read_text().splitlines()) for p in root.rglob("*.py")
    }
    assert len(sizes) > 50
    assert {str(p): n for p, n in sizes.items() if n > LIMIT} == {}
