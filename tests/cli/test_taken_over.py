"""A ``migrate`` whose migration another coordinator took (``recover --steal``) says who
took it and how it ended, with that end's exit code (issue 23, finding 6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from migrator.journal.store import Journal
from migrator.states import State
from tests.conftest import ROOT, Hosts, run_cli


def _wait_for(db_url: str, state: State, proc: subprocess.Popen[str]) -> str:
    """The id of the one migration once it is in ``state``; a guard against a hang, not a
    timing check."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        with Journal.open(db_url) as journal:
            found = journal.list(limit=1)
        if found and found[0].state is state:
            return found[0].id
        time.sleep(0.05)
    pytest.fail(f"the migration never reached {state} (migrate exited {proc.poll()})")


def test_migrate_names_who_took_its_migration_and_its_end(db_url: str, hosts: Hosts) -> None:
    hosts.dst.set_fault("finish", "slow", seconds=3600)  # the first Finish never returns
    env = {**os.environ, "MIGRATOR_DB": db_url}
    argv = [sys.executable, "-m", "migrator", "migrate", "vm1", "--src", hosts.src_uri,
            "--dst", hosts.dst_uri, "--json"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT)  # fmt: skip
    try:
        mid = _wait_for(db_url, State.FINISHING, proc)
        hosts.dst.clear_faults()
        stolen = run_cli("recover", "--steal", "--json", db=db_url)
        assert [r["result"] for r in json.loads(stolen.stdout)] == ["CONFIRMED"], stolen.stderr
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    shown = json.loads(run_cli("show", mid, "--json", db=db_url).stdout)
    thief = shown["owners"][-1]["owner"]
    assert err.splitlines() == [
        f"migrator: migration {mid} was taken over by {thief}, which ended it CONFIRMED"
    ]
    assert proc.returncode == 0
    assert json.loads(out)["state"] == "CONFIRMED"
    assert hosts.states("vm1") == ("absent", "running")
