"""Reap the daemons' exited QEMUs at once, as a libvirt host's init does (benchmarks only).

libvirtd starts each QEMU daemonized: the QEMU's parent exits, and the QEMU is re-parented
to the nearest *subreaper* ancestor, else to PID 1. When the QEMU exits, it stays a zombie
until that process reaps it, and libvirt, which checks that a QEMU it told to stop is gone
with ``kill(pid, 0)`` every 0.2 s (``virProcessKillPainfully``), keeps waiting while the
zombie exists: the source's Confirm3 lasts until the QEMU is reaped. On a libvirt host PID 1
(systemd) reaps at once; this machine's PID 1 reaps orphans once a second, one to two
seconds after they exit, so every Confirm3 here took 1.2 to 2.0 s in 0.2 s steps, and whole
migrations came in whole seconds.

``start()`` makes this process a subreaper (``PR_SET_CHILD_SUBREAPER``): the daemons it
starts afterwards leave their QEMUs to it, and a thread reaps each exited QEMU at once,
keeping the CPU time that QEMU used apart (``qemu_cpu()``) so that the benchmark's CPU
figures for its clients leave it out. Other children (the daemons, the timed clients) are
left to whoever waits for them.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time

PR_SET_CHILD_SUBREAPER = 36

_lock = threading.Lock()
_qemu_cpu = 0.0
_started = False


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _reap_forever() -> None:
    global _qemu_cpu
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:  # no child at all yet
            time.sleep(0.05)
            continue
        if info is None:
            continue
        if not _comm(info.si_pid).startswith("qemu"):
            time.sleep(0.005)  # another child: its owner waits for it
            continue
        try:
            _, _, usage = os.wait4(info.si_pid, 0)
        except ChildProcessError:
            continue
        with _lock:
            _qemu_cpu += usage.ru_utime + usage.ru_stime


def start() -> bool:
    """Become the subreaper of the processes started from now on; False where impossible."""
    global _started
    if _started:
        return True
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    threading.Thread(target=_reap_forever, name="subreaper", daemon=True).start()
    _started = True
    return True


def qemu_cpu() -> float:
    """CPU seconds of the QEMUs reaped so far (counted in this process's children's usage)."""
    with _lock:
        return _qemu_cpu
