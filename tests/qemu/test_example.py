"""``examples/qemu_live_migration.py`` runs, migrates, checks the memory and cleans up."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT


def test_qemu_example_confirms_its_migration_with_equal_memory(qemu_binary: str) -> None:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    env.pop("MIGRATOR_FAILPOINTS", None)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "qemu_live_migration.py"), "--memory", "64"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert ": CONFIRMED" in proc.stdout
    assert "equals the source's: True" in proc.stdout
