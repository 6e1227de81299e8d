"""The driver registry: entry points for every driver, loaded only when a URI needs one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from migrator.drivers.null import NullDriver
from migrator.drivers.registry import connect, schemes
from migrator.drivers.test import TestDriver
from migrator.errors import InvalidURI
from tests.conftest import run_cli

CONCRETE = ("migrator.drivers.test.driver", "migrator.drivers.qmphost", "migrator.drivers.null")


def test_every_built_in_driver_is_declared_as_an_entry_point() -> None:
    assert {"null", "qmp", "test"} <= set(schemes())


def test_connect_opens_the_driver_its_entry_point_names(tmp_path: Path) -> None:
    assert isinstance(connect(f"test://{tmp_path}"), TestDriver)
    assert isinstance(connect("null://a"), NullDriver)


def test_an_unknown_scheme_names_the_known_ones() -> None:
    with pytest.raises(InvalidURI) as caught:
        connect("warp://x/y")
    assert str(caught.value) == (
        "invalid host URI 'warp://x/y': unknown scheme 'warp'; known schemes:"
        " null, qemu, qemu+ssh, qemu+tcp, qemu+tls, qemu+unix, qmp, test"
    )


def test_a_uri_without_a_scheme_is_refused() -> None:
    with pytest.raises(InvalidURI, match="no scheme"):
        connect("/srv/hostA")


@pytest.mark.parametrize("module", ["migrator.drivers.registry", "migrator.cli.main"])
def test_importing_the_registry_or_the_cli_loads_no_driver(module: str) -> None:
    code = f"import sys, {module}\nprint([m for m in sys.modules if m.startswith({CONCRETE!r})])"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert out.strip() == "[]"


def test_migrate_to_an_unknown_scheme_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = run_cli(
        "--db", f"sqlite:///{tmp_path}/j.db", "migrate", "vm1",
        "--src", f"test://{tmp_path}/a", "--dst", "warp://b",
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (
        "migrator: error: invalid host URI 'warp://b': unknown scheme 'warp';"
        " known schemes: null, qemu, qemu+ssh, qemu+tcp, qemu+tls, qemu+unix, qmp, test\n"
    )


PLUGIN = '''
from migrator.drivers.null import NullDriver


class Warp(NullDriver):
    """Stands for a driver installed from another distribution."""

    def __init__(self, uri: str) -> None:
        super().__init__("null://warp-stand-in")
        self.uri = uri
'''


def test_a_scheme_declared_by_another_package_is_found_and_legacy_qmp_hosts_stay_qmp(
    tmp_path: Path,
) -> None:
    """A driver package registers its scheme by an entry point, no code change here."""
    (tmp_path / "fake_warp.py").write_text(PLUGIN)
    dist = tmp_path / "fake_warp-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-warp\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[migrator.drivers]\nwarp = fake_warp:Warp\n")
    code = (
        "from migrator.drivers.registry import connect, factory, schemes\n"
        "print('warp' in schemes())\n"
        "print(type(connect('warp://x/y')).__name__)\n"
        "print(factory('qemu:///system').__name__)\n"
        f"print(type(connect('qemu://{tmp_path}/a')).__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    ).stdout  # fmt: skip
    assert out.splitlines() == ["True", "Warp", "LibvirtDriver", "QmpDriver"]
