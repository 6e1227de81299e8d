"""``examples/libvirt_migration.py`` migrates a guest between the two real daemons."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.libvirt.conftest import Guest
from tests.libvirt.daemons import migrate_uri


def test_the_libvirt_example_confirms_its_migration(
    libvirt_driver: None, guest: Guest, tmp_path: Path
) -> None:
    env = {**os.environ}
    env.pop("MIGRATOR_FAILPOINTS", None)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "libvirt_migration.py"), guest.name,
         "--src", guest.src.uri, "--dst", f"{guest.dst.uri}&migrate_uri={migrate_uri()}",
         "--db", f"sqlite:///{tmp_path / 'journal.db'}"],
        capture_output=True, text=True, env=env, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ": CONFIRMED" in proc.stdout
    assert "source       absent" in proc.stdout
    assert "destination  running" in proc.stdout
    assert guest.states() == (("absent", ""), ("running", "migrated"))
