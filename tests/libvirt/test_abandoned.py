"""A libvirt driver call the engine abandoned (``ctx.stopped()``: its timeout passed, or
its lease was refused after a takeover) sends no call that changes a host, at any step,
nor in the settling of Confirm or in Perform's controls (docs/workers.md, "Fencing").

The namespaced system hosts of ``netns.py``, each behind an RPC tap that records every
call the driver sends, over ``qemu+tcp://``, ``qemu+tls://`` and ``qemu+ssh://`` in turn
(``nettap.py``): what the driver does is read from the wire, and what the hosts hold from
the daemons themselves.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from migrator.drivers.api import MigrationParams
from migrator.drivers.libvirt.driver import LibvirtDriver
from migrator.drivers.libvirt.procedures import Proc
from migrator.drivers.libvirt.watch import PerformWatch
from migrator.errors import StepAbandoned
from migrator.flags import MigrateFlags
from migrator.records import Control, ControlKind, StepContext
from migrator.states import Step
from tests.libvirt import guests
from tests.libvirt.daemons import free_port
from tests.libvirt.netns import NsPair
from tests.libvirt.nettap import net_tapped
from tests.libvirt.rpctap import Gate

pytestmark = pytest.mark.usefixtures("libvirt_driver")

CHANGES_HOST = frozenset({
    Proc.DOMAIN_MIGRATE_BEGIN3_PARAMS, Proc.DOMAIN_MIGRATE_PREPARE3_PARAMS,
    Proc.DOMAIN_MIGRATE_PERFORM3_PARAMS, Proc.DOMAIN_MIGRATE_FINISH3_PARAMS,
    Proc.DOMAIN_MIGRATE_CONFIRM3_PARAMS, Proc.DOMAIN_DESTROY, Proc.DOMAIN_UNDEFINE_FLAGS,
    Proc.DOMAIN_RESUME, Proc.DOMAIN_SUSPEND, Proc.DOMAIN_ABORT_JOB,
    Proc.DOMAIN_MIGRATE_SET_MAX_DOWNTIME, Proc.DOMAIN_MIGRATE_SET_MAX_SPEED,
})  # fmt: skip


@dataclass
class Tapped:
    """A source and a destination driver, each behind a tap of one ``gate``."""

    pair: NsPair
    name: str
    gate: Gate
    src: LibvirtDriver
    dst: LibvirtDriver
    params: MigrationParams
    mid: str = field(default_factory=lambda: str(uuid.uuid4()))

    def ctx(self, step: Step, *, stopped: bool = False) -> StepContext:
        return StepContext(self.mid, step, fence=1, stopped=lambda: stopped)

    def mark(self) -> int:
        """Where the calls sent from now on start in ``gate.seen``."""
        return len(self.gate.seen)

    def changes_since(self, mark: int) -> list[str]:
        """The calls that change a host sent since ``mark``, by name."""
        return [Proc(proc).name for kind, proc, _ in self.gate.seen[mark:]
                if kind == "call" and proc in CHANGES_HOST]  # fmt: skip

    def states(self) -> tuple[tuple[str, str], tuple[str, str]]:
        return guests.state(self.pair.a, self.name), guests.state(self.pair.b, self.name)  # type: ignore[arg-type]

    def restart(self) -> None:
        """New drivers for the same migration, the old connections gone (a crash)."""
        for driver in (self.src, self.dst):
            driver.close()
        self.src, self.dst = LibvirtDriver(self.src.uri), LibvirtDriver(self.dst.uri)


@pytest.fixture
def tapped(ns_pair: NsPair, ns_guest: str, transport: str) -> Iterator[Tapped]:
    gate = Gate()
    migrate_uri = f"tcp://{ns_pair.b.addr}:{free_port()}"
    with net_tapped(ns_pair, transport, gate, migrate_uri) as (src_uri, dst_uri):
        params = MigrationParams(domain=ns_guest, flags=MigrateFlags.LIVE)
        made = Tapped(ns_pair, ns_guest, gate, LibvirtDriver(src_uri), LibvirtDriver(dst_uri),
                      params)  # fmt: skip
        try:
            yield made
        finally:
            made.src.close()
            made.dst.close()


def begin(t: Tapped) -> tuple[bytes, str]:
    begun = t.src.begin(t.ctx(Step.BEGIN), t.params)
    return begun.cookie, begun.description


def prepare(t: Tapped) -> tuple[bytes, str]:
    cookie, description = begin(t)
    prepared = t.dst.prepare(t.ctx(Step.PREPARE), t.params, cookie, description)
    return prepared.cookie, prepared.uri


def perform(t: Tapped) -> bytes:
    cookie, uri = prepare(t)
    return t.src.perform(t.ctx(Step.PERFORM), t.params, cookie, uri).cookie


def finish(t: Tapped) -> bytes:
    finished = t.dst.finish(t.ctx(Step.FINISH), t.params, perform(t), cancelled=False)
    assert finished.running
    return finished.cookie


def abandoned(t: Tapped, call: Callable[[], object]) -> None:
    """``call()`` raises StepAbandoned, sending nothing that changes a host."""
    mark, before = t.mark(), t.states()
    with pytest.raises(StepAbandoned):
        call()
    assert t.changes_since(mark) == []
    assert t.states() == before


def test_an_abandoned_begin_starts_no_job(tapped: Tapped) -> None:
    abandoned(tapped, lambda: tapped.src.begin(tapped.ctx(Step.BEGIN, stopped=True), tapped.params))
    assert tapped.states()[0][0] == "running"


def test_an_abandoned_prepare_starts_no_incoming_copy(tapped: Tapped) -> None:
    cookie, description = begin(tapped)
    ctx = tapped.ctx(Step.PREPARE, stopped=True)
    abandoned(tapped, lambda: tapped.dst.prepare(ctx, tapped.params, cookie, description))
    assert tapped.states()[1][0] == "absent"


def test_an_abandoned_perform_sends_nothing(tapped: Tapped) -> None:
    cookie, uri = prepare(tapped)
    ctx = tapped.ctx(Step.PERFORM, stopped=True)
    abandoned(tapped, lambda: tapped.src.perform(ctx, tapped.params, cookie, uri))
    assert tapped.states()[0][0] == "running"


def test_an_abandoned_finish_starts_no_copy(tapped: Tapped) -> None:
    cookie = perform(tapped)
    ctx = tapped.ctx(Step.FINISH, stopped=True)
    abandoned(tapped, lambda: tapped.dst.finish(ctx, tapped.params, cookie, False))
    assert tapped.states()[1][0] == "paused"


@pytest.mark.parametrize("cancelled", [False, True])
def test_an_abandoned_confirm_neither_destroys_nor_resumes_the_source(
    tapped: Tapped, cancelled: bool
) -> None:
    cookie = finish(tapped) if not cancelled else perform(tapped)
    ctx = tapped.ctx(Step.CONFIRM, stopped=True)
    abandoned(tapped, lambda: tapped.src.confirm(ctx, tapped.params, cookie, cancelled))
    assert tapped.states()[0][0] == "paused"


def test_an_abandoned_settled_confirm_leaves_the_source_paused(tapped: Tapped) -> None:
    """After a crash past Perform, Confirm settles from what the source holds: resuming
    it is a change too."""
    cookie = perform(tapped)
    tapped.restart()
    ctx = tapped.ctx(Step.CONFIRM, stopped=True)
    mark = tapped.mark()
    with pytest.raises(StepAbandoned):
        tapped.src.confirm(ctx, tapped.params, cookie, True)
    assert tapped.changes_since(mark) == []
    assert guests.state(tapped.pair.a, tapped.name) == ("paused", "migrating")  # type: ignore[arg-type]


def test_an_abandoned_performs_controls_are_not_made(tapped: Tapped) -> None:
    dom = tapped.src.control().lookup(tapped.name)
    assert dom is not None
    outcomes: list[str | None] = []
    made = threading.Event()

    def done(outcome: str | None) -> None:
        outcomes.append(outcome)
        made.set()

    waiting = [Control(ControlKind.DOWNTIME, 500, done=done)]
    ctx = StepContext(
        tapped.mid, Step.PERFORM, fence=1, stopped=lambda: True,
        controls=lambda: [waiting.pop()] if waiting else [],
    )  # fmt: skip
    watch = PerformWatch(ctx, dom, tapped.src.connect)
    mark = tapped.mark()
    try:
        watch.tick()
        assert made.wait(30)
    finally:
        watch.close()
    assert outcomes[0] is not None and "abandoned" in outcomes[0]
    assert tapped.changes_since(mark) == []
