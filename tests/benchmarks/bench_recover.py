"""``recover`` at scale: orphaned migrations in mixed states, brought to a safe end.

The orphans are made through the public API: coordinators armed with ``raise``
failpoints (``MIGRATOR_FAILPOINTS``, read when a ``Coordinator`` is built) stop in the
middle of a migration as a crash would, at one point each in turn: after an intent is
committed, after a driver hook returned before its outcome is committed, for every step.
Then one ``Coordinator.recover(steal=True)`` (the owners are this live process, so their
migrations are taken over as an operator's ``recover --steal`` would) is timed as a whole,
with the time to its first action: the first commit a hook observes.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

from migrator import Coordinator, Journal, State, connect
from migrator.failpoints import Failpoints

FAILPOINT_ENV = "MIGRATOR_FAILPOINTS"
POINTS = tuple(
    f"{step}.{point}"
    for step in ("begin", "prepare", "perform", "finish", "confirm")
    for point in ("intent", "called")
)
SAFE_ENDS = {State.CONFIRMED, State.ROLLED_BACK, State.FAILED, State.LOST, State.IN_DOUBT}


def _crashed(exc: BaseException) -> bool:
    return type(exc).__name__ == "Crash"  # the failpoint's stand-in for a crash


def make_orphans(journal: Journal, src: Any, dst: Any, count: int) -> int:
    """Leave ``count`` migrations of domains ``vm0..`` from ``src`` to ``dst`` orphaned."""
    made, previous = 0, os.environ.get(FAILPOINT_ENV)
    try:
        for k, point in enumerate(POINTS):
            os.environ[FAILPOINT_ENV] = f"{point}=raise"
            # The engine takes failpoints from its embedder (the CLI reads the environment).
            coordinator = Coordinator(journal, failpoints=Failpoints.from_env())
            share = count * (k + 1) // len(POINTS) - count * k // len(POINTS)
            for _ in range(share):
                try:
                    coordinator.migrate(f"vm{made}", src=src, dst=dst)
                except BaseException as exc:
                    if not _crashed(exc):
                        raise
                made += 1
            coordinator.close()
    finally:
        if previous is None:
            os.environ.pop(FAILPOINT_ENV, None)
        else:
            os.environ[FAILPOINT_ENV] = previous
    return made


def _recover(journal: Journal) -> dict[str, Any]:
    first: list[float] = []

    def hook(_event: Any) -> None:
        if not first:
            first.append(time.perf_counter())

    coordinator = Coordinator(journal, hooks=[hook])
    start = time.perf_counter()
    reports = coordinator.recover(steal=True)
    elapsed = time.perf_counter() - start
    coordinator.close()
    ends = [r.result for r in reports if r.claimed]
    if len(ends) != len(reports) or not set(ends) <= SAFE_ENDS:
        raise AssertionError(f"not every orphan reached a safe end: {sorted(map(str, ends))}")
    return {
        "orphans": len(reports),
        "seconds": elapsed,
        "first_action_s": (first[0] - start) if first else float("nan"),
        "per_migration_ms": 1000 * elapsed / max(1, len(reports)),
    }


def null_hosts(tmp: Path, count: int) -> dict[str, Any]:
    with Journal.open(f"sqlite:///{tmp / f'recover-null-{uuid.uuid4().hex[:8]}.db'}") as journal:
        src, dst = connect(f"null://{uuid.uuid4()}"), connect(f"null://{uuid.uuid4()}")
        for i in range(count):
            src.define(f"vm{i}")  # type: ignore[attr-defined]
        make_orphans(journal, src, dst, count)
        return _recover(journal)


def test_hosts(tmp: Path, count: int) -> dict[str, Any]:
    root = tmp / f"recover-test-{uuid.uuid4().hex[:8]}"
    with Journal.open(f"sqlite:///{root}.db") as journal:
        src, dst = connect(f"test://{root}/a"), connect(f"test://{root}/b")
        for i in range(count):
            src.define(f"vm{i}", memory_mib=1)  # type: ignore[attr-defined]
        make_orphans(journal, src, dst, count)
        return _recover(journal)
