"""``migrator webhooks run`` SIGKILLed mid-stream, then started again: no event is lost
(each is delivered at least once), each migration's events arrive in seq order, and the
second deliverer resumes from the cursor the first saved in the journal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from migrator.journal.store import Journal
from tests.conftest import ROOT, Hosts, readable_events
from tests.webhooks.receiver import Receiver, receiving
from tests.webhooks.test_deliverer import SECRET, migrated

WAIT = 60.0


def deliverer(db: str, config: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MIGRATOR_DB": db, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "migrator", "webhooks", "run", "--config", str(config),
         "--poll", "0.05"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip


def wait_until(receiver: Receiver, proc: subprocess.Popen[bytes], count: int) -> None:
    deadline = time.monotonic() + WAIT
    while len(receiver.taken()) < count:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, f"{len(receiver.taken())} of {count} delivered"
        time.sleep(0.01)


def test_a_killed_deliverer_restarted_loses_no_event(
    db_url: str, hosts: Hosts, tmp_path: Path
) -> None:
    config = tmp_path / "webhooks.json"
    with Journal.open(db_url) as journal, receiving(SECRET, delay=0.05) as receiver:
        migrated(journal, hosts, ["vm1", "vm2", "vm3", "vm4"])
        committed = readable_events(journal)
        secret_file = tmp_path / "secret"
        secret_file.write_bytes(SECRET + b"\n")
        endpoint = {"name": "ops", "url": receiver.url, "secret_file": "secret", "from": "start"}
        config.write_text(json.dumps({"endpoints": [endpoint]}))
        first = deliverer(db_url, config)
        try:  # killed once it saved its cursor past the first events, mid-stream
            wait_until(receiver, first, 2)
            deadline = time.monotonic() + WAIT
            while (journal.webhook_position("ops") or 0) < committed[0].position:
                assert time.monotonic() < deadline, "the first deliverer saved no cursor"
                time.sleep(0.01)
        finally:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
        time.sleep(0.5)  # a request sent before the kill is still answered and counted
        before = len(receiver.taken())
        saved = journal.webhook_position("ops")
        assert saved is not None and saved < committed[-1].position  # killed mid-stream
        second = deliverer(db_url, config)
        try:
            wait_until(receiver, second, before + 1)
            positions = {r.body["position"] for r in receiver.taken()}
            deadline = time.monotonic() + WAIT
            while not positions >= {e.position for e in committed}:
                assert time.monotonic() < deadline, "events lost"
                time.sleep(0.05)
                positions = {r.body["position"] for r in receiver.taken()}
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(WAIT) == 0
        got = receiver.taken()
    assert all(r.signed for r in got)
    resumed = got[before].body["position"]
    assert resumed == min(e.position for e in committed if e.position > saved)
    first_seen: dict[str, list[int]] = {}
    seen: set[int] = set()
    for r in got:
        if r.body["position"] not in seen:
            seen.add(r.body["position"])
            first_seen.setdefault(r.body["migration_id"], []).append(r.body["seq"])
    for seqs in first_seen.values():
        assert seqs == list(range(1, len(seqs) + 1))
