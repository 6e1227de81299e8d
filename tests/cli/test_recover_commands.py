"""``recover``, ``resolve`` and ``abort`` through the CLI, on SQLite and on PostgreSQL.

Every command runs as ``python -m migrator`` in a subprocess, as an operator would run it;
crashes come from failpoints (``crash`` in a subprocess, so the owner is provably gone, or
``raise`` in this process, so the owner is alive).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

import pytest

from migrator import failpoints
from migrator.engine.coordinator import Coordinator
from migrator.inspect import show
from migrator.journal.store import Journal
from migrator.records import Migration
from tests.conftest import ROOT, Hosts, host_files, run_cli, state_of

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_IN_DOUBT = 0, 1, 2, 3


# -- helpers ---------------------------------------------------------------------------------


def migrate(hosts: Hosts, db: str, *args: str, env: dict[str, str] | None = None) -> Any:
    return run_cli(
        "migrate", "vm1", "--src", hosts.src_uri, "--dst", hosts.dst_uri, *args, db=db, env=env
    )


def crash_in_subprocess(hosts: Hosts, db: str, failpoint: str) -> Migration:
    """``migrate`` killed at ``failpoint`` (exit 137): its owner process is gone."""
    proc = migrate(hosts, db, env={failpoints.ENV_VAR: f"{failpoint}=crash"})
    assert proc.returncode == failpoints.CRASH_EXIT_CODE, proc.stderr
    return only_migration(db)


def crash_in_this_process(hosts: Hosts, db: str, failpoint: str) -> Migration:
    """A migration left at ``failpoint`` by a coordinator whose process (this one) lives."""
    with Journal.open(db) as journal:
        c = Coordinator(
            journal,
            coordinator_id=f"{socket.gethostname()}:{os.getpid()}:x",
            failpoints=failpoints.Failpoints({failpoint: "raise"}),
        )
        try:
            with pytest.raises(failpoints.Crash):
                c.migrate("vm1", src=hosts.src, dst=hosts.dst)
        finally:
            c.close()
    return only_migration(db)


def only_migration(db: str) -> Migration:
    with Journal.open(db) as journal:
        [m] = journal.list()
    return m


def view(db: str, migration_id: str) -> dict[str, Any]:
    with Journal.open(db) as journal:
        return show(journal, migration_id)


def snapshot(db: str, hosts: Hosts) -> tuple[Any, ...]:
    with Journal.open(db) as journal:
        rows = [(m, journal.history(m.id)) for m in journal.list()]
    files = [host_files(h.dir) for h in (hosts.src, hosts.dst)]
    return rows, files


def recover_json(db: str, *args: str) -> tuple[int, list[dict[str, Any]]]:
    proc = run_cli("recover", "--json", *args, db=db)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def seqs_gapless(m: dict[str, Any]) -> bool:
    return [e["seq"] for e in m["events"]] == list(range(1, len(m["events"]) + 1))


def claims(m: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in m["events"] if e["kind"] == "recovery" and "previous_owner" in e["detail"]]


def in_doubt(hosts: Hosts, db: str) -> Migration:
    proc = migrate(hosts, db)
    assert proc.returncode == EXIT_IN_DOUBT, proc.stdout + proc.stderr
    m = only_migration(db)
    assert m.state.value == "IN_DOUBT"
    return m


# -- recover -----------------------------------------------------------------------------------


def test_recover_with_nothing_to_do_says_so_and_exits_0(db_url: str) -> None:
    proc = run_cli("recover", db=db_url)
    assert (proc.returncode, proc.stdout.strip(), proc.stderr) == (
        EXIT_OK,
        "nothing to recover",
        "",
    )


def test_recover_json_with_nothing_to_do_prints_an_empty_list(db_url: str) -> None:
    assert recover_json(db_url) == (EXIT_OK, [])


@pytest.mark.no_replay  # left in flight on purpose: replay would need outcomes never recorded
def test_recover_leaves_alone_a_migration_whose_owner_is_alive(db_url: str, hosts: Hosts) -> None:
    m = crash_in_this_process(hosts, db_url, "perform.recorded")
    before = snapshot(db_url, hosts)
    code, [row] = recover_json(db_url)
    assert code == EXIT_OK
    assert (row["id"], row["state"], row["claimed"], row["because"], row["result"]) == (
        m.id, "PERFORMED", False, None, None,
    )  # fmt: skip
    assert snapshot(db_url, hosts) == before
    text = run_cli("recover", db=db_url).stdout
    assert "owner alive: left alone (--steal takes it)" in text


def test_recover_steal_takes_a_migration_whose_owner_is_alive(db_url: str, hosts: Hosts) -> None:
    m = crash_in_this_process(hosts, db_url, "perform.recorded")
    code, [row] = recover_json(db_url, "--steal")
    assert code == EXIT_OK
    assert (row["claimed"], row["because"], row["result"]) == (
        True,
        "stolen (--steal)",
        "CONFIRMED",
    )
    after = view(db_url, m.id)
    [claim] = claims(after)
    assert claim["detail"]["previous_owner"] == m.owner
    assert claim["coordinator"] != m.owner
    assert after["fence"] == m.fence + 1
    assert hosts.states("vm1") == ("absent", "running")


def test_recover_by_lease_only_waits_for_the_lease_of_a_dead_owner(
    db_url: str, hosts: Hosts
) -> None:
    """The owner's process is gone, but ``--by-lease-only`` judges by the lease alone."""
    m = crash_in_subprocess(hosts, db_url, "perform.recorded")
    before = snapshot(db_url, hosts)
    code, [row] = recover_json(db_url, "--by-lease-only")
    assert code == EXIT_OK
    assert (row["claimed"], row["because"], row["result"]) == (False, None, None)
    assert snapshot(db_url, hosts) == before
    code, [row] = recover_json(db_url)
    assert (row["claimed"], row["because"], row["result"]) == (
        True,
        "owner process is gone",
        "CONFIRMED",
    )
    assert view(db_url, m.id)["fence"] == m.fence + 1


