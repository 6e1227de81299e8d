"""``refuse_unhonoured``: a flag either host's driver does not act on is refused, by name."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from migrator.drivers import registry
from migrator.drivers.api import DomainState
from migrator.drivers.flagcheck import refuse_unhonoured
from migrator.drivers.null import NullDriver
from migrator.drivers.qmphost import QmpDriver
from migrator.drivers.test import TestDriver
from migrator.engine.coordinator import Coordinator
from migrator.errors import FlagNotHonoured, InvalidURI, UsageError
from migrator.flags import MigrateFlags, cli_name
from migrator.journal.store import Journal


def null_hosts() -> tuple[NullDriver, NullDriver]:
    """Two null hosts of their own (null hosts share state within a process)."""
    name = uuid.uuid4().hex
    return NullDriver(f"null://{name}-a"), NullDriver(f"null://{name}-b")


def test_flags_every_driver_honours_pass(tmp_path: Path) -> None:
    test_host = TestDriver(f"test://{tmp_path / 't'}")
    refuse_unhonoured(MigrateFlags.LIVE | MigrateFlags.PAUSED, NullDriver("null://a"), test_host)


def test_the_first_unhonoured_flag_is_named_with_the_driver_and_what_it_honours() -> None:
    with pytest.raises(FlagNotHonoured) as caught:
        refuse_unhonoured(
            MigrateFlags.LIVE | MigrateFlags.COMPRESSED | MigrateFlags.POSTCOPY,
            NullDriver("null://a"),
        )
    assert isinstance(caught.value, UsageError), "the CLI exits 2"
    assert (caught.value.flag, caught.value.driver) == ("compressed", "null")
    assert str(caught.value) == (
        "flag compressed is not honoured by the null driver (null://a); it honours: live, paused"
    )


def test_a_flag_only_the_destination_lacks_is_refused(tmp_path: Path) -> None:
    src = TestDriver(f"test://{tmp_path / 't'}")
    with pytest.raises(FlagNotHonoured, match=r"persist-dest .* by the null driver"):
        refuse_unhonoured(MigrateFlags.PERSIST_DEST, src, NullDriver("null://b"))


def test_the_qmp_driver_honours_live_paused_and_postcopy_only(tmp_path: Path) -> None:
    honoured = MigrateFlags.LIVE | MigrateFlags.PAUSED | MigrateFlags.POSTCOPY
    assert QmpDriver(f"qmp://{tmp_path}").honoured_flags == honoured
    with pytest.raises(FlagNotHonoured, match=r"undefine-source .* by the qmp driver"):
        refuse_unhonoured(MigrateFlags.UNDEFINE_SOURCE, QmpDriver(f"qmp://{tmp_path}"))


def test_a_legacy_qemu_host_is_named_as_the_qmp_driver(tmp_path: Path) -> None:
    with pytest.raises(FlagNotHonoured, match=r"by the qmp driver \(qemu:///"):
        refuse_unhonoured(MigrateFlags.TLS, QmpDriver(f"qemu://{tmp_path}"))


def test_migrate_refuses_before_anything_is_journaled(journal: Journal) -> None:
    src, dst = null_hosts()
    src.define("vm1")
    with pytest.raises(FlagNotHonoured, match="compressed"):
        Coordinator(journal).migrate("vm1", src=src, dst=dst, flags=MigrateFlags.COMPRESSED)
    assert journal.list() == []
    assert src.probe("vm1").state is DomainState.RUNNING


def test_the_null_driver_keeps_a_paused_domain_paused(journal: Journal) -> None:
    src, dst = null_hosts()
    src.define("vm1", DomainState.PAUSED)
    m = Coordinator(journal).migrate("vm1", src=src, dst=dst)
    assert m.flags & MigrateFlags.PAUSED
    assert dst.probe("vm1").state is DomainState.PAUSED


F = MigrateFlags
HONOURED = {
    "null": F.LIVE | F.PAUSED,
    "qmp": F.LIVE | F.PAUSED | F.POSTCOPY,
    "test": F.LIVE | F.TUNNELLED | F.PERSIST_DEST | F.UNDEFINE_SOURCE | F.PAUSED
    | F.CHANGE_PROTECTION | F.ABORT_ON_ERROR | F.POSTCOPY,
    "libvirt": ~(F.PEER2PEER | F.TUNNELLED),
}  # fmt: skip
"""What docs/drivers.md ("Flags each driver honours") and docs/libvirt.md say each driver acts
on, written out by hand."""
HOSTS = {
    "null": ("null://flagcheck", "null"),
    "qmp": ("qmp:///srv/qmp-host", "qmp"),
    "test": ("test:///srv/test-host", "test"),
    "qemu": ("qemu:///system", "libvirt"),
    "qemu+unix": ("qemu+unix:///session?socket=/run/a.sock", "libvirt"),
    "qemu+tcp": ("qemu+tcp://host-a/system", "libvirt"),
    "qemu+tls": ("qemu+tls://host-a/system", "libvirt"),
    "qemu+ssh": ("qemu+ssh://host-a/system", "libvirt"),
}
"""A host URI of every registered scheme (parsed, never connected to) and its driver."""
NOT_YET: dict[str, str] = {}  # schemes registered before their transport is supported


def _schemes() -> list[object]:
    return [
        pytest.param(s, marks=pytest.mark.xfail(raises=InvalidURI, strict=True, reason=why))
        if (why := NOT_YET.get(s))
        else s
        for s in registry.schemes()
    ]


def test_every_registered_scheme_has_a_host_here() -> None:
    assert sorted(HOSTS) == registry.schemes()


@pytest.mark.parametrize("scheme", _schemes())
def test_every_driver_passes_what_it_honours_and_refuses_the_rest_by_name(scheme: str) -> None:
    uri, driver = HOSTS[scheme]
    host = registry.connect(uri)  # builds the driver: the URI is parsed, nothing connects
    honoured = HONOURED[driver]
    refuse_unhonoured(honoured, host, host)
    for flag in MigrateFlags:
        if not flag or flag & honoured:
            continue
        with pytest.raises(FlagNotHonoured) as caught:
            refuse_unhonoured(flag, host)
        assert caught.value.flag == cli_name(flag)
        assert uri.split("?")[0] in str(caught.value)
