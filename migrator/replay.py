"""Replay: run today's engine against a migration's recorded driver outcomes.

No host is touched. Replay drivers answer each hook call with the outcome the journal
recorded for that step, in order; the coordinator runs on a scratch journal; where the
original run was cut short by a crash (a ``recovery`` event follows), the replay crashes
at the same point (an in-process failpoint) and recovers. The two event sequences are
then compared, step by step: the first difference is where the engine now decides
otherwise than the journal says it did. That is how a new engine is checked against old
journals.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migrator import replayphases
from migrator.drivers.api import (
    BeginResult,
    ConfirmResult,
    DomainState,
    Feature,
    FinishResult,
    MigrationParams,
    PerformResult,
    PostcopyPhase,
    PrepareResult,
    ProbeResult,
    TunnelResult,
)
from migrator.engine.coordinator import Coordinator
from migrator.engine.flows import ABORTABLE
from migrator.errors import DriverError, HostUnreachable, PostcopyLost
from migrator.failpoints import Crash
from migrator.flags import MigrateFlags
from migrator.journal.store import Journal
from migrator.records import (
    OUTCOMES,
    Event,
    EventKind,
    Migration,
    Progress,
    StepContext,
)
from migrator.replayphases import StopPoint
from migrator.states import RUNS_ON, State, Step

Signature = tuple[str | None, str, bool | None, str, int]
"""What replay compares of each event: step, kind, cancelled, state after it, attempt."""


class Exhausted(BaseException):
    """The engine made a call the journal holds no outcome for.

    A BaseException so that it passes the coordinator's handling of driver failures and
    stops the replay where the journal ends (a migration still in flight, say).
    """


def signature(event: Event) -> Signature:
    step = event.step.value if event.step else None
    return (step, event.kind, event.cancelled, event.state.value, event.attempt)


@dataclass(frozen=True)
class ReplayResult:
    migration_id: str
    consistent: bool
    recorded: list[Signature]
    replayed: list[Signature]
    divergence: int | None = None
    """Index of the first differing event, when not consistent."""
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        at = self.divergence
        return {
            "id": self.migration_id,
            "consistent": self.consistent,
            "events": len(self.recorded),
            "divergence": None
            if at is None
            else {
                "seq": at + 1,
                "recorded": _sig_dict(self.recorded[at]) if at < len(self.recorded) else None,
                "replayed": _sig_dict(self.replayed[at]) if at < len(self.replayed) else None,
            },
            "note": self.note,
        }


def _sig_dict(sig: Signature) -> dict[str, Any]:
    step, kind, cancelled, state, attempt = sig
    return {"step": step, "kind": kind, "cancelled": cancelled, "state": state, "attempt": attempt}


class _Tape:
    """The recorded outcomes of one host's hooks, served in order."""

    def __init__(self, events: Sequence[Event], steps: set[Step]) -> None:
        self.outcomes: dict[Step, deque[Event]] = {s: deque() for s in steps}
        for event in events:
            if event.step in self.outcomes and event.kind in OUTCOMES:
                self.outcomes[event.step].append(event)

    def next(self, step: Step) -> Event:
        queue = self.outcomes[step]
        if not queue:
            raise Exhausted(f"the engine calls {step} again; the journal recorded no more")
        return queue.popleft()


def _result(event: Event) -> Event:
    if event.kind == EventKind.ERROR and event.error_type == PostcopyLost.__name__:
        raise PostcopyLost(domain="", host="", detail=event.error_message or "recorded")
    if event.kind == EventKind.ERROR:
        raise DriverError(event.error_message or "recorded error")
    return event


class _NullStream:
    """A tunnel's destination end in a replay: the data went where the journal says."""

    def write(self, data: bytes) -> None:
        return None

    def close(self) -> None:
        return None

    def abort(self) -> None:
        return None


@dataclass
class _Shared:
    """What both hosts of a replay know: whether any hook ran yet (probes before that are
    the coordinator's checks before it journals anything), and the scratch migration id."""

    mid: str
    started: bool = False


