"""libvirt's own client against migrator, killed after each v3 step: what each leaves behind.

``virsh migrate`` (non-peer-to-peer, ``--live``, a loopback ``--migrateuri``) talks to
both daemons through an RPC tap (``rpctap.py``): once the reply to the step has reached
``virsh``, its next call is held and ``virsh`` is killed with SIGKILL, so it dies having
seen that step's reply and started nothing after it. ``migrator migrate`` dies at the
matching failpoint ``<step>.called`` (the driver returned, the outcome not yet journaled)
and then ``migrator recover`` runs. For each, after the daemons settle: the source's
state and reason, the destination's, how many copies of the guest run, and the QEMU
processes no daemon owns.

    .venv/bin/python -m tests.libvirt.virsh_crash_table            # both halves
    .venv/bin/python -m tests.libvirt.virsh_crash_table --virsh    # virsh alone

prints the markdown table of ``docs/libvirt.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.libvirt import guests
from tests.libvirt.daemons import Pair, migrate_uri
from tests.libvirt.rpctap import Gate, Tap

STEPS = ("begin", "prepare", "perform", "finish")
PROC = {"begin": 302, "prepare": 303, "perform": 305, "finish": 306}
TITLE = {"begin": "Begin3", "prepare": "Prepare3", "perform": "Perform3", "finish": "Finish3"}
SETTLE_S = 3.0
VIRSH_TIMEOUT_S = 90.0
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Outcome:
    """What one killed client left behind, once the daemons settled."""

    client: str
    step: str
    exit: str
    source: tuple[str, str]
    destination: tuple[str, str]
    stray_qemus: int
    end: str = ""

    @property
    def copies_running(self) -> int:
        return [self.source[0], self.destination[0]].count("running")


HEADER = [
    "killed after",
    "`virsh migrate` leaves: source",
    "destination",
    "`migrator migrate` leaves: source",
    "destination",
    "then `migrator recover`: journal",
    "source",
    "destination",
    "stray QEMU (virsh / migrator)",
]
VIRSH_HEADER = ["killed after", "source", "destination", "copies running", "stray QEMU"]


def _state(state: tuple[str, str]) -> str:
    name, reason = state
    if name == "paused" and reason:
        return f"**paused ({reason})**"
    return f"{name} ({reason})" if reason else name


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def table(virsh: list[Outcome], crashed: list[Outcome], recovered: list[Outcome]) -> str:
    """The side-by-side table: one row per step, ``virsh`` then migrator, killed after it."""
    lines = [_row(HEADER), "|" + "---|" * len(HEADER)]
    for v, c, r in zip(virsh, crashed, recovered, strict=True):
        lines.append(_row([
            TITLE[v.step], _state(v.source), _state(v.destination),
            _state(c.source), _state(c.destination),
            r.end, _state(r.source), _state(r.destination),
            f"{v.stray_qemus} / {r.stray_qemus}",
        ]))  # fmt: skip
    return "\n".join(lines)


def virsh_table(virsh: list[Outcome]) -> str:
    lines = [_row(VIRSH_HEADER), "|" + "---|" * len(VIRSH_HEADER)]
    for v in virsh:
        lines.append(_row([TITLE[v.step], _state(v.source), _state(v.destination),
                           str(v.copies_running), str(v.stray_qemus)]))  # fmt: skip
    return "\n".join(lines)


def _observe(pair: Pair, name: str, client: str, step: str, exit: str, end: str = "") -> Outcome:
    time.sleep(SETTLE_S)
    return Outcome(
        client, step, exit, guests.state(pair.src, name), guests.state(pair.dst, name),
        len(pair.stray_qemus()), end,
    )  # fmt: skip


def _taps(pair: Pair, gate: Gate) -> tuple[Tap, Tap]:
    tag = uuid.uuid4().hex[:8]
    return (
        Tap(pair.root / f"tap-{tag}-src.sock", pair.src.sock, gate),
        Tap(pair.root / f"tap-{tag}-dst.sock", pair.dst.sock, gate),
    )


def virsh_killed_after(pair: Pair, step: str) -> Outcome:
    """Run ``virsh migrate`` through taps and SIGKILL it once ``step``'s reply reached it."""
    name = guests.unique_name("v")
    guests.create(pair.src, name, guests.domain_xml(name))
    gate = Gate()
    src, dst = _taps(pair, gate)
    try:
        argv = ["virsh", "-c", src.uri, "migrate", "--live", name, dst.uri,
                "--migrateuri", migrate_uri()]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        gate.hold_after(PROC[step], lambda: os.kill(proc.pid, signal.SIGKILL))
        proc.wait(timeout=VIRSH_TIMEOUT_S)
        exit = "SIGKILL" if proc.returncode == -signal.SIGKILL else f"exit {proc.returncode}"
        return _observe(pair, name, "virsh migrate", step, exit)
    finally:
        src.close()
        dst.close()
        for daemon in pair.daemons():
            guests.destroy(daemon, name)


def migrator_killed_at(pair: Pair, step: str, db: str) -> tuple[Outcome, Outcome]:
    """``migrator migrate`` dies at ``<step>.called``; then ``migrator recover`` runs.

    Returns what the crash left behind and what recovery left behind.
    """
    name = guests.unique_name("m")
    guests.create(pair.src, name, guests.domain_xml(name))
    dst_uri = f"{pair.dst.uri}&migrate_uri={migrate_uri()}"
    try:
        crashed = _migrator(db, "migrate", name, "--src", pair.src.uri, "--dst", dst_uri,
                            "--live", failpoint=f"{step}.called")  # fmt: skip
        after_crash = _observe(pair, name, "migrator migrate", step, f"exit {crashed.returncode}")
        recovered = _migrator(db, "recover", "--json")
        end = _end_state(db, name)
        after = _observe(pair, name, "migrator migrate", step, f"exit {recovered.returncode}", end)
        return after_crash, after
    finally:
        for daemon in pair.daemons():
            guests.destroy(daemon, name)


def _migrator(db: str, *args: str, failpoint: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MIGRATOR_DB": db}
    env.pop("MIGRATOR_FAILPOINTS", None)
    if failpoint:
        env["MIGRATOR_FAILPOINTS"] = f"{failpoint}=crash"
    return subprocess.run(
        [sys.executable, "-m", "migrator", *args],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=VIRSH_TIMEOUT_S, check=False,
    )  # fmt: skip


def _end_state(db: str, domain: str) -> str:
    proc = _migrator(db, "list", "--json")
    for row in json.loads(proc.stdout or "[]"):
        if row.get("domain") == domain:
            return str(row.get("state", ""))
    return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--virsh", action="store_true", help="only libvirt's own client")
    args = parser.parse_args(argv)
    pair = Pair.start()
    virsh: list[Outcome] = []
    crashed: list[Outcome] = []
    recovered: list[Outcome] = []
    try:
        for step in STEPS:
            virsh.append(virsh_killed_after(pair, step))
            if not args.virsh:
                with tempfile.TemporaryDirectory() as tmp:
                    c, r = migrator_killed_at(pair, step, f"sqlite:///{tmp}/j.db")
                crashed.append(c)
                recovered.append(r)
    finally:
        pair.stop()
    print(virsh_table(virsh) if args.virsh else table(virsh, crashed, recovered))
    return 0


if __name__ == "__main__":
    sys.exit(main())
