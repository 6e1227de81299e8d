"""Policies and runtime requests from the command line: a request journaled by another
process is applied by the one that drives the migration; after that one is SIGKILLed,
``recover`` ends the migration and ``show`` says what became of the request."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from migrator.drivers.test import TestDriver
from migrator.journal.store import Journal
from migrator.states import State
from tests.conftest import ROOT, Hosts, run_cli


@pytest.fixture
def busy(tmp_path: Path) -> Hosts:
    """``vm1`` (4 MiB) dirties 16 MiB/s; at 8 MiB/s pre-copy never converges alone."""
    src = TestDriver(f"test://{tmp_path / 'host-a'}")
    dst = TestDriver(f"test://{tmp_path / 'host-b'}")
    src.define("vm1", memory_mib=4, dirty_mib_s=16)
    return Hosts(src, dst)


def _migrate(db_url: str, hosts: Hosts, *extra: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "migrator", "migrate", "vm1", "--src", hosts.src_uri,
            "--dst", hosts.dst_uri, "--live", "--bandwidth", "8", "--json", *extra]  # fmt: skip
    env = {**os.environ, "MIGRATOR_DB": db_url}
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )


def _in_perform(db_url: str, proc: subprocess.Popen[str]) -> str:
    """The id of the migration once it is in Perform (a guard against a hang)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        with Journal.open(db_url) as journal:
            found = journal.list(limit=1)
        if found and found[0].state is State.PERFORMING:
            return found[0].id
        time.sleep(0.05)
    pytest.fail(f"the migration never reached PERFORMING (migrate exited {proc.poll()})")


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_a_request_from_another_process_is_applied_by_the_running_migration(
    db_url: str, busy: Hosts
) -> None:
    proc = _migrate(db_url, busy)
    try:
        mid = _in_perform(db_url, proc)
        asked = run_cli("set-downtime", mid[:8], "100000", "--json", db=db_url)
        assert asked.returncode == 0, asked.stderr
        out, err = proc.communicate(timeout=120)
    finally:
        _stop(proc)
    assert proc.returncode == 0, err
    assert json.loads(out)["state"] == "CONFIRMED"
    shown = json.loads(run_cli("show", mid, "--json", db=db_url).stdout)
    [request] = shown["requests"]
    assert request["id"] == json.loads(asked.stdout)["id"]
    assert (request["kind"], request["value"], request["outcome"]) == (
        "downtime",
        100000,
        "applied",
    )
    assert request["applied_at"] >= request["requested_at"]
    applied = [e for e in shown["events"] if e["kind"] == "request"]
    assert [e["detail"]["request"] for e in applied] == [request["id"]]
    text = run_cli("show", mid, db=db_url).stdout
    assert f"request      {request['id']} downtime 100000: requested" in text
    assert busy.states("vm1") == ("absent", "running")


def test_a_request_left_by_a_killed_coordinator_is_stamped_when_recover_ends_it(
    db_url: str, busy: Hosts
) -> None:
    proc = _migrate(db_url, busy, "--stall-iterations", "1000")
    try:
        mid = _in_perform(db_url, proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        asked = run_cli("set-speed", mid, "64", db=db_url)  # still in Perform, as journaled
        assert asked.returncode == 0, asked.stderr
        assert asked.stdout.startswith("request ")
        recovered = run_cli("recover", "--json", db=db_url)
    finally:
        _stop(proc)
    assert [r["result"] for r in json.loads(recovered.stdout)] == ["ROLLED_BACK"]
    shown = json.loads(run_cli("show", mid, "--json", db=db_url).stdout)
    [request] = shown["requests"]
    assert request["outcome"] == "not applied: Perform had ended (the migration ended ROLLED_BACK)"
    assert request["applied_at"] is not None
    assert shown["policy"] == {"stall_iterations": 1000}  # journaled for whoever takes over
    assert busy.states("vm1") == ("running", "absent")


def test_requests_for_a_migration_not_in_perform_are_refused_in_one_line(
    db_url: str, hosts: Hosts
) -> None:
    done = run_cli("migrate", "vm1", "--src", hosts.src_uri, "--dst", hosts.dst_uri, "--json",
                   db=db_url)  # fmt: skip
    mid = json.loads(done.stdout)["id"]
    for argv in (("set-downtime", mid, "500"), ("set-speed", mid, "5"), ("postcopy", mid)):
        refused = run_cli(*argv, db=db_url)
        assert refused.returncode == 2
        assert refused.stderr.splitlines() == [
            f"migrator: error: migration {mid} is CONFIRMED, not in Perform: a"
            f" {'speed' if argv[0] == 'set-speed' else argv[0].removeprefix('set-')} request"
            " applies only while Perform (protocol v3) runs"
        ]
    unknown = run_cli("set-downtime", "0000", "500", db=db_url)
    assert (unknown.returncode, unknown.stderr) == (
        2,
        "migrator: error: no migration matches '0000'\n",
    )
    zero = run_cli("set-speed", mid, "0", db=db_url)
    assert zero.returncode == 2 and len(zero.stderr.splitlines()) == 1
    with Journal.open(db_url) as journal:
        assert journal.requests(mid) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ("--stall-iterations", "3", "--on-stall", "postcopy"),
            "post-copy is not available for this migration",
        ),
        (("--downtime-steps", "3"), "options: downtime_steps needs max_downtime_ms"),
        (
            ("--parallel-connections", "2", "--flag", "postcopy"),
            "parallel connections are refused with post-copy: QEMU cannot switch a multifd",
        ),
        (
            ("--parallel-connections", "2", "--flag", "tunnelled"),
            "parallel connections are refused with tunnelled",
        ),
        (("--max-downtime", "0"), "--max-downtime must be >= 1, not 0"),
    ],
)
def test_a_policy_that_cannot_be_honoured_is_refused_before_begin(
    db_url: str, hosts: Hosts, options: tuple[str, ...], message: str
) -> None:
    refused = run_cli("migrate", "vm1", "--src", hosts.src_uri, "--dst", hosts.dst_uri, *options,
                      db=db_url)  # fmt: skip
    assert refused.returncode == 2
    assert len(refused.stderr.splitlines()) == 1 and message in refused.stderr, refused.stderr
    with Journal.open(db_url) as journal:
        assert journal.list() == []
    assert hosts.states("vm1") == ("running", "absent")


