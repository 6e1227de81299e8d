"""``examples/libvirt_migration.py`` migrates a guest between two real daemons: the session
pair over UNIX sockets, and the namespaced hosts (``netns.py``) over ``qemu+tcp://``,
``qemu+tls://`` and ``qemu+ssh://``, as operators reach them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.libvirt.conftest import Guest
from tests.libvirt.daemons import migrate_uri
from tests.libvirt.nsrig import NsRig


def _example(name: str, src: str, dst: str, tmp_path: Path) -> str:
    """Run the example; its output, once it exited 0 and printed what the hosts hold."""
    env = {**os.environ}
    env.pop("MIGRATOR_FAILPOINTS", None)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "libvirt_migration.py"), name,
         "--src", src, "--dst", dst, "--db", f"sqlite:///{tmp_path / 'journal.db'}"],
        capture_output=True, text=True, env=env, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ": CONFIRMED" in proc.stdout
    assert "source       absent" in proc.stdout
    assert "destination  running" in proc.stdout
    return proc.stdout


def test_the_libvirt_example_confirms_its_migration(
    libvirt_driver: None, guest: Guest, tmp_path: Path
) -> None:
    _example(guest.name, guest.src.uri, f"{guest.dst.uri}&migrate_uri={migrate_uri()}", tmp_path)
    assert guest.states() == (("absent", ""), ("running", "migrated"))


def test_the_example_confirms_its_migration_between_the_namespaced_hosts(
    ns_rig: NsRig, tmp_path: Path
) -> None:
    _example(ns_rig.name, ns_rig.src, ns_rig.dst, tmp_path)
    assert ns_rig.states() == ("absent", "running")
