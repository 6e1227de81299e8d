"""SIGKILL at random instants of a post-copy migration, then ``recover`` (docs/postcopy.md).

Each kill starts ``migrator migrate --flag postcopy`` in a new process on fresh hosts
(8 MiB at 16 MiB/s, switched to post-copy as soon as the transfer is underway, the
``perform.underway=postcopy`` failpoint), kills it with SIGKILL after a seeded random
delay over the migration's length, recovers it in new processes and checks the invariants
of ``harness.py``: the guest runs on exactly one host, and once the switch's intent was
journaled, the migration ended CONFIRMED with the destination's image whole, nothing
cancelled. ``MIGRATOR_POSTCOPY_SOAK_KILLS=N`` (default 20) and ``MIGRATOR_SOAK_SEED``.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from migrator import failpoints
from migrator.engine.run import switched
from migrator.journal.store import Journal
from tests.conftest import assert_replays_consistently
from tests.crash.forkserver import SERVER
from tests.crash.harness import (
    ACTIVE,
    CLI_TIMEOUT,
    ROOT,
    check_invariants,
    cli_env,
    make_rig,
    sqlite_url,
)
from tests.crash.test_postcopy_crash import ARGV, MEMORY_MIB, SWITCH, check_forward_only, checksum

SEED = int(os.environ.get("MIGRATOR_SOAK_SEED", "20261207"))
KILLS = int(os.environ.get("MIGRATOR_POSTCOPY_SOAK_KILLS", "20"))
LENGTH = 0.9
"""Seconds a migration takes here: its 0.5 s transfer, the steps, fork and journal."""


@pytest.mark.parametrize("kill", range(KILLS), ids=lambda k: f"kill-{k:03d}")
def test_sigkill_during_post_copy_never_loses_the_guest(kill: int, tmp_path: Path) -> None:
    rng = random.Random(f"{SEED}:postcopy:{kill}")
    db = sqlite_url(tmp_path)
    domain = f"vm-{kill}-{rng.randrange(16**6):06x}"
    rig = make_rig(db, tmp_path, domain=domain, memory_mib=MEMORY_MIB)
    before = checksum(rig.hosts.src, domain)
    delay = rng.uniform(0.05, LENGTH)
    child = SERVER.spawn(
        rig.migrate_argv(*ARGV, "--json"),
        env=cli_env(db, {failpoints.ENV_VAR: SWITCH}),
        cwd=ROOT,
    )
    try:
        time.sleep(delay)
    finally:
        SERVER.kill(child)
        killed = SERVER.wait(child, CLI_TIMEOUT)
    assert killed.returncode in (-9, 0), (killed.returncode, killed.stderr)
    migrations = rig.migrations()
    if not migrations:
        assert rig.hosts.states(domain) == ("running", "absent")
        return
    [crashed] = migrations
    with Journal.open(db) as journal:
        with_switch = switched(journal.history(crashed.id))
    print(f"killed after {delay:.3f} s in {crashed.state}, switched: {with_switch}")
    code, _ = rig.cli_json("recover")
    assert code == 0
    m = rig.view(crashed.id)
    check_invariants(m, rig.hosts)
    src, dst = rig.hosts.states(domain)
    assert (src in ACTIVE) != (dst in ACTIVE), "the guest runs on exactly one host"
    if with_switch:
        assert m["state"] == "CONFIRMED", m["reason"]
        check_forward_only(m)
    if m["state"] == "CONFIRMED":
        assert checksum(rig.hosts.dst, domain) == before, "the guest's memory changed"
    assert rig.cli_json("recover") == (0, [])
    assert_replays_consistently(db)
