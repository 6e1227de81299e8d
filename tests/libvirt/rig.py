"""``migrator`` against the two real daemons: run it, read the journal, check the hosts.

``settled`` states what must hold once a migration ended, however it got there (a clean
run, a failure rule, a crash and ``migrator recover``): the guest is active on exactly the
host the journal names, a source is paused only when the journal says ``IN_DOUBT``, no
QEMU runs without a domain, and ``migrator replay`` agrees with the journal.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from migrator.journal.store import Journal
from migrator.records import Event, Migration
from tests.conftest import ROOT, assert_replays_consistently
from tests.crash.forkserver import SERVER, Child
from tests.crash.harness import cli_env
from tests.libvirt import guests
from tests.libvirt.daemons import Daemon, Pair, migrate_uri
from tests.libvirt.netns import NsHost
from tests.libvirt.rpctap import Gate, Tap

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

    def argv(self, *extra: str, src: str | None = None, dst: str | None = None) -> list[str]:
        return ["migrate", self.name, "--src", src or self.pair.src.uri,
                "--dst", dst or self.dst_uri(), "--live", "--json", *extra]  # fmt: skip

    def cli(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``migrator ARGS`` in a new process (forked, see ``tests/crash/forkserver.py``)."""
        proc = SERVER.run(list(args), env=cli_env(self.db, env), cwd=ROOT, timeout=CLI_TIMEOUT)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    def migrate(
        self,
        *extra: str,
        src: str | None = None,
        dst: str | None = None,
        env: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        proc = self.cli(*self.argv(*extra, src=src, dst=dst), env=env)
        outcome: dict[str, Any] = json.loads(proc.stdout) if proc.stdout.strip() else {}
        return proc.returncode, outcome

    def spawn(
        self,
        *extra: str,
        src: str | None = None,
        dst: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Child:
        argv = self.argv(*extra, src=src, dst=dst)
        return SERVER.spawn(argv, env=cli_env(self.db, env), cwd=ROOT)

    def recover(self) -> subprocess.CompletedProcess[str]:
        return self.cli("recover", "--json")

    def migrations(self) -> list[Migration]:
        with Journal.open(self.db) as journal:
            return journal.list()

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


@contextlib.contextmanager
def tapped(rig: LibvirtRig, gate: Gate) -> Iterator[tuple[str, str]]:
    """The source's and destination's URIs through RPC taps sharing ``gate``."""
    tag = uuid.uuid4().hex[:8]
    src = Tap(rig.pair.root / f"tap-{tag}-src.sock", rig.pair.src.sock, gate)
    dst = Tap(rig.pair.root / f"tap-{tag}-dst.sock", rig.pair.dst.sock, gate)
    try:
        yield src.uri, f"{dst.uri}&migrate_uri={migrate_uri()}"
    finally:
        src.close()
        dst.close()


def kill_hook(
    daemon: Daemon | NsHost, guest: str, step: str, kind: str, delay: float | None = None
) -> str:
    """A ``--hook-command`` that kills ``daemon``'s QEMU of ``guest`` at that event."""
    where = f"netns:{daemon.ns}" if isinstance(daemon, NsHost) else str(daemon.home)
    args = ["kill-qemu", where, guest, *([str(delay)] if delay is not None else [])]
    return _hook(step, kind, *args)


def _hook(*args: str) -> str:
    return shlex.join([sys.executable, "-m", "tests.libvirt.fault_hook", *args])
