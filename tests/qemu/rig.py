"""Two qemu hosts, the QEMU processes under them, and the invariants of the crash tests.

QEMU processes are found by what their command line names (the ``-pidfile`` under the
test's own directory), never by process name, and stopped by pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migrator.drivers.qmphost import QmpDriver, pattern_of
from tests.crash.harness import check_confirm_flags, check_seq

ACTIVE = ("running", "paused")


def qemu_processes(root: Path) -> dict[int, str]:
    """Every live (non-zombie) process whose command line has a ``-pidfile`` under ``root``."""
    found: dict[int, str] = {}
    prefix = os.fsencode(str(root)) + b"/"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state == "Z" or b"-pidfile" not in argv:
            continue
        pidfile = argv[argv.index(b"-pidfile") + 1]
        if pidfile.startswith(prefix):
            found[int(entry.name)] = os.fsdecode(pidfile)
    return found


def stop_processes(root: Path, timeout: float = 10.0) -> None:
    """SIGKILL every QEMU under ``root`` by pid and wait until they are gone."""
    for pid in qemu_processes(root):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while qemu_processes(root) and time.monotonic() < deadline:
        time.sleep(0.01)


@dataclass
class QemuRig:
    root: Path
    src: QmpDriver
    dst: QmpDriver

    @classmethod
    def make(cls, root: Path) -> QemuRig:
        return cls(root, QmpDriver(f"qmp://{root / 'a'}"), QmpDriver(f"qmp://{root / 'b'}"))

    def state(self, host: QmpDriver, domain: str) -> str:
        for d in host.domains():
            if d["name"] == domain:
                return str(d["state"])
        return "absent"

    def states(self, domain: str) -> tuple[str, str]:
        return self.state(self.src, domain), self.state(self.dst, domain)

    def region(self, host: QmpDriver, domain: str) -> bytes:
        """The guest's pattern region, as ``pmemsave`` reads it."""
        pattern = pattern_of(host.config(domain))
        return host.read_memory(domain, pattern.start, pattern.size)

    def check_one_copy(self, m: dict[str, Any]) -> None:
        """The journal's end state and the processes agree: exactly one QEMU runs the guest,
        on the host the journal names, and no other QEMU is left under the hosts."""
        domain = m["domain"]
        where = self.src if m["state"] in ("ROLLED_BACK", "FAILED") else self.dst
        other = self.dst if where is self.src else self.src
        assert m["state"] in ("CONFIRMED", "ROLLED_BACK", "FAILED"), (m["state"], m["reason"])
        assert self.state(where, domain) == "running", (m["state"], self.states(domain))
        assert self.state(other, domain) == "absent", (m["state"], self.states(domain))
        pid = where.pid_of(domain)
        assert pid is not None
        assert set(qemu_processes(self.root)) == {pid}, "an orphan QEMU is left"
        assert not other.rundir(domain).exists(), "the other host keeps the guest's files"

    def check_journal(self, m: dict[str, Any]) -> None:
        check_seq(m)
        check_confirm_flags(m)