def test_a_policy_file_gives_named_defaults_that_options_override(
    db_url: str, busy: Hosts, tmp_path: Path
) -> None:
    path = tmp_path / "policies.toml"
    path.write_text(
        '[defaults]\naction = "abort"\n\n'
        f'[policy.busy]\ndomain = "vm*"\nsrc = "{busy.src_uri}"\nstall_iterations = 2\n'
        "max_downtime_ms = 100\n"
    )
    done = run_cli("migrate", "vm1", "--src", busy.src_uri, "--dst", busy.dst_uri, "--live",
                   "--bandwidth", "8", "--policy-file", str(path), "--on-stall", "pause", "--json",
                   db=db_url)  # fmt: skip
    assert done.returncode == 0, done.stderr
    shown = json.loads(run_cli("show", json.loads(done.stdout)["id"], "--json", db=db_url).stdout)
    assert shown["policy"] == {"action": "pause", "stall_iterations": 2, "max_downtime_ms": 100}
    kinds = [e["kind"] for e in shown["events"]]
    assert "stalled" in kinds and "action" in kinds


def test_show_prints_the_job_statistics_of_the_last_sample() -> None:
    from migrator.cli.migrate import job_text
    from migrator.cli.render import progress_text
    from migrator.records import Progress

    mib = 1024 * 1024
    sample = Progress(64 * mib, 12 * mib, 3 * mib, passes=4, dirty_rate=16 * mib,
                      expected_downtime_ms=375, throttle_pct=30, postcopy_requests=0)  # fmt: skip
    assert progress_text(sample.as_dict()) == (
        "12.0 / 64.0 MiB, pass 4, remaining 3.0 MiB, dirty 16.0 MiB/s, expected downtime"
        " 375 ms, throttle 30 %, post-copy requests 0"
    )
    assert job_text(sample) == "perform pass 4, dirty 16.0 MiB/s, downtime ~375 ms, throttle 30 %"
    assert (
        progress_text(Progress(2 * mib, mib, mib).as_dict())
        == "1.0 / 2.0 MiB, pass 1, remaining 1.0 MiB"
    )
    assert progress_text(Progress(2 * mib, 2 * mib, 0).as_dict()) == "2.0 / 2.0 MiB, pass 1"


def test_wait_follows_a_request_to_its_outcome(db_url: str, busy: Hosts) -> None:
    """``postcopy --wait`` where post-copy is not available: refused, exit 1; then
    ``set-downtime --wait``: applied, exit 0, and the migration completes."""
    proc = _migrate(db_url, busy)
    try:
        mid = _in_perform(db_url, proc)
        refused = run_cli("postcopy", mid, "--wait", "30", db=db_url)
        applied = run_cli("set-downtime", mid, "100000", "--wait", "30", db=db_url)
        out, err = proc.communicate(timeout=120)
    finally:
        _stop(proc)
    assert (refused.returncode, refused.stdout) == (
        1, "request 1 (postcopy): refused: post-copy is not available for this migration\n"
    )  # fmt: skip
    assert (applied.returncode, applied.stdout) == (0, "request 2 (downtime 100000): applied\n")
    assert json.loads(out)["state"] == "CONFIRMED", err
    shown = json.loads(run_cli("show", mid, "--json", db=db_url).stdout)
    outcomes = [
        (e["detail"]["setting"], e["detail"]["outcome"])
        for e in shown["events"]
        if e["kind"] == "request"
    ]
    assert outcomes == [
        ("postcopy", "refused: post-copy is not available for this migration"),
        ("downtime", "applied"),
    ]
