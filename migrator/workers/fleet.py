"""The workers of a journal as an operator sees them: running, stopping or dead, and
forgetting the rows of dead ones (``migrator workers``, docs/workers.md).

A worker is dead when it provably is (it ran on this host, in this PID namespace, and
its process is gone: a SIGKILL shows at once) or when it has not heartbeat for its lease:
by then every migration it held may be taken over, whatever it is doing. Each worker's
row keeps its lease (schema revision 0008); for the row of an older worker, which keeps
none, the reader's (``workers --lease``) applies. A dead worker's row stays until
forgotten (``forget``).

Every worker must claim under the same limits: a worker whose limits differ from a running
worker's is refused at start (``limits_check``, made in the registration's own
transaction), naming the first limit that differs.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from migrator import limits
from migrator.engine.ownership import owner_is_dead
from migrator.errors import UsageError
from migrator.hostlimits import HostLimits
from migrator.journal.queue import Admit, Queue, WorkerInfo
from migrator.journal.store import Journal


class Status(enum.StrEnum):
    RUNNING = "running"
    STOPPING = "stopping"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class Seen:
    """A worker's row and what it means now."""

    info: WorkerInfo
    status: Status
    silent_for: float
    """Seconds since its last heartbeat."""


def status(info: WorkerInfo, *, lease: float, now: datetime | None = None) -> Seen:
    """What ``info`` means now: silent for its own lease, or ``lease`` seconds if its row
    keeps none, it is dead."""
    silent = ((now or datetime.now(UTC)) - info.heartbeat_at).total_seconds()
    if info.lease_seconds is not None:
        lease = info.lease_seconds
    if silent > lease or owner_is_dead(info.id):
        return Seen(info, Status.DEAD, silent)
    return Seen(info, Status.STOPPING if info.stopping else Status.RUNNING, silent)


def seen(
    journal: Journal, *, lease: float, within: float | None = None, dead: bool = False
) -> list[Seen]:
    """The workers that heartbeat within ``within`` seconds (None: every one), oldest
    first; the dead among them only with ``dead``."""
    limits.seconds(lease, name="lease")
    rows = Queue(journal).workers(alive_within=within)
    found = [status(info, lease=lease) for info in rows]
    return [s for s in found if dead or s.status is not Status.DEAD]


def forget(journal: Journal, ids: Iterable[str] = (), *, lease: float) -> list[str]:
    """Delete the rows of the dead workers ``ids`` (every dead one if none is given);
    the ids forgotten. A worker named that is not dead, or not there, is a UsageError
    and nothing is forgotten."""
    queue = Queue(journal)
    every = {s.info.id: s for s in seen(journal, lease=lease, dead=True)}
    wanted = list(dict.fromkeys(ids))
    for wid in wanted:
        if wid not in every:
            raise UsageError(f"no worker {wid!r} in the journal")
        if every[wid].status is not Status.DEAD:
            raise UsageError(
                f"worker {wid} is {every[wid].status} (heartbeat {every[wid].silent_for:.0f} s"
                " ago): stop it, or wait until it has been silent for a lease"
            )
    targets = wanted or [wid for wid, s in every.items() if s.status is Status.DEAD]
    for wid in targets:
        queue.unregister(wid)
    return targets


def limits_check(worker_id: str, mine: HostLimits, *, lease: float) -> Admit:
    """The check ``Queue.register`` makes of the workers registered, in the registration's
    transaction: ``UsageError`` if ``mine`` differ from a running worker's limits (every
    worker of a journal must claim under the same ones, docs/workers.md)."""

    def check(registered: list[WorkerInfo]) -> None:
        for info in registered:
            other = status(info, lease=lease)
            if info.id == worker_id or info.limits is None or other.status is Status.DEAD:
                continue
            try:
                theirs = HostLimits.from_dict(info.limits)
            except (ValueError, UsageError):
                continue  # a row no worker of this version wrote: nothing to agree with
            diff = mine.difference(theirs)
            if diff is not None:
                raise UsageError(
                    f"this worker's limits differ from those of running worker {info.id}:"
                    f" {diff}; give every worker the same limits"
                )

    return check
