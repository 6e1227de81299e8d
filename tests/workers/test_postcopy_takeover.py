"""A takeover in post-copy (docs/postcopy.md): the worker driving a switched migration is
killed mid post-copy, another worker takes it over and resumes it, forward only; on a
SQLite journal and on PostgreSQL."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from migrator.drivers.test.transfer import sha256_of
from migrator.journal.store import Journal
from migrator.states import State
from tests.crash.forkserver import SERVER
from tests.crash.harness import CLI_TIMEOUT, ROOT, backend_rig, check_invariants, cli_env

WAIT = 60.0


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_worker_killed_in_post_copy_is_taken_over_by_another(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    rig = backend_rig(backend, tmp_path, request, memory_mib=8)
    db = rig.db
    image = rig.hosts.src._read("vm1")["domains"]["vm1"]["image"]
    before = sha256_of(rig.hosts.src.dir / image)
    proc = rig.cli(
        "submit", "vm1", "--src", rig.hosts.src_uri, "--dst", rig.hosts.dst_uri, "--live",
        "--flag", "postcopy", "--bandwidth", "16",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    worker = ["worker", "--lease", "1", "--poll", "0.1", "--quiet"]
    crashing = {"MIGRATOR_FAILPOINTS": "perform.underway=postcopy,postcopy.underway=crash"}
    first = SERVER.spawn(worker, env=cli_env(db, crashing), cwd=ROOT)
    died = SERVER.wait(first, CLI_TIMEOUT)
    assert died.returncode == 137, died.stderr
    [m] = rig.migrations()
    assert m.state is State.POSTCOPY_ACTIVE
    crashed_owner = m.owner

    second = SERVER.spawn(worker, env=cli_env(db), cwd=ROOT)
    try:
        deadline = time.monotonic() + WAIT
        while rig.only_migration().state is not State.CONFIRMED:
            assert time.monotonic() < deadline, rig.only_migration()
            time.sleep(0.05)
    finally:
        os.kill(second.pid, signal.SIGTERM)  # a graceful stop: it has nothing left
        stopped = SERVER.wait(second, CLI_TIMEOUT)
    assert stopped.returncode == 0, stopped.stderr
    view = rig.view(m.id)
    check_invariants(view, rig.hosts)
    recovery = [e for e in view["events"] if e["kind"] == "recovery"]
    assert recovery and recovery[0]["detail"]["previous_owner"] == crashed_owner
    assert recovery[0]["coordinator"] != crashed_owner
    assert not [e for e in view["events"] if e["cancelled"]]
    dst_image = rig.hosts.dst._read("vm1")["domains"]["vm1"]["image"]
    assert sha256_of(rig.hosts.dst.dir / dst_image) == before
    with Journal.open(db) as journal:
        assert journal.get(m.id).state is State.CONFIRMED
