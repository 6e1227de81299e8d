"""``migrator migrate`` between two real libvirt hosts over ``qemu+tcp://``, ``qemu+tls://``
and ``qemu+ssh://`` (the namespaced system daemons of ``netns.py``): guests that arrive, as
they left."""

from __future__ import annotations

from pathlib import Path

from migrator.drivers import payload
from migrator.states import Step
from tests.libvirt import guests
from tests.libvirt.nsrig import NsRig

MIB = 1024 * 1024
STEPS = [Step.BEGIN, Step.PREPARE, Step.PERFORM, Step.FINISH, Step.CONFIRM]


def test_a_running_guest_moves_and_runs_on_the_destination_only(ns_rig: NsRig, db_url: str) -> None:
    rig = NsRig(ns_rig.pair, db_url, ns_rig.name, ns_rig.transport)  # SQLite and PostgreSQL
    code, outcome = rig.migrate()
    assert (code, outcome["state"]) == (0, "CONFIRMED"), outcome
    assert guests.state(rig.pair.b, rig.name) == ("running", "migrated")  # type: ignore[arg-type]
    events = rig.history(outcome["id"])
    assert [e.step for e in events if e.kind == "ok"] == STEPS
    rig.settled(rig.migrations()[0])


def test_a_paused_guest_stays_paused_on_the_destination(ns_rig: NsRig) -> None:
    ns_rig.pair.a.virsh("suspend", ns_rig.name)
    code, outcome = ns_rig.migrate()
    assert (code, outcome["state"]) == (0, "CONFIRMED"), outcome
    assert ns_rig.states() == ("absent", "paused")
    ns_rig.settled(ns_rig.migrations()[0], paused=True)


def test_flag_paused_leaves_a_running_guest_paused_on_the_destination(ns_rig: NsRig) -> None:
    code, outcome = ns_rig.migrate("--flag", "paused")
    assert (code, outcome["state"]) == (0, "CONFIRMED"), outcome
    assert ns_rig.states() == ("absent", "paused")
    ns_rig.settled(ns_rig.migrations()[0], paused=True)


def test_dname_names_the_guest_on_the_destination(ns_rig: NsRig) -> None:
    dname = guests.unique_name("renamed")
    try:
        code, outcome = ns_rig.migrate("--dname", dname)
        assert (code, outcome["state"]) == (0, "CONFIRMED"), outcome
        assert ns_rig.states(dname) == ("absent", "running")
        assert ns_rig.states()[1] == "absent"
        ns_rig.settled(ns_rig.migrations()[0], dname=dname)
    finally:
        ns_rig.pair.b.virsh("destroy", dname, check=False)


def _pattern_rig(rig: NsRig, touch_mib: int, memory_mib: int) -> payload.Pattern:
    """Replace the rig's guest by a fresh one that wrote ``touch_mib`` MiB of pattern."""
    pattern = payload.Pattern(touch_mib=touch_mib, seed=0x6D696772)
    a = rig.pair.a
    guests.destroy(a, rig.name)  # type: ignore[arg-type]
    guests.create_pattern_guest(a, Path(rig.pair.root), rig.name, pattern, memory_mib)  # type: ignore[arg-type]
    return pattern


def test_the_guest_memory_is_the_same_after_the_migration(ns_rig: NsRig) -> None:
    rig, a, b = ns_rig, ns_rig.pair.a, ns_rig.pair.b
    pattern = _pattern_rig(rig, touch_mib=32, memory_mib=64)
    before = guests.read_memory(a, rig.name, 0, 64 * MIB)  # type: ignore[arg-type]
    assert payload.check_region(before[pattern.start : pattern.end], pattern) == 0

    code, outcome = rig.migrate()

    assert (code, outcome["state"]) == (0, "CONFIRMED"), outcome
    after = guests.read_memory(b, rig.name, 0, 64 * MIB)  # type: ignore[arg-type]
    assert after[pattern.start : pattern.end] == before[pattern.start : pattern.end]
    assert after == before, "the halted guest's RAM outside the pattern changed too"
    assert guests.marker_set(b, rig.name)  # type: ignore[arg-type]
    rig.settled(rig.migrations()[0])


def test_a_bandwidth_cap_is_kept_and_seen_in_the_progress(ns_rig: NsRig) -> None:
    rig = ns_rig
    _pattern_rig(rig, touch_mib=24, memory_mib=64)
    code, outcome = rig.migrate("--bandwidth", "8")
    assert (code, outcome["state"]) == (0, "CONFIRMED"), outcome
    [perform] = [e for e in rig.history(outcome["id"]) if e.step is Step.PERFORM and e.kind == "ok"]
    assert perform.detail is not None
    assert perform.duration is not None and perform.duration >= 2.0  # 24 MiB at 8 MiB/s
    assert 0 < int(perform.detail["memory_bps"]) <= 8 * MIB * 1.25
    progress = rig.migrations()[0].progress
    assert progress is not None and progress["transferred"] >= 24 * MIB, progress
    rig.settled(rig.migrations()[0])
