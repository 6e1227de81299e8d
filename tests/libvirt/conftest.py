"""Fixtures for tests against two real libvirt daemons (see ``tests/libvirt/daemons.py``).

They need ``libvirtd``, ``virsh`` and QEMU (``apt-get install --no-install-recommends
libvirt-daemon-driver-qemu libvirt-clients libvirt-daemon qemu-system-x86``) and skip
without them, unless ``MIGRATOR_REQUIRE_LIBVIRT=1`` (as in CI) makes that a failure.

One pair of daemons serves the whole run, in a fresh directory of its own; at the end the
guests are destroyed, then the daemons stopped by pid, pass or fail. Each test gets a
fresh, uniquely named transient guest, destroyed on both hosts afterwards.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from migrator.journal.store import Journal
from tests.libvirt import daemons, guests, netns
from tests.libvirt.daemons import Daemon, Pair
from tests.libvirt.netns import NsPair
from tests.libvirt.nsrig import TRANSPORTS, NsRig
from tests.libvirt.rig import LibvirtRig

REQUIRE_LIBVIRT = os.environ.get("MIGRATOR_REQUIRE_LIBVIRT") == "1"
DRIVER_MODULE = "migrator.drivers.libvirt.driver"


def driver_missing() -> str | None:
    """Why ``migrator migrate`` cannot reach libvirt hosts from here, or ``None``."""
    try:
        importlib.import_module(DRIVER_MODULE)
    except ImportError:
        return "libvirt driver not available"
    return None


@pytest.fixture(scope="session")
def libvirt_pair() -> Iterator[Pair]:
    reason = daemons.missing()
    if reason is not None:
        if REQUIRE_LIBVIRT:
            pytest.fail(f"libvirt required (MIGRATOR_REQUIRE_LIBVIRT=1) but missing: {reason}")
        pytest.skip(reason)
    pair = Pair.start()
    try:
        yield pair
    finally:
        pair.stop()


@pytest.fixture(scope="session")
def ns_pair() -> Iterator[NsPair]:
    """Two system-mode hosts in network namespaces, each behind an sshd (``netns.py``)."""
    reason = daemons.missing() or netns.missing()
    if reason is not None:
        if REQUIRE_LIBVIRT:
            pytest.fail(f"libvirt required (MIGRATOR_REQUIRE_LIBVIRT=1) but missing: {reason}")
        pytest.skip(reason)
    pair = NsPair.start()
    try:
        yield pair
    finally:
        pair.stop()


@pytest.fixture
def ns_guest(ns_pair: NsPair) -> Iterator[str]:
    """A fresh running tiny guest on ``ns_pair``'s host a; destroyed on both hosts afterwards."""
    name = guests.unique_name()
    guests.create(ns_pair.a, name, guests.domain_xml(name))  # type: ignore[arg-type]
    try:
        yield name
    finally:
        for host in ns_pair.hosts():
            host.virsh("destroy", name, check=False)
            host.virsh("undefine", name, check=False)


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """How ``ns_rig`` reaches the hosts: each test that uses it runs over ``qemu+tcp://``,
    ``qemu+tls://`` and ``qemu+ssh://`` in turn, unless it parametrizes ``transport``
    itself (``unix``, ``tcp``, ``tls`` or ``ssh``; see ``nsrig.WITH_UNIX``)."""
    return str(request.param)


@pytest.fixture
def ns_rig(ns_pair: NsPair, ns_guest: str, tmp_path: Path, transport: str) -> NsRig:
    """A fresh SQLite journal, the namespaced hosts over ``transport``, a running guest on
    host ``a``."""
    db = f"sqlite:///{tmp_path / 'journal.db'}"
    Journal.open(db, upgrade=True).close()
    return NsRig(ns_pair, db, ns_guest, transport)


@pytest.fixture
def libvirt_driver() -> None:
    """Skip unless the libvirt driver can be imported."""
    reason = driver_missing()
    if reason is not None:
        pytest.skip(reason)


@dataclass
class Guest:
    """A transient guest created on the source daemon of ``pair``."""

    name: str
    pair: Pair

    @property
    def src(self) -> Daemon:
        return self.pair.src

    @property
    def dst(self) -> Daemon:
        return self.pair.dst

    def states(self) -> tuple[tuple[str, str], tuple[str, str]]:
        """``((state, reason) on the source, (state, reason) on the destination)``."""
        return guests.state(self.src, self.name), guests.state(self.dst, self.name)

    def cleanup(self, *names: str) -> None:
        for daemon in self.pair.daemons():
            for name in (self.name, *names):
                guests.destroy(daemon, name)


@pytest.fixture
def guest(libvirt_pair: Pair) -> Iterator[Guest]:
    """A fresh running tiny guest on the source; destroyed on both daemons afterwards."""
    g = Guest(guests.unique_name(), libvirt_pair)
    guests.create(libvirt_pair.src, g.name, guests.domain_xml(g.name))
    try:
        yield g
    finally:
        g.cleanup()


@pytest.fixture
def rig(libvirt_driver: None, guest: Guest, tmp_path: Path) -> LibvirtRig:
    """A fresh SQLite journal, the daemons and a running guest on the source."""
    db = f"sqlite:///{tmp_path / 'journal.db'}"
    Journal.open(db, upgrade=True).close()
    return LibvirtRig(guest.pair, db, guest.name)


@pytest.fixture
def migration_uri() -> str:
    """``tcp://127.0.0.1:PORT`` with a port free now: the daemons' QEMUs meet there."""
    return daemons.migrate_uri()
