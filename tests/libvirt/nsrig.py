"""``migrator`` against the namespaced hosts (``netns.py``) over one transport: the commands,
the journal and what each host holds.

``transport`` is ``tcp``, ``tls`` or ``ssh``: the hosts are reached as operators reach
real ones, never through their UNIX sockets (``virsh`` set-up aside); ``unix`` is the
daemons' own sockets. The destination's URI carries a ``migrate_uri`` on its own address:
the hosts cannot resolve each other's names. ``tapped`` gives both URIs through RPC taps
over the rig's transport (``nettap.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from migrator.journal.store import Journal
from migrator.records import Event, Migration
from tests.conftest import ROOT, assert_replays_consistently
from tests.crash.forkserver import SERVER, Child
from tests.crash.harness import cli_env
from tests.libvirt import guests
from tests.libvirt.daemons import free_port
from tests.libvirt.fault_hook import kill, qemus_of
from tests.libvirt.netns import NsHost, NsPair
from tests.libvirt.nettap import net_tapped
from tests.libvirt.rpctap import Gate

CLI_TIMEOUT = 180.0
TRANSPORTS = ("tcp", "tls", "ssh")


def one_network_each(cases: Sequence[Any], start: int = 0, prefix: str = "") -> list[Any]:
    """Parameters for ``@pytest.mark.parametrize((..., "transport"), ...)``: each case over
    one network transport, ``tcp``, ``tls`` and ``ssh`` in turn from ``TRANSPORTS[start]``
    (ids ``PREFIX-CASE-TRANSPORT``), for cases too long to run over each (conftest's
    ``transport`` runs every other test over the three)."""
    params = []
    for i, case in enumerate(cases):
        values = case if isinstance(case, tuple) else (case,)
        network = TRANSPORTS[(start + i) % len(TRANSPORTS)]
        head = [prefix] if prefix else []
        params.append(
            pytest.param(*values, network, id="-".join([*head, *map(str, values), network]))
        )
    return params


def on(transport: str) -> pytest.MarkDecorator:
    """The test over ``transport`` alone."""
    return pytest.mark.parametrize("transport", [transport])


def state(host: NsHost, name: str) -> str:
    return guests.state(host, name)[0]  # type: ignore[arg-type]


RESUMED_BY_LIBVIRT = ("running", "migration canceled")
"""A source libvirt itself resumed: after a failed migration, or (9.0) after a restart that
found the job of a finished transfer marked ``confirm3_cancelled``."""


def wait_until(ready: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll ``ready`` every 50 ms; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"no sign of {what} after {timeout:g} s"
        time.sleep(0.05)


def signal_qemus(host: NsHost, name: str, sig: signal.Signals) -> list[int]:
    """Send ``sig`` to ``host``'s QEMUs of guest ``name``; their pids."""
    pids = qemus_of(f"netns:{host.ns}", name)
    for pid in pids:
        os.kill(pid, sig)
    return pids


def restart_resuming(host: NsHost, name: str) -> None:
    """Restart ``host``'s libvirtd so that libvirt 9.0 resumes ``name``, the source of a
    finished transfer whose client is gone: with its QEMU stopped, the daemon's cleanup of
    the job hangs in the monitor (phase ``confirm3_cancelled``), so SIGTERM does not end it
    and it is killed 0.5 s later; the daemon started again resumes the source. Returns once
    libvirt says so. A QEMU slow to answer does the same in the wild, now and then."""
    signal_qemus(host, name, signal.SIGSTOP)
    try:
        host.stop_libvirtd(grace=0.5)
    finally:
        signal_qemus(host, name, signal.SIGCONT)
    host.start_libvirtd()
    resumed = lambda: guests.state(host, name) == RESUMED_BY_LIBVIRT  # noqa: E731
    wait_until(resumed, "the source resumed by libvirt, once it reconnects")


def kill_qemu(host: NsHost, name: str) -> list[int]:
    """SIGKILL ``host``'s QEMU of guest ``name``; once it is gone, its pids."""
    return kill(f"netns:{host.ns}", name)


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
        return self.pair.uri(self.pair.b, self.transport, migrate_uri=self.migrate_uri())

    def migrate_uri(self) -> str:
        """Where the source's QEMU sends the guest: a free port of host ``b``."""
        return f"tcp://{self.pair.b.addr}:{free_port()}"

    @contextlib.contextmanager
    def tapped(self, gate: Gate) -> Iterator[tuple[str, str]]:
        """The source's and destination's URIs over the rig's transport through RPC taps
        sharing ``gate`` (``nettap.py``)."""
        with net_tapped(self.pair, self.transport, gate, self.migrate_uri()) as uris:
            yield uris

    def argv(self, *extra: str, src: str | None = None, dst: str | None = None) -> list[str]:
        return ["migrate", self.name, "--src", src or self.src, "--dst", dst or self.dst,
                "--live", "--json", *extra]  # fmt: skip

    def cli(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
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
        self, migration: Migration | None = None, *, dname: str | None = None, paused: bool = False
    ) -> Migration:
        """The guest is active on exactly the host the journal names (``paused`` if the
        guest was), no QEMU runs without a domain, and replay agrees with the journal.
        ``migration`` is the journal's only one by default; it is returned."""
        if migration is None:
            [migration] = self.migrations()
        end, states = str(migration.state), self.states(dname)
        guest = "paused" if paused else "running"
        if end == "CONFIRMED":
            assert states == ("absent", guest), (end, states)
        else:
            assert end == "ROLLED_BACK", end
            assert states == (guest, "absent"), (end, states)
        assert self.pair.stray_qemus() == {}, "a QEMU runs without a domain"
        assert_replays_consistently(self.db)
        return migration
