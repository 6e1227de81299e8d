"""The busy guest on the namespaced libvirt hosts, for the post-copy and convergence tests
(fixture ``busy``): start it, read its memory, and check that what runs on the destination
is whole and advancing."""

from __future__ import annotations

import time

import pytest

from tests import busyguest
from tests.libvirt import guests
from tests.libvirt.conftest import REQUIRE_LIBVIRT
from tests.libvirt.netns import NsHost
from tests.libvirt.nsrig import NsRig

CAP = "8"
"""MiB/s of pre-copy: a pass of 46 MiB takes six seconds while the guest rewrites every
page hundreds of times, so pre-copy never converges."""
SLOW = "2"
"""MiB/s of post-copy where it must last a while (a cut, a crash in the middle)."""
SWITCH = "perform.underway=postcopy"
LATER = ("--budget", "32", "--on-stall", "postcopy")
"""The switch by the convergence policy, 2 s into Perform of the 64 MiB guest: after the
Perform watch set the post-copy bandwidth (which the failpoint's switch, at the first
progress report, may outrun)."""


@pytest.fixture
def busy(ns_rig: NsRig) -> NsRig:
    """``ns_rig`` with its guest replaced by the busy guest, running."""
    start_busy(ns_rig)
    return ns_rig


def start_busy(rig: NsRig) -> None:
    """Replace the rig's guest by the busy guest; return once it runs."""
    kernel = busyguest.build(rig.pair.root, required=REQUIRE_LIBVIRT)
    guests.destroy(rig.pair.a, rig.name)  # type: ignore[arg-type]
    guests.create(rig.pair.a, rig.name, guests.domain_xml(rig.name, kernel=kernel))  # type: ignore[arg-type]
    first = counter(rig.pair.a, rig.name)
    deadline = time.monotonic() + 30
    while counter(rig.pair.a, rig.name) <= first:
        assert time.monotonic() < deadline, "the busy guest does not run"
        time.sleep(0.1)


def counter(host: NsHost, name: str) -> int:
    raw = guests.read_memory(host, name, busyguest.COUNTER, 4)  # type: ignore[arg-type]
    return int.from_bytes(raw, "little")


def whole_and_advancing(rig: NsRig) -> int:
    """The guest runs on the destination only, its memory one sweep edge (no page lost),
    and its counter advances; the counter seen."""
    assert rig.states() == ("absent", "running"), rig.states()
    host = rig.pair.b
    host.virsh("suspend", rig.name)  # one still snapshot
    start, end = busyguest.REGION
    region = guests.read_memory(host, rig.name, start, end - start)  # type: ignore[arg-type]
    host.virsh("resume", rig.name)
    assert busyguest.one_sweep_edge(region), "a page was lost: the sweep is not one edge"
    first = counter(host, rig.name)
    deadline = time.monotonic() + 30
    while counter(host, rig.name) <= first:
        assert time.monotonic() < deadline, "the guest does not run on the destination"
        time.sleep(0.1)
    assert rig.pair.stray_qemus() == {}, "a QEMU runs without a domain"
    return first
