"""The driver registry: built-in drivers from a table, others through entry points, each
loaded only when a URI needs one."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from migrator.drivers.null import NullDriver
from migrator.drivers.registry import BUILT_IN, connect, schemes
from migrator.drivers.test import TestDriver
from migrator.errors import InvalidURI
from tests.conftest import run_cli

CONCRETE = ("migrator.drivers.test.driver", "migrator.drivers.qmphost", "migrator.drivers.null")


def test_every_built_in_driver_is_declared_as_an_entry_point() -> None:
    assert {"null", "qmp", "test"} <= set(schemes())


def test_the_built_in_table_is_what_pyproject_declares_as_entry_points() -> None:
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["migrator.drivers"] == BUILT_IN


def test_a_built_in_scheme_connects_without_reading_package_metadata() -> None:
    code = (
        "import sys\nfrom migrator.drivers.registry import connect\n"
        "print(type(connect('null://a')).__name__, 'importlib.metadata' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert out.split() == ["NullDriver", "False"]


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
    (dist / "entry_points.txt").write_text(
        "[migrator.drivers]\nwarp = fake_warp:Warp\nnull = fake_warp:Warp\n"
    )
    code = (
        "from migrator.drivers.registry import connect, factory, schemes\n"
        "print('warp' in schemes())\n"
        "print(type(connect('warp://x/y')).__name__)\n"
        "print(factory('qemu:///system').__name__)\n"
        f"print(type(connect('qemu://{tmp_path}/a')).__name__)\n"
        "print(type(connect('null://a')).__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    ).stdout  # fmt: skip
    # a package declaring a built-in scheme again does not replace the built-in driver
    assert out.splitlines() == ["True", "Warp", "LibvirtDriver", "QmpDriver", "NullDriver"]