def test_two_recovers_at_once_claim_the_migration_exactly_once(db_url: str, hosts: Hosts) -> None:
    hosts.dst.set_fault("finish", "slow", seconds=0.5)  # the winner is still at it
    m = crash_in_subprocess(hosts, db_url, "perform.recorded")
    env = {k: v for k, v in os.environ.items() if k != failpoints.ENV_VAR}
    env["MIGRATOR_DB"] = db_url
    argv = [sys.executable, "-m", "migrator", "recover", "--json"]
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=env, cwd=ROOT)
        for _ in range(2)
    ]  # fmt: skip
    try:
        outs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [EXIT_OK, EXIT_OK], outs
    rows = [row for out, _ in outs for row in json.loads(out)]
    won = [r for r in rows if r["claimed"]]
    assert [(r["id"], r["result"]) for r in won] == [(m.id, "CONFIRMED")]
    for lost in (r for r in rows if not r["claimed"]):
        assert lost["result"] is None
        assert lost["note"] in (None, "claimed by another coordinator")
    after = view(db_url, m.id)
    assert seqs_gapless(after)
    assert len(claims(after)) == 1
    assert after["state"] == "CONFIRMED"
    assert hosts.states("vm1") == ("absent", "running")


@pytest.mark.no_replay  # it stays PERFORMING (the bug): replay would need outcomes never recorded
def test_recover_honours_an_abort_requested_before_the_crash(db_url: str, hosts: Hosts) -> None:
    # The transfer completed, then the coordinator died before committing Perform's
    # outcome; the operator's abort (accepted: PERFORMING) must still turn it back.
    m = crash_in_subprocess(hosts, db_url, "perform.called")
    assert m.state.value == "PERFORMING"
    proc = run_cli("abort", m.id[:8], db=db_url)
    assert proc.returncode == EXIT_OK, proc.stderr
    code, [row] = recover_json(db_url)
    assert (code, row["result"]) == (EXIT_OK, "ROLLED_BACK")
    assert hosts.states("vm1") == ("running", "absent")


# -- resolve -----------------------------------------------------------------------------------


def test_resolve_running_on_src_rolls_back_and_resumes_the_source(
    db_url: str, hosts: Hosts
) -> None:
    hosts.dst.set_fault("finish", "error")
    hosts.dst.set_fault("probe", "error")
    m = in_doubt(hosts, db_url)
    assert hosts.states("vm1") == ("paused", "incoming")
    hosts.dst.clear_faults()  # the operator reached the destination and found out
    proc = run_cli("resolve", m.id[:8], "--running-on", "src", "--json", db=db_url)
    out = json.loads(proc.stdout)
    assert (proc.returncode, out["state"]) == (EXIT_FAILED, "ROLLED_BACK")
    assert out["reason"] == "resolved by an operator: the domain runs on src"
    assert state_of(hosts.src, "vm1") == "running"
    assert seqs_gapless(view(db_url, m.id))


def test_resolve_running_on_src_removes_what_the_destination_holds(
    db_url: str, hosts: Hosts
) -> None:
    # ROLLED_BACK means "runs on src, dst cleaned up" (docs/states.md); the incoming copy that
    # never ran must not stay behind to block the next migration of the domain there.
    hosts.dst.set_fault("finish", "error")
    hosts.dst.set_fault("probe", "error")
    m = in_doubt(hosts, db_url)
    hosts.dst.clear_faults()
    proc = run_cli("resolve", m.id, "--running-on", "src", db=db_url)
    assert proc.returncode == EXIT_FAILED, proc.stderr
    assert hosts.states("vm1") == ("running", "absent")


