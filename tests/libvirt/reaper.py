"""Run a command as the init of what it leaves behind: ``python reaper.py COMMAND [ARG...]``.

libvirtd starts each QEMU daemonized: the QEMU's parent exits, and the QEMU is re-parented
to the nearest *subreaper* ancestor, else to PID 1. When the QEMU exits it stays a zombie
until that process reaps it, and libvirt, which checks that a QEMU it stopped is gone with
``kill(pid, 0)`` every 0.2 s, waits as long as the zombie exists: the source's Confirm3
lasts until its QEMU is reaped. On a libvirt host PID 1 (systemd) reaps at once; this
machine's PID 1 reaps orphans once a second, so every Confirm3 took 1.2 to 2.0 s, in 0.2 s
steps (docs/performance.md).

This process makes itself a subreaper (``PR_SET_CHILD_SUBREAPER``), runs COMMAND as its
child and reaps every process that exits below it at once, as a host's init does. SIGTERM,
SIGINT, SIGHUP and SIGQUIT are passed to COMMAND; COMMAND gets SIGKILL should this process
be killed (``PR_SET_PDEATHSIG``), so a pid that stops this one stops the daemon too. It
exits with COMMAND's status once COMMAND has exited; QEMUs still running then go on, under
PID 1, as they do when a daemon stops.

Standard library only, and no imports from the project: the tests start it with the
interpreter running them, inside namespaces and under ``runuser``.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option})")


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: reaper.py COMMAND [ARG...]", file=sys.stderr)
        return 2
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    child = os.fork()
    if child == 0:
        try:
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    for sig in FORWARDED:
        signal.signal(sig, lambda signum, _frame: os.kill(child, signum))
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:  # cannot happen while COMMAND runs; be safe
            return 1
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
