"""The chaos rig for workers: real worker processes on one journal, test hosts with a slow
Perform, a loop that SIGKILLs and SIGSTOPs workers, and the invariants checked afterwards
(docs/workers.md, "What the chaos test proves").

Invariants, from the journal and from what the hosts really hold:

- every migration ended (CONFIRMED, ROLLED_BACK, FAILED) or is IN_DOUBT with its source
  kept paused, and each domain is on exactly one host (``harness.check_hosts``);
- each host's files hold only its domains' images: no copy, partial or whole, of a
  migration that did not end there, though owners are stopped mid-copy past their lease
  and resumed after another worker rolled their migration back;
- every migration's events run 1..N without a gap, and every Confirm's flag agrees with
  what the journal knew of the destination;
- no write under a stale fence: events carry their coordinator, and the fence grows only
  when a coordinator claims the migration, which journals a claim (a ``queue`` event naming
  the worker, or recovery's note naming the previous owner) before anything else. So a
  coordinator's events may begin only at such a claim: a stalled worker that wrote after
  another took over would show up as a change of coordinator without one;
- no host ever had more migrations leaving or entering it than the limits allow, from the
  timelines: a migration holds its hosts from its claim to its end (or hand-back);
- ``replay`` finds every migration consistent.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migrator.drivers.test import TestDriver
from migrator.engine.coordinator import Coordinator
from migrator.inspect import show
from migrator.journal.store import Journal
from migrator.replay import replay
from migrator.states import TERMINAL, State
from tests.crash.harness import (
    Hosts,
    check_confirm_flags,
    check_files,
    check_hosts,
    check_seq,
)

ENDED = {str(s) for s in TERMINAL} | {str(State.IN_DOUBT)}


@dataclass
class Figures:
    migrations: int
    seconds: float = 0.0
    kills: int = 0
    stops: int = 0
    stops_in_perform: int = 0
    states: Counter[str] = field(default_factory=Counter)
    takeovers: int = 0
    max_outgoing: int = 0
    max_incoming: int = 0

    def line(self) -> str:
        states = ", ".join(f"{n} {s}" for s, n in sorted(self.states.items()))
        return (
            f"{self.migrations} migrations in {self.seconds:.1f} s; {self.kills} SIGKILLs,"
            f" {self.stops} SIGSTOP/SIGCONTs ({self.stops_in_perform} of an owner in Perform);"
            f" {self.takeovers} takeovers; {states};"
            f" at most {self.max_outgoing} leaving and {self.max_incoming} entering a host"
        )


@dataclass
class Rig:
    """Worker processes on ``url`` and six test hosts under ``root``."""

    url: str
    root: Path
    lease: float = 2.0
    poll: float = 0.2
    concurrency: int = 4
    limit: int = 2
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    started: int = 0

    def __post_init__(self) -> None:
        self.hosts = [TestDriver(f"test://{self.root / f'host{i}'}") for i in range(6)]

    def start_worker(self) -> subprocess.Popen[bytes]:
        self.started += 1
        log = (self.root / f"worker{self.started}.log").open("wb")
        cmd = [
            sys.executable, "-m", "migrator", "--db", self.url, "worker",
            "--concurrency", str(self.concurrency),
            "--max-outgoing", str(self.limit), "--max-incoming", str(self.limit),
            "--lease", str(self.lease), "--poll", str(self.poll), "--timeout", "60",
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs.append(proc)
        return proc

    def submit(self, count: int, *, perform: float, bandwidth: int = 0) -> list[str]:
        """``count`` migrations of 1 MiB domains; Perform waits ``perform`` s, then copies
        at ``bandwidth`` MiB/s (a copy of 1 s at 1: a stop lands mid-copy)."""
        for host in self.hosts:
            host.set_fault("perform", "slow", seconds=perform)
        ids = []
        with Journal.open(self.url) as journal:
            coordinator = Coordinator(journal)
            for i in range(count):
                src, dst = self.route(i)
                self.hosts[src].define(f"vm{i}", memory_mib=1)
                m = coordinator.submit(
                    f"vm{i}", src=self.hosts[src], dst=self.hosts[dst], bandwidth=bandwidth
                )
                ids.append(m.id)
            coordinator.close()
        return ids

    @staticmethod
    def route(i: int) -> tuple[int, int]:
        src = i % 6
        return src, (src + 1 + (i // 6) % 5) % 6

    def performing(self) -> list[subprocess.Popen[bytes]]:
        """The worker processes that own a migration in Perform now."""
        with Journal.open(self.url) as journal:
            owners = {m.owner or "" for m in journal.list() if m.state is State.PERFORMING}
        return [p for p in self.alive() if any(f":{p.pid}:" in o for o in owners)]

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def stop_all(self, timeout: float = 60) -> None:
        for p in self.alive():
            os.kill(p.pid, signal.SIGCONT)
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def ended(url: str) -> bool:
    with Journal.open(url) as journal:
        return all(str(m.state) in ENDED for m in journal.list())


def chaos(
    rig: Rig,
    *,
    migrations: int,
    kills: int,
    workers: int = 3,
    perform: float = 0.5,
    bandwidth: int = 1,
    kill_every: float = 1.0,
    stop_every: float = 4.0,
    deadline: float = 80.0,
) -> Figures:
    """Submit, run ``workers`` worker processes under chaos until every migration ended."""
    figures = Figures(migrations)
    rig.submit(migrations, perform=perform, bandwidth=bandwidth)
    try:
        _run(rig, figures, workers, kills, kill_every, stop_every, deadline)
    finally:
        rig.stop_all()
    return figures


def _run(
    rig: Rig,
    figures: Figures,
    workers: int,
    kills: int,
    kill_every: float,
    stop_every: float,
    deadline: float,
) -> None:
    chooser = random.Random(figures.migrations)
    for _ in range(workers):
        rig.start_worker()
    start = time.monotonic()
    next_kill, next_stop = start + kill_every, start + stop_every / 2
    stopped: tuple[subprocess.Popen[bytes], float] | None = None
    while time.monotonic() - start < deadline and not ended(rig.url):
        now = time.monotonic()
        if stopped is not None and now >= stopped[1]:
            os.kill(stopped[0].pid, signal.SIGCONT)
            stopped = None
        candidates = [p for p in rig.alive() if stopped is None or p is not stopped[0]]
        if figures.kills < kills and now >= next_kill and candidates:
            victim = chooser.choice(candidates)
            victim.kill()
            victim.wait()
            rig.start_worker()
            figures.kills += 1
            next_kill = now + kill_every
        elif stopped is None and now >= next_stop and len(candidates) > 1:
            owners = [p for p in rig.performing() if p in candidates]  # stalled mid-copy
            if not owners and now < next_stop + 2.0:
                time.sleep(0.05)  # wait a little for an owner in Perform
                continue
            victim = chooser.choice(owners or candidates)
            figures.stops_in_perform += bool(owners)
            os.kill(victim.pid, signal.SIGSTOP)
            stopped = (victim, now + rig.lease + 1.0)
            figures.stops += 1
            next_stop = now + stop_every
        time.sleep(0.1)
    figures.seconds = time.monotonic() - start


def check_all(rig: Rig, figures: Figures) -> Figures:
    """Every invariant of the module docstring; the figures completed from the journal."""
    with Journal.open(rig.url) as journal:
        shown = [show(journal, m.id) for m in journal.list()]
        for m in shown:
            figures.states[m["state"]] += 1
            check_migration(rig, m)
            result = replay(journal, m["id"])
            assert result.consistent, result.as_dict()
    for host in rig.hosts:
        check_files(host)
    figures.takeovers = sum(
        1 for m in shown for e in m["events"] if "previous_owner" in (e["detail"] or {})
    )
    figures.max_outgoing, figures.max_incoming = peak_load(shown)
    assert figures.max_outgoing <= rig.limit and figures.max_incoming <= rig.limit, figures
    return figures


def check_migration(rig: Rig, m: dict[str, Any]) -> None:
    assert m["state"] in ENDED, f"{m['id']} not ended: {m['state']} ({m['reason']})"
    check_seq(m)
    check_confirm_flags(m)
    i = int(m["domain"][2:])
    src, dst = rig.route(i)
    check_hosts(m, Hosts(rig.hosts[src], rig.hosts[dst]))
    others = [h for k, h in enumerate(rig.hosts) if k not in (src, dst)]
    assert all(m["domain"] not in {d["name"] for d in h.domains()} for h in others)
    check_claims(m)


def check_claims(m: dict[str, Any]) -> None:
    """A coordinator's events begin only at its claim (see the module docstring)."""
    previous = None
    for e in m["events"]:
        if e["coordinator"] != previous:
            detail = e["detail"] or {}
            claim = "claimed_by" in detail or "previous_owner" in detail or "requeued_by" in detail
            assert claim, f"{m['id']}: event {e['seq']} by {e['coordinator']} without a claim"
            previous = e["coordinator"]


def peak_load(shown: list[dict[str, Any]]) -> tuple[int, int]:
    """The most migrations that held one host at once, leaving and entering, from the
    timelines: from each claim to the end (or hand-back) that followed it."""
    changes: list[tuple[str, int, str, str]] = []  # (time, +1/-1, src, dst); ends sort first
    for m in shown:
        held_since = None
        for e in m["events"]:
            detail = e["detail"] or {}
            if "claimed_by" in detail:
                held_since = e["at"]
            elif held_since is not None and (e["state"] in ENDED or e["state"] == "QUEUED"):
                changes += [(held_since, 1, m["src"], m["dst"]), (e["at"], -1, m["src"], m["dst"])]
                held_since = None
        assert held_since is None, f"{m['id']} still held at the end"
    out: Counter[str] = Counter()
    into: Counter[str] = Counter()
    most_out = most_in = 0
    for _at, delta, src, dst in sorted(changes):
        out[src] += delta
        into[dst] += delta
        most_out, most_in = max(most_out, out[src]), max(most_in, into[dst])
    return most_out, most_in
