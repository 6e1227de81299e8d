"""The real-daemon rigs themselves: two hosts libvirt tells apart, guests, a clean stop, and
the namespaced hosts reached by ``virsh`` over each network transport."""

from __future__ import annotations

import time
from xml.etree import ElementTree

from migrator.drivers import payload
from tests.libvirt import guests
from tests.libvirt.conftest import Guest
from tests.libvirt.daemons import Pair, free_port, qemu_processes, virsh
from tests.libvirt.netns import NsPair
from tests.libvirt.nettap import virsh_uri
from tests.libvirt.nsrig import TRANSPORTS


def test_the_two_daemons_are_distinct_hosts(libvirt_pair: Pair) -> None:
    uuids = [_host_uuid(d.virsh("capabilities")) for d in libvirt_pair.daemons()]
    assert uuids == [d.host_uuid for d in libvirt_pair.daemons()]
    assert uuids[0] != uuids[1]
    assert libvirt_pair.src.sock != libvirt_pair.dst.sock


def _host_uuid(capabilities: str) -> str:
    node = ElementTree.fromstring(capabilities).find("host/uuid")
    assert node is not None and node.text
    return node.text


def test_a_guest_runs_on_the_source_only(guest: Guest) -> None:
    assert guest.states() == (("running", "booted"), ("absent", ""))


def test_virsh_migrates_a_guest_between_them(guest: Guest, migration_uri: str) -> None:
    guest.src.virsh("migrate", "--live", guest.name, guest.dst.uri, "--migrateuri", migration_uri)
    assert guest.states() == (("absent", ""), ("running", "migrated"))
    assert guest.pair.stray_qemus() == {}


def test_virsh_migrates_between_the_namespaced_hosts_over_each_transport(
    ns_pair: NsPair, ns_guest: str
) -> None:
    """There and back over ``qemu+tcp://``, ``qemu+tls://``, then there over ``qemu+ssh://``:
    the hosts' URIs (``NsPair.uri``) are what libvirt's own client takes."""
    hosts = [ns_pair.a, ns_pair.b, ns_pair.a, ns_pair.b]
    for transport, src, dst in zip(TRANSPORTS, hosts[:-1], hosts[1:], strict=True):
        uris = [virsh_uri(ns_pair, ns_pair.uri(h, transport)) for h in (src, dst)]
        migrate_uri = f"tcp://{dst.addr}:{free_port()}"
        virsh(uris[0], "migrate", "--live", ns_guest, uris[1], "--migrateuri", migrate_uri)
        states = [guests.state(h, ns_guest) for h in (src, dst)]  # type: ignore[arg-type]
        assert states == [("absent", ""), ("running", "migrated")], transport
    assert ns_pair.stray_qemus() == {}


def test_a_second_pair_runs_beside_the_first_and_stops_by_pid(libvirt_pair: Pair) -> None:
    other = Pair.start()
    name = guests.unique_name()
    try:
        guests.create(other.src, name, guests.domain_xml(name))
        assert name not in libvirt_pair.src.active_domains()
        assert list(qemu_processes(other.root).values()) == [name]
    finally:
        other.stop()
    assert qemu_processes(other.root) == {}
    assert not other.root.exists()


def test_the_pattern_guest_memory_reads_back_through_libvirt(libvirt_pair: Pair) -> None:
    pattern = payload.Pattern(touch_mib=8, seed=0x5EED1234)
    image = guests.pattern_image(libvirt_pair.root, pattern)
    name = guests.unique_name("m")
    guests.create(libvirt_pair.src, name, guests.pattern_xml(name, image))
    try:
        deadline = time.monotonic() + 20
        while not guests.marker_set(libvirt_pair.src, name):
            assert time.monotonic() < deadline, "the payload never finished"
            time.sleep(0.1)
        data = guests.read_memory(libvirt_pair.src, name, pattern.start, pattern.size)
        assert len(data) == pattern.size
        assert payload.check_region(data, pattern) == 0
    finally:
        guests.destroy(libvirt_pair.src, name)
