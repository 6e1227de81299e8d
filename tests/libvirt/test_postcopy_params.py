"""Post-copy on the namespaced libvirt hosts (``ns_pair``), with the busy guest, and what
its steps carry: the post-copy bandwidth in Perform3's parameters (``bandwidth.postcopy``),
so that it holds from the switch on however early the switch comes; ``persist-dest``,
whose Finish3 starts before Perform3 returns and so takes no Perform3 cookie."""

from __future__ import annotations

import time

from migrator.drivers.libvirt.procedures import Proc
from tests.libvirt import guests
from tests.libvirt.nsrig import NsRig
from tests.libvirt.postcopy_rig import CAP, SWITCH, whole_and_advancing
from tests.libvirt.postcopy_rig import busy as busy  # the fixture
from tests.libvirt.rpctap import Gate

POSTCOPY_MIB = "4"


def _in_postcopy(rig: NsRig) -> bool:
    status, reason = guests.state(rig.pair.a, rig.name)  # type: ignore[arg-type]
    return status == "paused" and reason.startswith("post-copy")


def test_the_post_copy_bandwidth_holds_from_the_switch_on(busy: NsRig) -> None:
    """The failpoint switches at Perform's first progress report. The post-copy bandwidth
    the watch also sets (DOMAIN_MIGRATE_SET_MAX_SPEED with the post-copy flag) is held at
    the source's tap until the source is in post-copy: the source already reports 4 MiB/s
    there, from Perform3's ``bandwidth.postcopy``."""
    seen: list[str] = []

    def once_switched() -> None:
        deadline = time.monotonic() + 60
        while not _in_postcopy(busy):
            if time.monotonic() > deadline:
                seen.append("never in post-copy")
                return
            time.sleep(0.05)
        seen.append(busy.pair.a.virsh("migrate-getspeed", "--postcopy", busy.name).strip())

    gate = Gate()
    gate.before_call(Proc.DOMAIN_MIGRATE_SET_MAX_SPEED, once_switched)
    with busy.tapped(gate) as (src, dst):
        code, outcome = busy.migrate(
            "--bandwidth", CAP, "--flag", "postcopy", "--postcopy-bandwidth", POSTCOPY_MIB,
            src=src, dst=dst, env={"MIGRATOR_FAILPOINTS": SWITCH},
        )  # fmt: skip
    assert (code, outcome.get("state")) == (0, "CONFIRMED"), outcome
    assert seen == [POSTCOPY_MIB], seen
    whole_and_advancing(busy)


def test_persist_dest_with_post_copy_defines_the_guest_on_the_destination(busy: NsRig) -> None:
    """The transient guest switched by failpoint with ``--flag persist-dest``: it runs on
    the destination, persistent there (``virsh dominfo``, ``list --persistent``)."""
    code, outcome = busy.migrate(
        "--bandwidth", CAP, "--flag", "postcopy", "--flag", "persist-dest",
        env={"MIGRATOR_FAILPOINTS": SWITCH},
    )  # fmt: skip
    assert (code, outcome.get("state")) == (0, "CONFIRMED"), outcome
    b = busy.pair.b
    info = dict(
        (k.strip(), v.strip())
        for k, _, v in (line.partition(":") for line in b.virsh("dominfo", busy.name).splitlines())
    )
    assert info.get("Persistent") == "yes", info
    assert busy.name in b.virsh("list", "--persistent", "--name").split()
    whole_and_advancing(busy)
