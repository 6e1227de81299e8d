"""The qemu:/// driver's checks that need no QEMU: URIs, descriptions, names, a missing QEMU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from migrator.drivers.base import DomainState, connect
from migrator.drivers.qemu import (
    QemuDriver,
    check_name,
    config_from_description,
    map_status,
    new_config,
)
from migrator.errors import DriverError, InvalidURI
from tests.conftest import run_cli


def test_a_qemu_uri_connects_to_the_qemu_driver(tmp_path: Path) -> None:
    driver = connect(f"qemu://{tmp_path}")
    assert isinstance(driver, QemuDriver)
    assert driver.dir == tmp_path


@pytest.mark.parametrize(
    "uri", ["qemu://relative/dir", "qemu:relative", "qemu:///abs?x=1", "qemu://host/abs"]
)
def test_a_qemu_uri_without_an_absolute_dir_is_refused(uri: str) -> None:
    with pytest.raises(InvalidURI, match="invalid host URI"):
        connect(uri)


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("running", DomainState.RUNNING),
        ("paused", DomainState.PAUSED),
        ("postmigrate", DomainState.PAUSED),
        ("finish-migrate", DomainState.PAUSED),
        ("inmigrate", DomainState.INCOMING),
        ("shutdown", DomainState.SHUTOFF),
    ],
)
def test_qemu_run_states_map_to_domain_states(status: str, state: DomainState) -> None:
    assert map_status(status) is state


def test_a_description_round_trips_and_a_tampered_one_is_refused() -> None:
    config = new_config("vm1", 128, None, False)
    assert config["touch_mib"] == 96
    text = json.dumps({"name": "vm1", "config": config})
    assert config_from_description(text) == config
    for bad in (
        {**config, "machine": "pc,accel=kvm"},
        {**config, "touch_mib": 500},
        {**config, "memory_mib": "lots"},
    ):
        with pytest.raises(DriverError, match="prepare got"):
            config_from_description(json.dumps({"config": bad}))
    with pytest.raises(DriverError, match="not a qemu domain"):
        config_from_description("not json")


@pytest.mark.parametrize("name", ["", "a,b", "../x", "-x", "a b", "x" * 65])
def test_names_that_cannot_name_files_or_qemu_options_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="bad domain name"):
        check_name(name)


def test_probe_of_an_unknown_domain_is_absent_without_qemu(tmp_path: Path) -> None:
    assert QemuDriver(f"qemu://{tmp_path}").probe("vm1").state is DomainState.ABSENT


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["list", "qemu://rel/dir"], "qemu host path must be absolute"),
        (["list", "test:///tmp/x"], "not a qemu host"),
        (["destroy", "qemu:///ABS", "nope"], "domain 'nope' not found on qemu:///ABS"),
        (["set-downtime", "qemu:///ABS", "nope", "500"], "domain 'nope' not found"),
        (["define", "qemu:///ABS", "a,b"], "bad domain name"),
        (["define", "qemu:///ABS", "vm1", "--memory", "32", "--touch", "30"], "touched memory"),
    ],
)
def test_qemu_host_bad_input_is_one_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path
) -> None:
    args = [a.replace("/ABS", str(tmp_path)) for a in args]
    message = message.replace("/ABS", str(tmp_path))
    proc = run_cli("qemu-host", *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and message in proc.stderr


def test_qemu_host_define_without_qemu_says_what_to_install(tmp_path: Path) -> None:
    proc = run_cli(
        "qemu-host", "define", f"qemu://{tmp_path}", "vm1",
        env={"MIGRATOR_QEMU": str(tmp_path / "no-such-qemu")},
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1
    assert "QEMU not found" in proc.stderr and "qemu-system-x86" in proc.stderr
    assert QemuDriver(f"qemu://{tmp_path}").domains() == []
