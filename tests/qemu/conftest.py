"""Fixtures for tests with real QEMU processes.

They need ``qemu-system-x86_64`` (``apt-get install --no-install-recommends qemu-system-x86``)
and skip without it, unless ``MIGRATOR_REQUIRE_QEMU=1`` (as in CI) makes that a failure.
Every QEMU a test starts is stopped by pid when the test ends, pass or fail; a teardown
that cannot stop one fails.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.qemu.rig import QemuRig, qemu_processes, stop_processes

REQUIRE_QEMU = os.environ.get("MIGRATOR_REQUIRE_QEMU") == "1"


@pytest.fixture(scope="session")
def qemu_binary() -> str:
    wanted = os.environ.get("MIGRATOR_QEMU") or "qemu-system-x86_64"
    found = shutil.which(wanted)
    if found is None:
        reason = f"QEMU not found: {wanted} (apt-get install qemu-system-x86)"
        if REQUIRE_QEMU:
            pytest.fail(f"QEMU required (MIGRATOR_REQUIRE_QEMU=1) but missing: {reason}")
        pytest.skip(reason)
    try:
        __import__("qemu.qmp")
    except ImportError:
        if REQUIRE_QEMU:
            pytest.fail("QEMU required (MIGRATOR_REQUIRE_QEMU=1) but qemu.qmp is not installed")
        pytest.skip("qemu.qmp not installed (pip install -e '.[qemu]')")
    return found


@pytest.fixture
def qemu_root(qemu_binary: str, tmp_path: Path) -> Iterator[Path]:
    """A directory for qemu hosts; every QEMU under it is stopped by pid afterwards."""
    root = tmp_path / "qemu"
    root.mkdir()
    try:
        yield root
    finally:
        stop_processes(root)
    assert qemu_processes(root) == {}, "a QEMU survived SIGKILL"


@pytest.fixture
def rig(qemu_root: Path) -> QemuRig:
    """Two empty qemu hosts, ``a`` (the source) and ``b``."""
    return QemuRig.make(qemu_root)
