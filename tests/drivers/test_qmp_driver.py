"""The qmp:/// driver's checks that need no QEMU: URIs, descriptions, names, a missing QEMU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from migrator.drivers.api import DomainState
from migrator.drivers.qmphost import (
    QmpDriver,
    check_name,
    config_from_description,
    map_status,
    new_config,
)
from migrator.drivers.registry import connect
from migrator.errors import DriverError, InvalidURI
from tests.conftest import run_cli


def test_a_qmp_uri_connects_to_the_qmp_driver(tmp_path: Path) -> None:
    driver = connect(f"qmp://{tmp_path}")
    assert isinstance(driver, QmpDriver)
    assert driver.dir == tmp_path


def test_a_legacy_qemu_uri_with_an_absolute_dir_still_connects_to_the_qmp_driver(
    tmp_path: Path,
) -> None:
    driver = connect(f"qemu://{tmp_path}")
    assert isinstance(driver, QmpDriver)
    assert driver.dir == tmp_path
    assert driver.uri == f"qemu://{tmp_path}", "the URI stays as journaled"


@pytest.mark.parametrize(
    "uri",
    [
        "qemu:///system",
        "qemu:///session",
        "qemu:///system/",
        "qemu+unix:///system?socket=/run/x.sock",
        "qemu+tcp://host/system",
        "qemu+tls://host:16514/system",
        "qemu://host/abs",
        "qemu:///abs?x=1",
    ],
)
def test_libvirt_uris_are_not_qmp_hosts_but_the_libvirt_drivers(uri: str) -> None:
    from migrator.drivers.libvirt.driver import LibvirtDriver
    from migrator.drivers.registry import factory

    assert factory(uri) is LibvirtDriver


@pytest.mark.parametrize(
    "uri", ["qmp://relative/dir", "qmp:relative", "qmp:///abs?x=1", "qmp://host/abs"]
)
def test_a_qmp_uri_without_an_absolute_dir_is_refused(uri: str) -> None:
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
    assert QmpDriver(f"qmp://{tmp_path}").probe("vm1").state is DomainState.ABSENT


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["list", "qmp://rel/dir"], "qmp host path must be absolute"),
        (["list", "test:///tmp/x"], "not a qmp host"),
        (["list", "qemu:///system"], "not a qmp host"),
        (["destroy", "qmp:///ABS", "nope"], "domain 'nope' not found on qmp:///ABS"),
        (["set-downtime", "qmp:///ABS", "nope", "500"], "domain 'nope' not found"),
        (["define", "qmp:///ABS", "a,b"], "bad domain name"),
        (["define", "qmp:///ABS", "vm1", "--memory", "32", "--touch", "30"], "touched memory"),
    ],
)
def test_qmp_host_bad_input_is_one_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path
) -> None:
    args = [a.replace("/ABS", str(tmp_path)) for a in args]
    message = message.replace("/ABS", str(tmp_path))
    proc = run_cli("qmp-host", *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and message in proc.stderr


def test_qmp_host_define_without_qemu_says_what_to_install(tmp_path: Path) -> None:
    proc = run_cli(
        "qmp-host", "define", f"qmp://{tmp_path}", "vm1",
        env={"MIGRATOR_QEMU": str(tmp_path / "no-such-qemu")},
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1
    assert "QEMU not found" in proc.stderr and "qemu-system-x86" in proc.stderr
    assert QmpDriver(f"qmp://{tmp_path}").domains() == []
