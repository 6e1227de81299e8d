"""``virsh migrate --postcopy`` killed at the points of migrator's post-copy crash matrix.

Two system-mode daemons in network namespaces (``netns.py``: session-mode QEMU cannot open
userfaultfd), the busy guest (``tests/busyguest.py``) booted from ``<os><kernel>``, the
bandwidth capped so that pre-copy cannot converge (``--bandwidth 4``, 46 MiB rewritten
hundreds of times a second) and post-copy lasts (``--postcopy-bandwidth 2``, about 20 s).
``virsh migrate --live --postcopy`` (non-peer-to-peer: ``virsh`` drives the five v3
steps) talks to both daemons through RPC taps (``rpctap.py``); once Perform3 runs, a
second ``virsh migrate-postcopy`` asks the source for the switch through the same tap.
``virsh migrate`` is killed with SIGKILL at a point found on the wire:

- ``switch``: the call ``migrate-start-postcopy`` was forwarded to the source (Perform3
  still in flight; libvirt's Perform3 returns once QEMU is in post-copy);
- ``perform``: Perform3's reply reached ``virsh``, its Finish3 is held (never sent);
- ``postcopy``: Finish3 has been in flight for ``MID_POSTCOPY_S`` (libvirt's Finish3
  waits on the destination until every page is there), the guest running there;
- ``finish``: Finish3's reply reached ``virsh`` (every page sent), Confirm3 is held.

Then nobody acts: the hosts are watched (``postcopy_watch.py``: ``virsh domstate
--reason``, ``virsh domjobinfo``) until nothing changed for ``STABLE_S`` (and neither side
is in post-copy any more) or ``WATCH_S`` passed; where the guest runs is where its pass
counter advances; a guest running on the destination has its memory checked (one edge of
the sweep); where it runs nowhere, ``virsh resume`` is tried on the paused source. The
table says what the hosts do by themselves.

    PYTHONPATH=. python -m tests.libvirt.virsh_postcopy_table --repeat 3      # 7.5 min
    PYTHONPATH=. python -m tests.libvirt.virsh_postcopy_table --repeat 10 switch

prints the markdown tables of ``docs/postcopy.md`` (one row per point and outcome; runs of
a point that ended alike share a row).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests import busyguest
from tests.libvirt import guests
from tests.libvirt.daemons import DaemonError, free_port
from tests.libvirt.netns import NsPair
from tests.libvirt.nettap import net_taps
from tests.libvirt.postcopy_watch import (
    Sample,
    advancing,
    memory_whole,
    try_resume,
    watch,
    where_it_runs,
)
from tests.libvirt.rpctap import Gate

POINTS = ("switch", "perform", "postcopy", "finish")
TITLE = {
    "switch": "switch asked (`migrate-start-postcopy` sent, Perform3 in flight)",
    "perform": "Perform3 returned (post-copy running, Finish3 not sent)",
    "postcopy": "mid post-copy (Finish3 in flight for 3 s)",
    "finish": "Finish3 returned (every page sent), Confirm3 not sent",
}
MIGRATOR = {
    "switch": "`postcopy.called`",
    "perform": "`postcopy.recorded`",
    "postcopy": "`postcopy.underway`",
    "finish": "`finish.recorded`",
}
"""The point of migrator's crash matrix (``docs/postcopy.md``) each one matches."""
PERFORM3, FINISH3, START_POST_COPY = 305, 306, 364
BANDWIDTH_MIB = 4
POSTCOPY_BANDWIDTH_MIB = 2
PRECOPY_S = 1.0
"""Pre-copy before the switch is asked: a few MiB of a first pass that cannot end."""
MID_POSTCOPY_S = 3.0
STABLE_S = 10.0
WATCH_S = 75.0
"""Long enough for QEMU to send every page at the post-copy cap, should it go on alone."""
STEP_TIMEOUT_S = 90.0
MEMORY_MIB = 64


@dataclass
class Outcome:
    """What ``virsh migrate`` killed at ``point`` left behind."""

    point: str
    name: str
    exit: str
    seen: list[tuple[str, int, float]]
    samples: list[Sample] = field(default_factory=list)
    runs_on: str = ""
    """``"source"``, ``"destination"`` or ``"nowhere"``: where the pass counter advances."""
    resume: str = ""
    """What ``virsh resume`` of the paused source said, when the guest runs nowhere."""
    whole: bool | None = None
    """Whether the memory of the guest running on the destination is whole."""

    @property
    def first(self) -> Sample:
        return self.samples[0]

    @property
    def last(self) -> Sample:
        return self.samples[-1]

    def changes(self) -> list[Sample]:
        """The first sample and every one that differs from the one before it."""
        out = self.samples[:1]
        for s in self.samples[1:]:
            if (s.source, s.destination, s.jobs) != (out[-1].source, out[-1].destination,
                                                      out[-1].jobs):  # fmt: skip
                out.append(s)
        return out