def test_resolve_running_on_dst_confirms_and_removes_the_source(db_url: str, hosts: Hosts) -> None:
    # Finish started the domain on dst, its reply was lost and the probe fails: IN_DOUBT
    # with the destination really running it.
    hosts.dst.set_fault("finish", "lost-reply")
    hosts.dst.set_fault("probe", "error")
    m = in_doubt(hosts, db_url)
    assert hosts.states("vm1") == ("paused", "running")
    hosts.dst.clear_faults()
    proc = run_cli("resolve", m.id[:8], "--running-on", "dst", "--json", db=db_url)
    out = json.loads(proc.stdout)
    assert (proc.returncode, out["state"]) == (EXIT_OK, "CONFIRMED")
    assert hosts.states("vm1") == ("absent", "running")
    after = view(db_url, m.id)
    assert seqs_gapless(after)
    assert [e["cancelled"] for e in after["events"] if e["step"] == "confirm"] == [False, False]
    decided = [e for e in after["events"] if "dst" in (e["detail"] or {}).values()]
    assert decided and all(e["coordinator"] != m.owner for e in decided), "decision journaled"


def test_resolve_running_on_src_while_the_destination_runs_it_stays_in_doubt(
    db_url: str, hosts: Hosts
) -> None:
    # The operator is wrong: the cleanup Finish(cancelled=1) finds the domain running on
    # dst; resuming the source too would run both copies.
    hosts.dst.set_fault("finish", "lost-reply")
    hosts.dst.set_fault("probe", "error")
    m = in_doubt(hosts, db_url)
    hosts.dst.clear_faults()
    proc = run_cli("resolve", m.id, "--running-on", "src", "--json", db=db_url)
    assert (proc.returncode, json.loads(proc.stdout)["state"]) == (EXIT_IN_DOUBT, "IN_DOUBT")
    assert hosts.states("vm1") == ("paused", "running")


def test_resolve_of_a_migration_not_in_doubt_is_refused_with_exit_2(
    db_url: str, hosts: Hosts
) -> None:
    assert migrate(hosts, db_url).returncode == EXIT_OK
    m = only_migration(db_url)
    proc = run_cli("resolve", m.id, "--running-on", "src", db=db_url)
    assert proc.returncode == EXIT_USAGE
    assert proc.stderr == f"migrator: error: migration {m.id} is CONFIRMED, not IN_DOUBT\n"
    assert hosts.states("vm1") == ("absent", "running")


# -- abort -------------------------------------------------------------------------------------


def wait_for_state(db: str, migration_state: str, timeout: float = 30) -> dict[str, Any]:
    """Poll ``list --json`` until the one migration is in ``migration_state``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = json.loads(run_cli("list", "--json", db=db).stdout)
        if rows and rows[0]["state"] == migration_state:
            return dict(rows[0])
        time.sleep(0.1)
    raise AssertionError(f"no migration reached {migration_state} within {timeout} s")


@pytest.mark.parametrize(
    ("protocol", "performing", "end", "dst_after"),
    [
        ("3", "PERFORMING", "ROLLED_BACK", "absent"),
        ("2", "PERFORMING2", "ROLLED_BACK", "absent"),
        ("1", "PERFORMING1", "FAILED", "incoming"),  # v1 cannot cancel on the destination
    ],
    ids=["v3", "v2", "v1"],
)
def test_abort_during_perform_rolls_back_and_the_source_runs(
    db_url: str, hosts: Hosts, protocol: str, performing: str, end: str, dst_after: str
) -> None:
    hosts.src.define("vm8", memory_mib=8)
    env = {k: v for k, v in os.environ.items() if k != failpoints.ENV_VAR}
    env["MIGRATOR_DB"] = db_url
    argv = [
        sys.executable, "-m", "migrator", "migrate", "vm8", "--src", hosts.src_uri,
        "--dst", hosts.dst_uri, "--bandwidth", "1", "--protocol", protocol, "--json",
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )
    try:
        row = wait_for_state(db_url, performing)
        aborted = run_cli("abort", row["id"], db=db_url)
        assert aborted.returncode == EXIT_OK, aborted.stderr
        assert aborted.stdout == f"abort requested for {row['id']} ({performing})\n"
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    outcome = json.loads(out)
    assert (proc.returncode, outcome["state"]) == (EXIT_FAILED, end), err
    assert "aborted" in outcome["reason"]
    assert hosts.states("vm8") == ("running", dst_after)


def test_abort_of_a_confirmed_migration_is_refused_with_exit_2(db_url: str, hosts: Hosts) -> None:
    assert migrate(hosts, db_url).returncode == EXIT_OK
    m = only_migration(db_url)
    proc = run_cli("abort", m.id, db=db_url)
    assert proc.returncode == EXIT_USAGE
    assert proc.stderr.startswith(f"migrator: error: migration {m.id} is CONFIRMED: ")
    assert "abort" in proc.stderr
    assert only_migration(db_url).abort_requested is False
