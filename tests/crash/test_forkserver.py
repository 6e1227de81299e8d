"""The crash tests fork their commands from a pre-warmed server (``forkserver.py``); a
forked command must behave as the console script does, crash and recovery included."""

from __future__ import annotations

import json
import os
from pathlib import Path

from migrator import failpoints
from tests.conftest import run_cli
from tests.crash.harness import make_rig, sqlite_url

COMPARED = ("state", "action", "action_code", "claimed", "because", "result", "note")


def test_forked_commands_crash_and_recover_like_python_m_migrator(tmp_path: Path) -> None:
    forked = make_rig(sqlite_url(tmp_path / "forked"), tmp_path / "forked")
    real = make_rig(sqlite_url(tmp_path / "real"), tmp_path / "real")
    crash = {failpoints.ENV_VAR: "finish.called=crash"}

    by_fork = forked.cli(*forked.migrate_argv("--json"), env=crash)
    by_script = run_cli(*real.migrate_argv("--json"), db=real.db, env=crash)
    assert (by_fork.returncode, by_fork.stdout) == (by_script.returncode, by_script.stdout)
    assert by_fork.returncode == failpoints.CRASH_EXIT_CODE
    owner = forked.only_migration().owner or ""
    assert owner.split(":")[1] != str(os.getpid()), "the command ran in a process of its own"

    code, [row_fork] = forked.cli_json("recover")
    proc = run_cli("recover", "--json", db=real.db)
    [row_script] = json.loads(proc.stdout)
    assert code == proc.returncode == 0
    assert [row_fork[k] for k in COMPARED] == [row_script[k] for k in COMPARED]
    assert row_fork["result"] == "CONFIRMED"
    assert forked.hosts.states("vm1") == real.hosts.states("vm1") == ("absent", "running")


def test_forked_command_reports_a_usage_error_like_python_m_migrator(tmp_path: Path) -> None:
    rig = make_rig(sqlite_url(tmp_path), tmp_path)
    by_fork = rig.cli("resolve", "0000", "--running-on", "src")
    by_script = run_cli("resolve", "0000", "--running-on", "src", db=rig.db)
    assert (by_fork.returncode, by_fork.stdout, by_fork.stderr) == (
        by_script.returncode, by_script.stdout, by_script.stderr,
    )  # fmt: skip
    assert by_fork.returncode == 2
