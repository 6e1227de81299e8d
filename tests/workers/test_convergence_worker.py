"""A submitted migration's policy is journaled with it: the worker that drives it applies
it, and meanwhile the journal's metrics show the job statistics it decides on."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from migrator.convergence.policy import Action, Policy
from migrator.drivers.test import TestDriver
from migrator.engine.coordinator import Coordinator
from migrator.journal.store import Journal
from migrator.metrics import serve_journal
from migrator.records import EventKind
from migrator.states import State


def test_a_worker_applies_the_submitted_policy_and_metrics_show_the_job(
    db_url: str, tmp_path: Path
) -> None:
    src = TestDriver(f"test://{tmp_path / 'host-a'}")
    dst = TestDriver(f"test://{tmp_path / 'host-b'}")
    src.define("vm1", memory_mib=4, dirty_mib_s=16)  # never converges at 8 MiB/s
    with Journal.open(db_url) as journal:
        c = Coordinator(journal)
        try:
            policy = Policy(bandwidth_mib=8, stall_iterations=3, action=Action.PAUSE)
            m = c.submit("vm1", src=src, dst=dst, flags=1, policy=policy)  # LIVE
        finally:
            c.close()
        assert m.bandwidth == 8 and journal.policy(m.id) == policy.as_dict()
        cmd = [
            sys.executable,
            "-m",
            "migrator",
            "--db",
            db_url,
            "worker",
            "--poll",
            "0.1",
            "--quiet",
        ]
        worker = subprocess.Popen(cmd, stderr=subprocess.PIPE)
        server = serve_journal(journal, port=0)
        try:
            text = _scrape_while_performing(journal, m.id, server.port)
            deadline = time.monotonic() + 60
            while journal.get(m.id).state is not State.CONFIRMED:
                assert time.monotonic() < deadline, journal.get(m.id).state
                time.sleep(0.05)
        finally:
            server.close()
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
        kinds = [e.kind for e in journal.history(m.id)]
    assert (
        f'migrator_perform_dirty_rate_bytes{{domain="vm1",migration="{m.id}"}} 1.6777216e+07'
        in text
    )
    assert f'migrator_perform_iteration{{domain="vm1",migration="{m.id}"}}' in text
    assert EventKind.STALLED in kinds and EventKind.ACTION in kinds
    assert [d["state"] for d in dst.domains()] == ["running"]


def _scrape_while_performing(journal: Journal, mid: str, port: int) -> str:
    """The metrics once the migration's progress carries a dirty rate (a hang guard)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        m = journal.get(mid)
        if m.state is State.PERFORMING and (m.progress or {}).get("dirty_rate"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as reply:
                text: str = reply.read().decode()
            if "migrator_perform_dirty_rate_bytes{" in text:
                return text
        time.sleep(0.05)
    raise AssertionError(f"never saw the job statistics of {mid} in Perform")