def _wait(what: str, ready: Callable[[], bool], timeout: float = STEP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def boot_busy_guest(pair: NsPair, kernel: Path) -> str:
    """A running busy guest on host ``a``; returns once its counter advances."""
    name = guests.unique_name("pc")
    guests.create(pair.a, name, guests.domain_xml(name, MEMORY_MIB, kernel=kernel))  # type: ignore[arg-type]
    _wait("the busy guest runs", lambda: advancing(pair.a, name), 30)
    return name


def virsh_killed_at(
    pair: NsPair,
    kernel: Path,
    point: str,
    *,
    watch_s: float = WATCH_S,
    stable_s: float = STABLE_S,
    postcopy_mib: int = POSTCOPY_BANDWIDTH_MIB,
    resume: bool = True,
    transport: str = "unix",
) -> Outcome:
    """Migrate a fresh busy guest with ``virsh migrate --postcopy`` and kill it at ``point``;
    watch what the hosts do (at most ``watch_s``, until ``stable_s`` without a change),
    where the guest runs, and, where it runs nowhere, whether ``virsh resume`` revives the
    paused source (``resume``: libvirt waits 30 s for the job's lock before it answers);
    when it runs on the destination, whether its memory is whole; then destroy the guest
    on both hosts. ``postcopy_mib`` caps post-copy (MiB/s). ``virsh`` reaches the hosts
    over ``transport`` (``unix``: the daemons' own sockets; ``tcp``, ``tls``, ``ssh``:
    ``nettap.py``)."""
    name = boot_busy_guest(pair, kernel)
    gate = Gate()
    src, dst = net_taps(pair, transport, gate)
    argv = ["virsh", "-c", src.virsh_uri(), "migrate", "--live", "--postcopy",
            "--bandwidth", str(BANDWIDTH_MIB), "--postcopy-bandwidth",
            str(postcopy_mib), name, dst.virsh_uri(),
            "--migrateuri", f"tcp://{pair.b.addr}:{free_port()}"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    killed = threading.Event()

    def kill() -> None:
        os.kill(proc.pid, signal.SIGKILL)
        killed.set()

    def called(proc_no: int) -> Callable[[], bool]:
        return lambda: any(d == "call" and p == proc_no for d, p, _ in gate.seen)

    try:
        if point == "switch":
            gate.after_call(START_POST_COPY, kill)
        elif point == "perform":
            gate.hold_after(PERFORM3, kill)
        elif point == "finish":
            gate.hold_after(FINISH3, kill)
        _wait("Perform3 called", called(PERFORM3))
        time.sleep(PRECOPY_S)
        ask = ["virsh", "-c", src.virsh_uri(), "migrate-postcopy", name]
        switch = subprocess.run(ask, capture_output=True, text=True, timeout=60, check=False)
        if switch.returncode != 0:
            raise DaemonError(f"virsh migrate-postcopy: {switch.stderr.strip()}")
        if point == "postcopy":
            _wait("Finish3 called", called(FINISH3))
            time.sleep(MID_POSTCOPY_S)
            if proc.poll() is None:
                kill()
        proc.wait(timeout=STEP_TIMEOUT_S)
        since = time.monotonic()
        exit = "SIGKILL" if killed.is_set() and proc.returncode == -signal.SIGKILL else (
            f"exit {proc.returncode}")  # fmt: skip
        outcome = Outcome(point, name, exit, list(gate.seen))
        outcome.samples = watch(pair, name, since, watch_s, stable_s)
        outcome.runs_on = where_it_runs(pair, name, outcome.last)
        if outcome.runs_on == "destination":
            outcome.whole = memory_whole(pair.b, name)
        if resume and outcome.runs_on == "nowhere" and outcome.last.source[0] == "paused":
            outcome.resume = try_resume(pair.a, name)
        return outcome
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        with contextlib.suppress(ProcessLookupError):  # its ssh, if it left one behind
            os.killpg(proc.pid, signal.SIGKILL)
        src.close()
        dst.close()
        for host in pair.hosts():
            host.virsh("destroy", name, check=False, timeout=30)
            host.virsh("undefine", name, check=False, timeout=30)


HEADER = [
    "`virsh migrate --postcopy` killed at",
    "migrator's point",
    "runs",
    "source: right after → settled",
    "destination: right after → settled",
    "settled (s after the kill)",
    "libvirt jobs left (source / destination)",
    "without an operator",
]


def _state(state: tuple[str, str]) -> str:
    name, reason = state
    if name == "paused" and reason:
        return f"**paused ({reason})**"
    return f"{name} ({reason})" if reason else name


def _jobs(jobs: tuple[str, str]) -> str:
    return " / ".join(j if j != "-" else "no domain" for j in jobs)


def verdict(o: Outcome) -> str:
    """What becomes of the guest with nobody acting, in words."""
    src, dst = o.last.source[0], o.last.destination[0]
    if o.runs_on == "source" and dst == "absent":
        return (
            "runs on the source: the source's daemon cancelled the migration when `virsh`'s "
            "connection closed"
        )
    whole = {True: ", its memory whole", False: ", **a page lost**", None: ""}[o.whole]
    if o.runs_on == "destination" and src == "absent":
        return (
            f"runs on the destination{whole}: QEMU sent the remaining pages by itself, then "
            "the source's daemon removed its copy"
        )
    if o.runs_on == "destination":
        return (
            f"runs on the destination{whole}; "
            f"the source's QEMU stays {_state(o.last.source)} with its "
            "migration job until an operator destroys it"
        )
    if o.runs_on == "nowhere" and dst == "absent":
        return (
            "**lost**: the destination's daemon destroyed its copy with `virsh`'s "
            "connection; the source holds the guest as it was at the switch, and `virsh "
            f"resume` there: {o.resume or '-'}"
        )
    return f"runs on: {o.runs_on}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _change(first: tuple[str, str], last: tuple[str, str]) -> str:
    return _state(last) if first == last else f"{_state(first)} → {_state(last)}"


def _cells(o: Outcome) -> tuple[str, ...]:
    return (
        TITLE[o.point], MIGRATOR[o.point], _change(o.first.source, o.last.source),
        _change(o.first.destination, o.last.destination), _jobs(o.last.jobs),
        verdict(o).replace(o.name, "NAME").replace("|", "\\|"),
    )  # fmt: skip


def table(outcomes: list[Outcome]) -> str:
    """One row per point and distinct outcome: repeated runs of a point that ended alike
    share a row (``runs``: how many of the point's runs)."""
    lines = [_row(HEADER), "|" + "---|" * len(HEADER)]
    for point in POINTS:
        runs = [o for o in outcomes if o.point == point]
        rows: dict[tuple[str, ...], list[Outcome]] = {}
        for o in runs:
            rows.setdefault(_cells(o), []).append(o)
        for cells, alike in rows.items():
            settled = sorted(o.changes()[-1].at for o in alike)
            took = f"{settled[0]:.0f}" + (
                f"-{settled[-1]:.0f}" if settled[-1] > settled[0] + 1 else ""
            )
            title, point_, src, dst, jobs, words = cells
            lines.append(_row([title, point_, f"{len(alike)} of {len(runs)}", src, dst, took,
                               jobs, words]))  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("points", nargs="*", help=f"some of {', '.join(POINTS)} (default: all)")
    parser.add_argument("--raw", action="store_true", help="every sample too")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each point (default 1)")
    args = parser.parse_args(argv)
    for point in args.points:
        if point not in POINTS:
            parser.error(f"unknown point {point!r}: choose from {', '.join(POINTS)}")
    pair = NsPair.start()
    outcomes: list[Outcome] = []
    try:
        kernel = busyguest.build(pair.root, required=True)
        for point in [p for p in args.points or POINTS for _ in range(args.repeat)]:
            started = time.monotonic()
            outcome = virsh_killed_at(pair, kernel, point)
            outcomes.append(outcome)
            print(f"{point}: {time.monotonic() - started:.1f} s", file=sys.stderr)
            if args.raw:
                print(point, outcome.exit, outcome.runs_on)
                t0 = outcome.seen[0][2]
                print([(d, p, round(t - t0, 1)) for d, p, t in outcome.seen if p >= 300])
                for s in outcome.changes():
                    print("  ", s)
                print("   last", outcome.last, outcome.resume)
    finally:
        pair.stop()
    print(table(outcomes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