class ReplayDriver:
    """A host that answers from the journal. ``probe`` before the run answers as at start."""

    blocking = False  # answers from memory: called inline
    honoured_flags = ~MigrateFlags.NONE  # answers as journaled, whatever the flags were
    checks_fence = True  # acts on no host: nothing for a stale coordinator to harm

    def __init__(
        self, uri: str, tape: _Tape, probes: _Tape, *, start: DomainState, original_id: str
    ) -> None:
        self.uri = uri
        self.tape, self.probes, self.start = tape, probes, start
        self.original_id = original_id
        self.shared = _Shared(mid=original_id)
        self.before_perform_returns: Callable[[str], None] | None = None
        self.switches = False
        """The journal switched to post-copy: Perform reports progress, which switches."""

    def _started(self, ctx: StepContext) -> None:
        """A hook ran: the migration exists, and later probes answer from the journal."""
        self.shared.started, self.shared.mid = True, ctx.migration_id

    def features(self) -> frozenset[Feature]:
        return frozenset(Feature)  # the replay forces the protocol the journal recorded

    # Each hook answers with the next outcome recorded for ``ctx.step``: v3's hooks and the
    # v2/v1 and tunnelled ones that stand for them (DumpXML for Begin, Prepare2 for Prepare,
    # ...) differ only in the step their outcomes are journaled under.

    def _next(self, ctx: StepContext) -> Event:
        self._started(ctx)
        return _result(self.tape.next(ctx.step))

    def begin(self, ctx: StepContext, params: MigrationParams) -> BeginResult:
        e = self._next(ctx)
        return BeginResult(description=e.description or "", cookie=e.cookie_out or b"")

    def prepare(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, description: str | None
    ) -> PrepareResult:
        e = self._next(ctx)
        return PrepareResult(uri=e.uri or "", cookie=e.cookie_out or b"")

    def perform(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, uri: str
    ) -> PerformResult:
        self._started(ctx)
        if self.switches:  # the switch came while Perform ran (``perform.underway``)
            ctx.progress(Progress(total=1, transferred=1, remaining=1))
        e = self._next(ctx)
        if self.before_perform_returns is not None:
            self.before_perform_returns(ctx.migration_id)
        return PerformResult(cookie=e.cookie_out or b"", stats=dict(e.detail or {}))

    def finish(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, cancelled: bool
    ) -> FinishResult:
        e = self._next(ctx)
        running = bool(e.detail and e.detail.get("running"))
        return FinishResult(running=running, cookie=e.cookie_out or b"")

    def confirm(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, cancelled: bool
    ) -> ConfirmResult:
        e = self._next(ctx)
        return ConfirmResult(cookie=e.cookie_out or b"")

    def prepare_tunnel(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, description: str
    ) -> TunnelResult:
        prepared = self.prepare(ctx, params, cookie, description)
        return TunnelResult(stream=_NullStream(), cookie=prepared.cookie)

    def perform_tunnel(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, send: Any
    ) -> PerformResult:
        return self.perform(ctx, params, cookie, "")

    def dump_xml(self, ctx: StepContext, params: MigrationParams) -> BeginResult:
        return self.begin(ctx, params)

    def prepare2(
        self, ctx: StepContext, params: MigrationParams, description: str | None
    ) -> PrepareResult:
        return self.prepare(ctx, params, b"", description)

    perform2 = perform
    finish2 = finish

    # Post-copy: the switch's and the resumptions' outcomes, as journaled (on the source).

    def start_postcopy(self, ctx: StepContext, params: MigrationParams) -> None:
        self._next(ctx)

    def run_postcopy(self, ctx: StepContext, params: MigrationParams) -> None:
        return None

    def postcopy_phase(self, params: MigrationParams, migration_id: str) -> PostcopyPhase:
        return PostcopyPhase.COMPLETED  # the resumption's outcome is journaled as one

    def recover_postcopy(self, ctx: StepContext, params: MigrationParams) -> str:
        return ""

    def resume_postcopy(self, ctx: StepContext, params: MigrationParams, uri: str) -> PerformResult:
        e = self._next(ctx)
        return PerformResult(cookie=e.cookie_out or b"", stats=dict(e.detail or {}))

    def probe(self, domain: str) -> ProbeResult:
        if not self.shared.started:
            return ProbeResult(state=self.start)
        e = self.probes.next(Step.PROBE)
        if e.kind == EventKind.ERROR and "retry_in" in (e.detail or {}):
            # The original asked again after this one: so does the replay.
            raise HostUnreachable(e.error_message or "recorded error")
        e = _result(e)
        detail = e.detail or {}
        inner = detail.get("detail") or {}
        recorded = dict(inner.get("outgoing") or {}) if isinstance(inner, dict) else {}
        # The scratch journal gave the migration a new id; the host knew the original.
        mid = self.shared.mid
        transfers = {(mid if k == self.original_id else k): v for k, v in recorded.items()}
        return ProbeResult(state=DomainState(detail.get("state", "absent")), transfers=transfers)

    def close(self) -> None:
        return None


def _split_tapes(
    migration: Migration, history: Sequence[Event]
) -> tuple[_Tape, _Tape, _Tape, _Tape]:
    src_steps = {step for step, host in RUNS_ON.items() if host == "src"}
    dst_steps = {step for step, host in RUNS_ON.items() if host == "dst"}
    probes = [e for e in history if e.step is Step.PROBE]
    src_uris = {migration.src} | replayphases.moved(history, "src")
    src_probes = [e for e in probes if e.uri in src_uris]
    dst_probes = [e for e in probes if e.uri not in src_uris]
    return (
        _Tape(history, src_steps),
        _Tape(src_probes, {Step.PROBE}),
        _Tape(history, dst_steps),
        _Tape(dst_probes, {Step.PROBE}),
    )


