"""``examples/qmp_live_migration.py`` runs, migrates, checks the memory and cleans up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_qemu_example_confirms_its_migration_with_equal_memory(qemu_root: Path) -> None:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    # Its hosts go under qemu_root, whose QEMUs are stopped by pid even if it fails.
    env = {**os.environ, "PYTHONPATH": path, "TMPDIR": str(qemu_root)}
    env.pop("MIGRATOR_FAILPOINTS", None)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "qmp_live_migration.py"), "--memory", "64"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert ": CONFIRMED" in proc.stdout
    assert "equals the source's: True" in proc.stdout
