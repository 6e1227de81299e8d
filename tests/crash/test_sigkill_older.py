"""SIGKILL at random instants with protocols v2 and v1, then ``recover``.

As ``test_sigkill_soak.py`` for v3: a ``migrator migrate --protocol N`` process on fresh
hosts, slow hooks and a capped transfer, killed after a delay drawn over the migration's
expected length, then ``recover`` in a new process. With hosts that answer, no crash may
lose the domain even with v2 and v1: it ends on exactly one host, in the state that says
which, and the journal replays consistently. Seeded like the v3 soak;
``MIGRATOR_SOAK_KILLS=N`` runs N kills per protocol (default 6).
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from tests.conftest import assert_replays_consistently
from tests.crash.forkserver import SERVER
from tests.crash.harness import ACTIVE, CLI_TIMEOUT, ROOT, cli_env, make_rig, sqlite_url

SEED = int(os.environ.get("MIGRATOR_SOAK_SEED", "20250611"))
KILLS = int(os.environ.get("MIGRATOR_SOAK_KILLS", "12")) // 2
CASES = [
    pytest.param(protocol, i, id=f"v{protocol}-kill-{i:03d}")
    for protocol in (2, 1)
    for i in range(KILLS)
]
MEMORY_MIB = 8
SLOW_HOOKS = {
    2: (("src", "dump_xml"), ("dst", "prepare2"), ("dst", "finish2")),
    1: (("dst", "prepare1"), ("dst", "finish1")),
}
OVERHEAD = 0.25
WHERE = {"CONFIRMED": "dst", "ROLLED_BACK": "src", "FAILED": "src"}


@pytest.mark.parametrize(("protocol", "kill"), CASES)
def test_sigkill_with_an_older_protocol_never_loses_the_domain(
    protocol: int, kill: int, tmp_path: Path
) -> None:
    rng = random.Random(f"{SEED}:v{protocol}:{kill}")
    db = sqlite_url(tmp_path)
    domain = f"vm-{kill}-{rng.randrange(16**6):06x}"
    rig = make_rig(db, tmp_path, domain=domain, memory_mib=MEMORY_MIB)
    total = OVERHEAD
    for host, step in SLOW_HOOKS[protocol]:
        if rng.random() < 0.7:
            seconds = round(rng.uniform(0.1, 0.3), 3)
            (rig.hosts.src if host == "src" else rig.hosts.dst).set_fault(
                step, "slow", seconds=seconds
            )
            total += seconds
    bandwidth = rng.choice([24, 28, 32])
    total += MEMORY_MIB / bandwidth
    delay = rng.uniform(0, total)
    argv = rig.migrate_argv("--protocol", str(protocol), "--bandwidth", str(bandwidth))
    child = SERVER.spawn(argv, env=cli_env(db), cwd=ROOT)
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
    print(f"killed after {delay:.3f} s of ~{total:.3f} s, in {crashed.state}")
    code, done = rig.cli_json("recover")
    assert code == 0, done
    m = rig.view(crashed.id)
    assert m["state"] in WHERE, (m["state"], m["reason"])
    src, dst = rig.hosts.states(domain)
    assert (src in ACTIVE) != (dst in ACTIVE), f"the domain runs on exactly one host: {src, dst}"
    assert WHERE[m["state"]] == ("src" if src in ACTIVE else "dst"), (m["state"], src, dst)
    assert rig.cli_json("recover") == (0, [])
    assert_replays_consistently(db)
