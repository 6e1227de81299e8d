"""A QMP host under the legacy ``qemu:///ABS/DIR`` name, and the flags QMP hosts refuse.

Journals written before ``qemu://`` meant libvirt name QMP hosts ``qemu:///ABS/DIR``:
``recover``, ``show`` and ``replay`` still reach them, through the QMP driver.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from migrator.drivers.qmphost import QmpDriver
from migrator.flags import MigrateFlags, cli_name
from migrator.journal.store import Journal
from tests.conftest import run_cli
from tests.crash.harness import sqlite_url
from tests.qemu.rig import QemuRig
from tests.qemu.test_crash import MEMORY, TOUCH, cli, only, recover_and_check


@pytest.fixture
def db(tmp_path: Path) -> str:
    return sqlite_url(tmp_path / "journal")


def test_a_journal_naming_legacy_qemu_hosts_is_recovered_shown_and_replayed(
    qemu_root: Path, db: str
) -> None:
    a, b = f"qemu://{qemu_root / 'a'}", f"qemu://{qemu_root / 'b'}"
    rig = QemuRig(qemu_root, QmpDriver(a), QmpDriver(b))
    rig.src.define("vm1", memory_mib=MEMORY, touch_mib=TOUCH)
    before = rig.region(rig.src, "vm1")
    code, _ = cli(db, "migrate", "vm1", "--src", a, "--dst", b, "--live",
                  env={"MIGRATOR_FAILPOINTS": "perform.recorded=crash"})  # fmt: skip
    assert code == 137
    m = only(db)
    assert (m.src, m.dst) == (a, b), "the journal keeps the legacy URIs"
    shown = recover_and_check(rig, db, "CONFIRMED")  # replays the journal too
    assert (shown["src"], shown["dst"]) == (a, b)
    code, show = cli(db, "show", m.id, "--json")
    assert code == 0 and (show["src"], show["dst"]) == (a, b)
    assert rig.region(rig.dst, "vm1") == before


def test_a_flag_the_qmp_driver_does_not_honour_is_refused_before_begin(
    rig: QemuRig, db: str
) -> None:
    rig.src.define("vm1", memory_mib=MEMORY, touch_mib=TOUCH)
    pid = rig.src.pid_of("vm1")
    honoured = MigrateFlags.LIVE | MigrateFlags.PAUSED | MigrateFlags.POSTCOPY
    engine_refused = MigrateFlags.POSTCOPY_RESUME  # tests/cli/test_flags
    for flag in (f for f in MigrateFlags if f and not f & (honoured | engine_refused)):
        proc = run_cli(
            "migrate", "vm1", "--src", rig.src.uri, "--dst", rig.dst.uri, "--live",
            "--flag", cli_name(flag), db=db,
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        tunnelled = flag is MigrateFlags.TUNNELLED  # refused earlier: no host offers it
        expected = (
            "tunnelled"
            if tunnelled
            else f"migrator: error: flag {cli_name(flag)} is not"
            f" honoured by the qmp driver ({rig.src.uri}); it honours: live, paused, postcopy\n"
        )
        assert expected in proc.stderr and proc.stderr.count("\n") == 1
    with Journal.open(db) as journal:
        assert journal.list() == [], "nothing is journaled"
    assert rig.states("vm1") == ("running", "absent")
    assert rig.src.pid_of("vm1") == pid