def replay(journal: Journal, migration_id: str) -> ReplayResult:
    """Re-run the engine's decisions for one journaled migration and compare."""
    migration = journal.find(migration_id)
    full = journal.history(migration.id)
    history = replayphases.driven(full)
    if (full and not history) or migration.state is State.QUEUED:
        return ReplayResult(migration.id, True, [], [], None, "never driven: nothing to replay")
    recorded = [signature(e) for e in history]
    with tempfile.TemporaryDirectory(prefix="migrator-replay-") as tmp:
        replayed, note = _rerun(migration, history, Path(tmp) / "replay.db")
    return _compare(migration.id, recorded, replayed, note)


def _rerun(
    migration: Migration, history: Sequence[Event], path: Path
) -> tuple[list[Signature], str | None]:
    src_tape, src_probes, dst_tape, dst_probes = _split_tapes(migration, history)
    paused = bool(migration.flags & MigrateFlags.PAUSED)
    start = DomainState.PAUSED if paused else DomainState.RUNNING
    src = ReplayDriver(migration.src, src_tape, src_probes, start=start, original_id=migration.id)
    dst = ReplayDriver(
        migration.dst, dst_tape, dst_probes, start=DomainState.ABSENT, original_id=migration.id
    )
    dst.shared = src.shared
    phases = replayphases.phases(history)
    stops = [replayphases.stop_point(p, first=i == 0) for i, p in enumerate(phases[:-1])] + [None]
    src.switches = any(e.step is Step.POSTCOPY and e.kind == EventKind.INTENT for e in history)
    with Journal.open(f"sqlite:///{path}") as scratch:
        if any(e.kind == EventKind.ABORT for e in history):
            src.before_perform_returns = lambda mid: _request_abort(scratch, mid)
        try:
            _first_run(scratch, migration, src, dst, stops[0])
            for phase, stop in zip(phases[1:], stops[1:], strict=True):
                _later_run(scratch, src, dst, phase[0], stop)
        except Exhausted as exc:
            return _scratch_signatures(scratch), str(exc)
        return _scratch_signatures(scratch), None


def _request_abort(scratch: Journal, mid: str) -> None:
    """The original was aborted while Perform ran: ask the same of the replay."""
    scratch.request_abort(mid, states=ABORTABLE)


def _first_run(
    scratch: Journal,
    m: Migration,
    src: ReplayDriver,
    dst: ReplayDriver,
    stop: StopPoint | None,
) -> None:
    armed = replayphases.armed(stop, switch=src.switches)
    coordinator = Coordinator(scratch, retry_backoff=0.0, step_timeout=None, failpoints=armed)
    if stop is not None and stop[0] == "created":
        # It died between recording the migration and its first step.
        scratch.create(
            domain=m.domain, src=m.src, dst=m.dst, protocol=m.protocol, flags=m.flags,
            bandwidth=m.bandwidth, owner=coordinator.id, dname=m.dname,
        )  # fmt: skip
        return
    with contextlib.suppress(Crash):  # as the original run did; recovery follows
        coordinator.migrate(
            m.domain, src=src, dst=dst, flags=MigrateFlags(m.flags), dname=m.dname,
            bandwidth=m.bandwidth, protocol=m.protocol,
        )  # fmt: skip


def _later_run(
    scratch: Journal,
    src: ReplayDriver,
    dst: ReplayDriver,
    opening: Event,
    stop: StopPoint | None,
) -> None:
    """A recovery, or an operator's resolve, with the replay drivers as the hosts."""
    hosts = {src.uri: src, dst.uri: dst}
    coordinator = Coordinator(
        scratch,
        retry_backoff=0.0,
        step_timeout=None,
        connect=hosts.__getitem__,
        failpoints=replayphases.armed(stop, switch=src.switches),
    )
    with contextlib.suppress(Crash):
        if opening.kind == EventKind.RESOLVE:
            (migration,) = scratch.list()
            running_on = str((opening.detail or {}).get("running_on", "src"))
            coordinator.resolve(migration.id, running_on=running_on)
        else:
            coordinator.recover(steal=True, workers=1)


def _scratch_signatures(scratch: Journal) -> list[Signature]:
    (migration,) = scratch.list()
    return [signature(e) for e in scratch.history(migration.id)]


def _compare(
    mid: str, recorded: list[Signature], replayed: list[Signature], note: str | None
) -> ReplayResult:
    for index, (a, b) in enumerate(zip(recorded, replayed, strict=False)):
        if a != b:
            return ReplayResult(mid, False, recorded, replayed, index, note)
    if len(recorded) != len(replayed):
        return ReplayResult(mid, False, recorded, replayed, min(len(recorded), len(replayed)), note)
    return ReplayResult(mid, True, recorded, replayed, None, note)
