"""Post-copy is offered only by libvirt 8.5 or later, which can resume a failed post-copy
(``VIR_MIGRATE_POSTCOPY_RESUME``): a scripted daemon (``FakeHost``) answers
CONNECT_GET_LIB_VERSION with the version each test needs, since no older libvirt runs
here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from migrator.drivers.api import Feature
from migrator.drivers.libvirt.driver import LibvirtDriver
from migrator.drivers.libvirt.procedures import POSTCOPY_RESUME_VERSION, Proc
from migrator.drivers.libvirt.xdr import Packer
from migrator.journal.store import Journal
from tests.conftest import run_cli
from tests.drivers.libvirt.fake_daemon import FakeHost, fail, reply

V8_4_0 = 8_004_000
V8_5_0 = 8_005_000
V9_0_0 = 9_000_000


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[list[FakeHost]]:
    made: list[FakeHost] = []
    yield made
    for host in made:
        host.close()


def daemon(hosts: list[FakeHost], tmp_path: Path, version: int) -> FakeHost:
    """A daemon of libvirt ``version`` that offers migration v3 with parameters."""
    lib_version = reply(Packer().uhyper(version).data())
    fake = FakeHost(tmp_path / f"sock{len(hosts)}", {Proc.CONNECT_GET_LIB_VERSION: lib_version})
    hosts.append(fake)
    return fake


def test_the_version_that_can_resume_is_8_5() -> None:
    assert POSTCOPY_RESUME_VERSION == V8_5_0


@pytest.mark.parametrize("old", ["src", "dst"])
def test_a_libvirt_older_than_8_5_is_refused_before_begin(
    hosts: list[FakeHost], tmp_path: Path, old: str
) -> None:
    """One line naming the host and its version, exit 2, nothing journaled, and no call
    past the version (no lookup, no Begin3)."""
    src = daemon(hosts, tmp_path, V8_4_0 if old == "src" else V9_0_0)
    dst = daemon(hosts, tmp_path, V8_4_0 if old == "dst" else V9_0_0)
    db = f"sqlite:///{tmp_path / 'journal.db'}"
    proc = run_cli(
        "migrate", "vm", "--src", src.uri, "--dst", dst.uri, "--flag", "postcopy", "--json",
        db=db, timeout=40,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    refused = src if old == "src" else dst
    assert proc.stderr.splitlines() == [
        f"migrator: error: flag postcopy is refused: host {refused.uri} runs libvirt 8.4.0,"
        " which cannot resume a failed post-copy (8.5.0 or later can); migrate without it"
    ]
    assert proc.stdout == ""
    with Journal.open(db) as journal:
        assert journal.list() == [], "nothing is journaled"
    for fake in (src, dst):
        assert fake.calls(Proc.DOMAIN_MIGRATE_BEGIN3_PARAMS) == []
        assert fake.calls(Proc.DOMAIN_LOOKUP_BY_NAME) == []
    assert len(refused.calls(Proc.CONNECT_GET_LIB_VERSION)) == 1


@pytest.mark.parametrize("version", [V8_5_0, V9_0_0], ids=["8.5.0", "9.0.0"])
def test_libvirt_8_5_or_later_offers_post_copy(
    hosts: list[FakeHost], tmp_path: Path, version: int
) -> None:
    fake = daemon(hosts, tmp_path, version)
    driver = LibvirtDriver(fake.uri)
    try:
        assert driver.postcopy_refusal() is None
        assert Feature.POSTCOPY in driver.features()
    finally:
        driver.close()
    assert len(fake.calls(Proc.CONNECT_GET_LIB_VERSION)) == 1  # asked once


def test_libvirt_8_4_offers_migration_v3_without_post_copy(
    hosts: list[FakeHost], tmp_path: Path
) -> None:
    fake = daemon(hosts, tmp_path, V8_4_0)
    driver = LibvirtDriver(fake.uri)
    try:
        assert driver.postcopy_refusal() == (
            "runs libvirt 8.4.0, which cannot resume a failed post-copy (8.5.0 or later can)"
        )
        assert driver.features() == frozenset({Feature.MIGRATION_V3})
    finally:
        driver.close()


def test_a_daemon_that_does_not_say_its_version_offers_migration_without_post_copy(
    hosts: list[FakeHost], tmp_path: Path
) -> None:
    """Only post-copy needs the version: an error there refuses post-copy alone."""
    fake = FakeHost(
        tmp_path / "sock-err",
        {Proc.CONNECT_GET_LIB_VERSION: fail(1, 0, "this function is not supported")},
    )
    hosts.append(fake)
    driver = LibvirtDriver(fake.uri)
    try:
        reason = driver.postcopy_refusal()
        assert reason is not None and reason.startswith("did not say which libvirt it runs")
        assert driver.features() == frozenset({Feature.MIGRATION_V3})
    finally:
        driver.close()
