"""SIGKILL at random instants: a coordinator killed anywhere, then ``recover``.

Each kill starts ``migrator migrate`` in a new process on fresh hosts with a fresh domain
(8 MiB), slow hooks (0.1-0.3 s on some of Begin, Prepare, Finish and Confirm) and a
bandwidth cap that makes Perform take ~0.3 s, kills it with SIGKILL after a delay drawn
uniformly over the migration's expected length (so some kills land before the journal has
a row, some after the migration ended), then runs ``recover --dry-run`` and ``recover`` in
new processes and checks the invariants of ``harness.py``.

Seeded: kill ``i`` on backend ``b`` draws from ``random.Random(f"{SEED}:{b}:{i}")``, so a
failure names the case to repeat. ``MIGRATOR_SOAK_KILLS=N`` runs N kills on SQLite and N/2
on PostgreSQL (default 12 and 6); the full soak is ``MIGRATOR_SOAK_KILLS=200``.
``MIGRATOR_SOAK_SEED`` changes the seed.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from migrator.journal.store import Journal
from migrator.states import State
from tests.conftest import assert_replays_consistently
from tests.crash.forkserver import SERVER
from tests.crash.harness import (
    ACTIVE,
    CLI_TIMEOUT,
    ROOT,
    TERMINAL,
    check_invariants,
    check_recovered_by_another,
    cli_env,
    make_rig,
    sqlite_url,
)

SEED = int(os.environ.get("MIGRATOR_SOAK_SEED", "20250611"))
KILLS = int(os.environ.get("MIGRATOR_SOAK_KILLS", "12"))
CASES = [pytest.param("sqlite", i, id=f"sqlite-kill-{i:03d}") for i in range(KILLS)] + [
    pytest.param("postgres", i, id=f"postgres-kill-{i:03d}") for i in range(KILLS // 2)
]

MEMORY_MIB = 8
SLOW_HOOKS = (("src", "begin"), ("dst", "prepare"), ("dst", "finish"), ("src", "confirm"))
OVERHEAD = 0.25
"""Seconds a migration takes beyond its slow hooks and its transfer (fork, journal, fsync)."""

# Once the transfer completed, recovery goes forward; these states mean it had.
FORWARD = {State.PERFORMED, State.FINISHING, State.FINISHED, State.CONFIRMING, State.CONFIRMED}


@pytest.mark.parametrize(("backend", "kill"), CASES)
def test_sigkill_at_a_random_instant_is_recovered_to_a_safe_end(
    backend: str, kill: int, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    rng = random.Random(f"{SEED}:{backend}:{kill}")
    if backend == "sqlite":
        db = sqlite_url(tmp_path)
    else:
        db = request.getfixturevalue("pg_url")
        Journal.open(db, upgrade=True).close()
    domain = f"vm-{kill}-{rng.randrange(16**6):06x}"
    rig = make_rig(db, tmp_path, domain=domain, memory_mib=MEMORY_MIB)
    total = OVERHEAD
    for host, step in SLOW_HOOKS:
        if rng.random() < 0.7:
            seconds = round(rng.uniform(0.1, 0.3), 3)
            (rig.hosts.src if host == "src" else rig.hosts.dst).set_fault(
                step, "slow", seconds=seconds
            )
            total += seconds
    bandwidth = rng.choice([24, 28, 32])  # MiB/s: 8 MiB in 0.25-0.33 s
    total += MEMORY_MIB / bandwidth
    extra = ["--live"] if rng.random() < 0.5 else []
    delay = rng.uniform(0, total)

    child = SERVER.spawn(
        rig.migrate_argv("--bandwidth", str(bandwidth), "--json", *extra),
        env=cli_env(db),
        cwd=ROOT,
    )
    try:
        time.sleep(delay)
    finally:
        SERVER.kill(child)
        killed = SERVER.wait(child, CLI_TIMEOUT)  # reaped: the owner is provably gone
    assert killed.returncode in (-9, 0), (killed.returncode, killed.stderr)

    migrations = rig.migrations()
    if not migrations:  # killed before the journal had a row: nothing happened anywhere
        assert rig.hosts.states(domain) == ("running", "absent")
        assert rig.cli_json("recover") == (0, [])
        return
    [crashed] = migrations
    print(f"killed after {delay:.3f} s of ~{total:.3f} s, in {crashed.state}")  # shown with -rP
    transferred = crashed.state in FORWARD or (
        crashed.state is State.PERFORMING
        and rig.hosts.src.probe(domain).transfers.get(crashed.id) == "completed"
    )

    before = rig.snapshot()
    code, planned = rig.cli_json("recover", "--dry-run")
    assert code == 0
    assert rig.snapshot() == before, "recover --dry-run changed the journal or a host"
    code, done = rig.cli_json("recover")
    assert code == 0, done
    m = rig.view(crashed.id)
    if crashed.state.value in TERMINAL:
        assert (planned, done) == ([], [])
    else:
        [plan], [row] = planned, done
        assert row["action"] == plan["action"]
        assert (row["claimed"], row["because"]) == (True, "owner process is gone")
        assert row["result"] == m["state"]
        check_recovered_by_another(m, crashed.owner or "")

    # Only slow hooks here, every host answers its probes: IN_DOUBT is never legitimate.
    check_invariants(m, rig.hosts)
    src, dst = rig.hosts.states(domain)
    assert (src in ACTIVE) != (dst in ACTIVE), "the domain runs on exactly one host"
    if crashed.state is State.NEW:
        assert m["state"] == "FAILED"  # abandoned before Begin
    else:
        assert m["state"] == ("CONFIRMED" if transferred else "ROLLED_BACK"), m["reason"]
    assert rig.cli_json("recover") == (0, [])
    assert_replays_consistently(db)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sigkill_mid_copy_then_recover_leaves_no_partial_copy(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Killed while its copy is half-way (the temporary file on the destination), then
    ``recover``: ROLLED_BACK, and the destination holds no file of the migration."""
    if backend == "sqlite":
        db = sqlite_url(tmp_path)
    else:
        db = request.getfixturevalue("pg_url")
        Journal.open(db, upgrade=True).close()
    rig = make_rig(db, tmp_path, memory_mib=MEMORY_MIB)
    child = SERVER.spawn(rig.migrate_argv("--bandwidth", "4", "--json"), env=cli_env(db), cwd=ROOT)
    images = rig.hosts.dst.dir / "images"
    deadline = time.monotonic() + CLI_TIMEOUT
    try:
        while not (images.is_dir() and any(p.suffix == ".tmp" for p in images.iterdir())):
            assert time.monotonic() < deadline, "the copy never started"
            time.sleep(0.01)
    finally:
        SERVER.kill(child)
        assert SERVER.wait(child, CLI_TIMEOUT).returncode == -9
    assert any(p.suffix == ".tmp" for p in images.iterdir())  # what the kill left
    code, done = rig.cli_json("recover")
    assert code == 0, done
    m = rig.view(rig.only_migration().id)
    assert m["state"] == "ROLLED_BACK"
    check_invariants(m, rig.hosts)  # every host's files: its domains' images alone
    assert list(images.iterdir()) == []
