"""``migrator`` against the namespaced hosts (``netns.py``) over one transport: the commands,
the journal and what each host holds.

``transport`` is ``tcp``, ``tls`` or ``ssh``: the hosts are reached as operators reach
real ones, never through their UNIX sockets (``virsh`` set-up aside). The destination's
URI carries a ``migrate_uri`` on its own address: the hosts cannot resolve each other's
names.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from typing import Any

from migrator.journal.store import Journal
from migrator.records import Event, Migration
from tests.conftest import ROOT, assert_replays_consistently
from tests.crash.forkserver import SERVER, Child
from tests.crash.harness import cli_env
from tests.libvirt import guests
from tests.libvirt.daemons import free_port
from tests.libvirt.netns import NsHost, NsPair

CLI_TIMEOUT = 180.0
TRANSPORTS = ("tcp", "tls", "ssh")


def state(host: NsHost, name: str) -> str:
    return guests.state(host, name)[0]  # type: ignore[arg-type]


@dataclass
class NsRig:
    """A journal, the namespaced pair, one guest ``name`` on host ``a``, one transport."""

    pair: NsPair
    db: str
    name: str
    transport: str = "tcp"

    @property
    def src(self) -> str:
        return self.pair.uri(self.pair.a, self.transport)

    @property
    def dst(self) -> str:
        addr = self.pair.b.addr
        return self.pair.uri(self.pair.b, self.transport, migrate_uri=f"tcp://{addr}:{free_port()}")

    def argv(self, *extra: str) -> list[str]:
        return ["migrate", self.name, "--src", self.src, "--dst", self.dst, "--live", "--json",
                *extra]  # fmt: skip

    def cli(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = SERVER.run(list(args), env=cli_env(self.db, env), cwd=ROOT, timeout=CLI_TIMEOUT)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    def migrate(self, *extra: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        proc = self.cli(*self.argv(*extra), env=env)
        outcome: dict[str, Any] = json.loads(proc.stdout) if proc.stdout.strip() else {}
        return proc.returncode, outcome

    def spawn(self, *extra: str, env: dict[str, str] | None = None) -> Child:
        return SERVER.spawn(self.argv(*extra), env=cli_env(self.db, env), cwd=ROOT)

    def recover(self, *extra: str) -> tuple[int, list[dict[str, Any]]]:
        proc = self.cli("recover", "--json", *extra)
        rows: list[dict[str, Any]] = json.loads(proc.stdout) if proc.stdout.strip() else []
        return proc.returncode, rows

    def migrations(self) -> list[Migration]:
        with Journal.open(self.db) as journal:
            return journal.list()

    def history(self, migration_id: str) -> list[Event]:
        with Journal.open(self.db) as journal:
            return journal.history(migration_id)

    def states(self, dname: str | None = None) -> tuple[str, str]:
        return state(self.pair.a, self.name), state(self.pair.b, dname or self.name)

    def settled(
        self, migration: Migration, *, dname: str | None = None, paused: bool = False
    ) -> None:
        """The guest is active on exactly the host the journal names (``paused`` if the
        guest was), no QEMU runs without a domain, and replay agrees with the journal."""
        end, states = str(migration.state), self.states(dname)
        guest = "paused" if paused else "running"
        if end == "CONFIRMED":
            assert states == ("absent", guest), (end, states)
        else:
            assert end == "ROLLED_BACK", end
            assert states == (guest, "absent"), (end, states)
        assert self.pair.stray_qemus() == {}, "a QEMU runs without a domain"
        assert_replays_consistently(self.db)
