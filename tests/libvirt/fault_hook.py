"""A ``--hook-command`` that kills a daemon's QEMU at a chosen journal event: a real fault.

    python -m tests.libvirt.fault_hook STEP KIND kill-qemu DIR GUEST [DELAY] HOOK ID
    python -m tests.libvirt.fault_hook STEP KIND create URI XMLFILE HOOK ID

When the event on stdin is ``STEP``'s ``KIND`` (``intent``, ``ok``, ``error``):
``kill-qemu`` kills every QEMU under ``DIR`` (one daemon's directory; ``netns:NS`` for
the QEMUs of a namespaced host) running ``GUEST``
with SIGKILL, after ``DELAY`` seconds in the background when given (to land
mid-transfer), else at once; ``create`` starts a guest from ``XMLFILE`` on ``URI``. Without
a delay the fault is in place before the hook returns. Hook events are delivered by the
coordinator's delivery thread shortly after each commit, never inside a step, so this
places a fault during a long step (``DELAY``); a fault exactly between two steps is placed
by the RPC tap instead (``rpctap.Gate.before_call``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.libvirt.daemons import guest_name, qemu_processes, virsh


def _qemus(where: str) -> dict[int, str]:
    """QEMUs under directory ``where``, or in network namespace NS for ``netns:NS``."""
    if not where.startswith("netns:"):
        return qemu_processes(Path(where))
    out = subprocess.run(["ip", "netns", "pids", where.removeprefix("netns:")],
                         capture_output=True, text=True, check=False).stdout  # fmt: skip
    found = {}
    for pid in (int(p) for p in out.split()):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and b"qemu-system" in argv[0]:
            found[pid] = guest_name([a.decode(errors="replace") for a in argv])
    return found


def qemus_of(root: Path | str, guest: str) -> list[int]:
    """The pids of the QEMUs under ``root`` (or ``netns:NS``) running ``guest``."""
    return [pid for pid, name in _qemus(str(root)).items() if name == guest]


def kill(root: Path | str, guest: str) -> list[int]:
    where = str(root)
    pids = qemus_of(where, guest)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any(p in _qemus(where) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    return pids


def main(argv: list[str]) -> int:
    step, kind, action, target, arg, *rest = argv
    event = json.load(sys.stdin)["event"]
    if event.get("step") != step or event.get("kind") != kind:
        return 0
    if action == "create":
        virsh(target, "create", arg)
        return 0
    root, guest = target, arg
    delay = float(rest[0]) if len(rest) > 2 else None
    if delay is None:
        kill(root, guest)
        return 0
    if os.fork() == 0:  # the coordinator goes on while the child waits, then kills
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # the hook's caller waits for its pipes to close
            os.dup2(null, fd)
        time.sleep(delay)
        kill(root, guest)
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
