"""examples/api_client.py queues a migration through a real server, follows its events to
CONFIRMED and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from migrator.journal.store import Journal
from migrator.journal.tokens import Scope, Tokens
from migrator.workers import Worker
from tests.conftest import ROOT, Hosts
from tests.service.server import Server


def test_the_example_client_follows_its_migration_to_confirmed(
    tmp_path: Path, hosts: Hosts
) -> None:
    db = f"sqlite:///{tmp_path / 'journal.db'}"
    with Journal.open(db) as journal:
        _made, token = Tokens(journal).create(Scope.OPERATE)
        server = Server(db).start()
        worker = Worker(journal, poll=0.05).start()
        try:
            proc = subprocess.run(
                [sys.executable, str(ROOT / "examples" / "api_client.py"), server.base,
                 "vm1", hosts.src_uri, hosts.dst_uri],
                capture_output=True, text=True, timeout=60, check=False,
                env={**os.environ, "MIGRATOR_TOKEN": token},
            )  # fmt: skip
        finally:
            worker.stop()
            worker.join(30)
            server.kill()
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("queued ")
    assert lines[-1].endswith(": CONFIRMED")
    assert [line.split()[3] for line in lines[1:-1]] == ["queue"] + ["intent", "ok"] * 5
    assert hosts.states("vm1") == ("absent", "running")
