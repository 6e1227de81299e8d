"""A hook the engine stopped waiting for is told to stop (``ctx.stopped``), and its host
writes are refused: it changes nothing after the migration went on without it
(docs/workers.md, "Fencing")."""

from __future__ import annotations

import time
from pathlib import Path

from migrator.drivers.api import MigrationParams, PerformResult
from migrator.drivers.test import TestDriver
from migrator.engine.coordinator import Coordinator
from migrator.journal.store import Journal
from migrator.records import StepContext
from migrator.states import State


class Recording(TestDriver):
    """A test host that keeps the context of every Perform it is called with."""

    contexts: list[StepContext]

    def perform(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, uri: str
    ) -> PerformResult:
        self.contexts.append(ctx)
        return super().perform(ctx, params, cookie, uri)


def test_a_timed_out_perform_is_told_to_stop_and_changes_nothing_after(tmp_path: Path) -> None:
    src = Recording(f"test://{tmp_path / 'a'}")
    dst = TestDriver(f"test://{tmp_path / 'b'}")
    src.contexts = []
    src.define("vm1", memory_mib=1)
    src.set_fault("perform", "slow", seconds=1.5)  # outlives its timeout, then acts
    with Journal.open(f"sqlite:///{tmp_path / 'journal.db'}") as journal:
        coordinator = Coordinator(journal, step_timeout=0.5)
        try:
            m = coordinator.migrate("vm1", src=src, dst=dst)
        finally:
            coordinator.close()
    assert m.state is State.ROLLED_BACK
    [ctx] = src.contexts
    assert ctx.stopped()
    time.sleep(1.5)  # the abandoned call wakes up meanwhile, and is refused
    assert [(d["name"], d["state"], d["job"]) for d in src.domains()] == [("vm1", "running", None)]
    assert dst.domains() == []
    images = dst.dir / "images"
    assert not images.exists() or list(images.iterdir()) == []
