"""``migrator migrate`` between two real libvirt daemons: guests that arrive, as they left."""

from __future__ import annotations

from migrator.drivers import payload
from migrator.states import Step
from tests.libvirt import guests
from tests.libvirt.conftest import Guest
from tests.libvirt.rig import LibvirtRig

MIB = 1024 * 1024
STEPS = [Step.BEGIN, Step.PREPARE, Step.PERFORM, Step.FINISH, Step.CONFIRM]


def test_a_running_guest_moves_and_runs_on_the_destination_only(
    libvirt_driver: None, guest: Guest, db_url: str
) -> None:
    rig = LibvirtRig(guest.pair, db_url, guest.name)
    code, outcome = rig.migrate()
    assert (code, outcome["state"]) == (0, "CONFIRMED"), outcome
    assert guest.states() == (("absent", ""), ("running", "migrated"))
    events = rig.history(outcome["id"])
    assert [e.step for e in events if e.kind == "ok"] == STEPS
    rig.settled()


def test_a_paused_guest_stays_paused_on_the_destination(rig: LibvirtRig) -> None:
    rig.pair.src.virsh("suspend", rig.name)
    code, outcome = rig.migrate()
    assert (code, outcome["state"]) == (0, "CONFIRMED"), outcome
    assert rig.states() == ("absent", "paused")
    rig.settled(paused=True)


def test_flag_paused_leaves_a_running_guest_paused_on_the_destination(rig: LibvirtRig) -> None:
    code, outcome = rig.migrate("--flag", "paused")
    assert (code, outcome["state"]) == (0, "CONFIRMED"), outcome
    assert rig.states() == ("absent", "paused")
    rig.settled(paused=True)


def test_dname_names_the_guest_on_the_destination(rig: LibvirtRig, guest: Guest) -> None:
    dname = guests.unique_name("renamed")
    try:
        code, outcome = rig.migrate("--dname", dname)
        assert (code, outcome["state"]) == (0, "CONFIRMED"), outcome
        assert rig.states(dname) == ("absent", "running")
        assert guests.state(rig.pair.dst, rig.name)[0] == "absent"
        rig.settled(dname=dname)
    finally:
        guest.cleanup(dname)


def _pattern_rig(rig: LibvirtRig, touch_mib: int, memory_mib: int) -> payload.Pattern:
    """Replace the rig's guest by a fresh one that wrote ``touch_mib`` MiB of pattern."""
    pattern = payload.Pattern(touch_mib=touch_mib, seed=0x6D696772)
    guests.destroy(rig.pair.src, rig.name)
    guests.create_pattern_guest(rig.pair.src, rig.pair.root, rig.name, pattern, memory_mib)
    return pattern


def test_the_guest_memory_is_the_same_after_the_migration(rig: LibvirtRig) -> None:
    pattern = _pattern_rig(rig, touch_mib=32, memory_mib=64)
    before = guests.read_memory(rig.pair.src, rig.name, 0, 64 * MIB)
    assert payload.check_region(before[pattern.start : pattern.end], pattern) == 0

    code, outcome = rig.migrate()

    assert (code, outcome["state"]) == (0, "CONFIRMED"), outcome
    after = guests.read_memory(rig.pair.dst, rig.name, 0, 64 * MIB)
    assert after[pattern.start : pattern.end] == before[pattern.start : pattern.end]
    assert after == before, "the halted guest's RAM outside the pattern changed too"
    assert guests.marker_set(rig.pair.dst, rig.name)
    rig.settled()


def test_a_bandwidth_cap_is_kept_and_seen_in_the_progress(rig: LibvirtRig) -> None:
    _pattern_rig(rig, touch_mib=24, memory_mib=64)
    code, outcome = rig.migrate("--bandwidth", "8")
    assert (code, outcome["state"]) == (0, "CONFIRMED"), outcome
    [perform] = [e for e in rig.history(outcome["id"]) if e.step is Step.PERFORM and e.kind == "ok"]
    assert perform.detail is not None
    assert perform.duration is not None and perform.duration >= 2.0  # 24 MiB at 8 MiB/s
    assert 0 < int(perform.detail["memory_bps"]) <= 8 * MIB * 1.25
    progress = rig.only().progress
    assert progress is not None and progress["transferred"] >= 24 * MIB, progress
    rig.settled()
