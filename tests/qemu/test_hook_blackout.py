"""A 5 s hook command does not lengthen the blackout of a live QEMU migration."""

from __future__ import annotations

from pathlib import Path

from migrator import Coordinator, MigrateFlags, State
from migrator.hooks import CommandHook
from migrator.journal.store import Journal
from tests.blackout import HOOK_SECONDS, gap, slow_hook
from tests.qemu.rig import QemuRig


def test_a_five_second_hook_command_does_not_lengthen_the_blackout(
    rig: QemuRig, tmp_path: Path
) -> None:
    """Two guests migrate live between qmp:/// hosts, the second with a hook command that
    sleeps 5 s on Perform's outcome and on Finish's intent: its Finish call still starts
    right after Perform's outcome, while the source is paused."""
    for name in ("vm1", "vm2"):
        rig.src.define(name, memory_mib=64, touch_mib=32)
    with Journal.open(f"sqlite:///{tmp_path / 'journal.db'}") as journal:
        plain = Coordinator(journal)
        hooked = Coordinator(journal, hooks=[CommandHook(slow_hook(tmp_path))])
        try:
            without = plain.migrate("vm1", src=rig.src, dst=rig.dst, flags=MigrateFlags.LIVE)
            m = hooked.migrate("vm2", src=rig.src, dst=rig.dst, flags=MigrateFlags.LIVE)
        finally:
            plain.close()
            hooked.close()
        assert (without.state, m.state) == (State.CONFIRMED, State.CONFIRMED)
        base, slow = gap(journal, without.id), gap(journal, m.id)
    print(f"qemu: without hooks {base}, with a {HOOK_SECONDS} s hook {slow}")
    assert slow.outcome_to_intent < HOOK_SECONDS and slow.outcome_to_call < HOOK_SECONDS
    assert rig.states("vm2") == ("absent", "running")
