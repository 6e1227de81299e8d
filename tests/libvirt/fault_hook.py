"""A ``--hook-command`` that kills a daemon's QEMU at a chosen journal event: a real fault.

    python -m tests.libvirt.fault_hook kill-qemu DIR GUEST STEP KIND [DELAY] HOOK ID

When the event on stdin is ``STEP``'s ``KIND`` (``intent``, ``ok``, ``error``), every QEMU
under ``DIR`` (one daemon's directory) running ``GUEST`` is killed with SIGKILL, after
``DELAY`` seconds in the background when given (to land mid-transfer), else at once and
before the hook returns, so before the coordinator's next call. Hooks run synchronously
after each commit (``migrator/hooks.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

from tests.libvirt.daemons import qemu_processes


def kill(root: Path, guest: str) -> list[int]:
    pids = [pid for pid, name in qemu_processes(root).items() if name == guest]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any(p in qemu_processes(root) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    return pids


def main(argv: list[str]) -> int:
    action, root, guest, step, kind, *rest = argv
    assert action == "kill-qemu", action
    delay = float(rest[0]) if len(rest) > 2 else None
    event = json.load(sys.stdin)["event"]
    if event.get("step") != step or event.get("kind") != kind:
        return 0
    if delay is None:
        kill(Path(root), guest)
        return 0
    if os.fork() == 0:  # the coordinator goes on while the child waits, then kills
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # the hook's caller waits for its pipes to close
            os.dup2(null, fd)
        time.sleep(delay)
        kill(Path(root), guest)
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
