"""What two namespaced hosts hold of a guest being migrated, sampled while nobody acts:
each side's state and reason (``virsh domstate --reason``) and libvirt job (``virsh
domjobinfo``), whether the busy guest's pass counter advances, whether its memory is
whole, and what ``virsh resume`` says of a paused copy."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from dataclasses import dataclass

from tests import busyguest
from tests.libvirt import guests
from tests.libvirt.daemons import DaemonError
from tests.libvirt.netns import NsHost, NsPair


@dataclass(frozen=True)
class Sample:
    """What both hosts say at one instant."""

    at: float
    source: tuple[str, str]
    destination: tuple[str, str]
    jobs: tuple[str, str]


def job(host: NsHost, name: str) -> str:
    """``virsh domjobinfo``'s job type and operation (``"None"`` when no job runs)."""
    out = host.virsh("domjobinfo", name, check=False, timeout=15)
    fields = dict(
        (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in out.splitlines())
    )
    kind = fields.get("Job type", "-") or "-"
    if kind == "None" or not fields:
        return "none" if fields else "-"
    return f"{kind} ({fields.get('Operation', '?')})"


def sample(pair: NsPair, name: str, since: float) -> Sample:
    a, b = pair.a, pair.b
    return Sample(
        round(time.monotonic() - since, 1), guests.state(a, name), guests.state(b, name),  # type: ignore[arg-type]
        (job(a, name), job(b, name)),
    )  # fmt: skip


def counter(host: NsHost, name: str) -> int | None:
    """The guest's pass counter on ``host``, or None when it cannot be read in time."""
    out = host.home / f"pmem-{uuid.uuid4().hex[:8]}.bin"
    try:
        host.virsh("qemu-monitor-command", name, "--hmp",
                   f'pmemsave {busyguest.COUNTER} 4 "{out}"', timeout=10)  # fmt: skip
        return int.from_bytes(out.read_bytes(), "little")
    except (DaemonError, OSError, subprocess.TimeoutExpired):
        return None
    finally:
        out.unlink(missing_ok=True)


def advancing(host: NsHost, name: str) -> bool:
    first = counter(host, name)
    time.sleep(0.5)
    second = counter(host, name)
    return first is not None and second is not None and second > first


def where_it_runs(pair: NsPair, name: str, last: Sample) -> str:
    if last.destination[0] == "running" and advancing(pair.b, name):
        return "destination"
    if last.source[0] == "running" and advancing(pair.a, name):
        return "source"
    return "nowhere"


def watch(pair: NsPair, name: str, since: float, limit: float, stable: float) -> list[Sample]:
    """Samples until nothing changed for ``stable`` seconds (and no side is in post-copy
    any more) or ``limit`` seconds passed."""
    samples = [sample(pair, name, since)]
    stable_since = time.monotonic()
    while time.monotonic() - since < limit and time.monotonic() - stable_since < stable:
        time.sleep(1.0)
        s = sample(pair, name, since)
        prev = samples[-1]
        moving = "post-copy" in (s.source[1], s.destination[1])  # QEMU still sends pages
        if moving or (s.source, s.destination, s.jobs) != (
            prev.source,
            prev.destination,
            prev.jobs,
        ):
            stable_since = time.monotonic()
        samples.append(s)
    return samples


def try_resume(host: NsHost, name: str) -> str:
    """Ask ``host`` to resume ``name``: ``"resumed"`` if its counter then advances, or the
    error ``virsh`` printed."""
    argv = ["virsh", "-c", host.uri, "resume", name]
    env = {**os.environ, "LC_ALL": "C"}
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False, env=env)
    took = time.monotonic() - started
    if proc.returncode == 0:
        return "resumed" if advancing(host, name) else "resumed, but the guest does not run"
    lines = [x.removeprefix("error: ").strip() for x in proc.stderr.splitlines() if x.strip()]
    return f"fails after {took:.0f} s: {'; '.join(lines) or f'exit {proc.returncode}'}"


def memory_whole(host: NsHost, name: str) -> bool:
    """Pause ``name`` on ``host`` and check that its pages hold one edge of the sweep: no
    page was lost in the move (the guest is destroyed afterwards anyway)."""
    host.virsh("suspend", name, timeout=30)
    start, end = busyguest.REGION
    try:
        return busyguest.one_sweep_edge(guests.read_memory(host, name, start, end - start))  # type: ignore[arg-type]
    except (DaemonError, OSError):
        return False
