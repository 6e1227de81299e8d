"""``migrator`` against the two real daemons: run it, read the journal, check the hosts.

``settled`` states what must hold once a migration ended, however it got there (a clean
run, a failure rule, a crash and ``migrator recover``): the guest is active on exactly the
host the journal names, a source is paused only when the journal says ``IN_DOUBT``, no
QEMU runs without a domain, and ``migrator replay`` agrees with the journal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from migrator.journal.store import Journal
from migrator.records import Event, Migration
from tests.conftest import ROOT, assert_replays_consistently
from tests.crash.forkserver import SERVER, Child
from tests.crash.harness import cli_env
from tests.libvirt import guests
from tests.libvirt.daemons import Pair, migrate_uri

CLI_TIMEOUT = 120.0
ACTIVE = ("running", "paused")


@dataclass
class LibvirtRig:
    """A journal, the daemon pair and one guest ``name`` on its source."""

    pair: Pair
    db: str
    name: str

    def dst_uri(self, uri: str | None = None) -> str:
        """The destination's URI with a loopback ``migrate_uri`` (a free port by default)."""
        return f"{self.pair.dst.uri}&migrate_uri={uri or migrate_uri()}"

    def argv(self, *extra: str, dst: str | None = None) -> list[str]:
        return ["migrate", self.name, "--src", self.pair.src.uri, "--dst", dst or self.dst_uri(),
                "--live", "--json", *extra]  # fmt: skip

    def cli(
        self, *args: str, env: dict[str, str] | None = None, real_process: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """``migrator ARGS`` in a new process (forked, see ``tests/crash/forkserver.py``)."""
        if real_process:
            proc = subprocess.run(
                [sys.executable, "-m", "migrator", *args], capture_output=True, text=True,
                env={**os.environ, **cli_env(self.db, env)}, cwd=ROOT, timeout=CLI_TIMEOUT,
                check=False,
            )  # fmt: skip
        else:
            proc = SERVER.run(list(args), env=cli_env(self.db, env), cwd=ROOT, timeout=CLI_TIMEOUT)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    def migrate(
        self, *extra: str, dst: str | None = None, env: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        proc = self.cli(*self.argv(*extra, dst=dst), env=env)
        outcome: dict[str, Any] = json.loads(proc.stdout) if proc.stdout.strip() else {}
        return proc.returncode, outcome

    def spawn(self, *extra: str, env: dict[str, str] | None = None) -> Child:
        return SERVER.spawn(self.argv(*extra), env=cli_env(self.db, env), cwd=ROOT)

    def recover(self) -> subprocess.CompletedProcess[str]:
        return self.cli("recover", "--json")

    def only(self) -> Migration:
        with Journal.open(self.db) as journal:
            [m] = journal.list()
            return m

    def history(self, migration_id: str) -> list[Event]:
        with Journal.open(self.db) as journal:
            return journal.history(migration_id)

    def states(self, dname: str | None = None) -> tuple[str, str]:
        return (
            guests.state(self.pair.src, self.name)[0],
            guests.state(self.pair.dst, dname or self.name)[0],
        )

    def settled(self, *, dname: str | None = None, paused: bool = False) -> Migration:
        """Check the invariants after the migration ended; return it."""
        m = self.only()
        src, dst = self.states(dname)
        end = str(m.state)
        guest = "paused" if paused else "running"
        if end == "CONFIRMED":
            assert (src, dst) == ("absent", guest), (end, src, dst)
        elif end in ("ROLLED_BACK", "FAILED"):
            assert (src, dst) == (guest, "absent"), (end, src, dst)
        else:
            assert end == "IN_DOUBT", (end, src, dst)
            assert src == "paused", "IN_DOUBT keeps the source, paused"
        assert not (src in ACTIVE and dst == "running" and end != "IN_DOUBT"), (end, src, dst)
        assert self.pair.stray_qemus() == {}, "a QEMU runs without a domain"
        assert_replays_consistently(self.db)
        return m
