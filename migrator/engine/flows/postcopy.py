"""Post-copy (docs/postcopy.md): the switch, and carrying a switched migration forward.

The switch is write-ahead like every step: its intent (``POSTCOPY_SWITCHING``) commits
before the source is told to switch, and from that commit on the destination may run the
guest with part of its memory still on the source, so nothing goes back: no cancel, no
abort, no rollback, in the live flow, in recovery and after a takeover. A failure in
post-copy (the stream broke, the coordinator died, a daemon restarted) leaves both hosts
paused; the engine resumes it (``recover_postcopy`` on the destination, then
``resume_postcopy`` on the source) until every page is sent, then Finish(cancelled=0) and
Confirm(cancelled=0). If a side's copy is truly gone, the migration ends ``IN_DOUBT`` with
a reason that says what the operator can do.

``switch(run, reason)`` is the one entry point that starts post-copy: a policy or a
runtime control calls it while the run's Perform is underway.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

from migrator.drivers.api import PerformResult, PostcopyDriver, PostcopyPhase
from migrator.drivers.uri import redact_uri
from migrator.engine.flows.base import Engine
from migrator.engine.retry import RetryPolicy
from migrator.engine.run import Run
from migrator.errors import AbortRequested, DriverError, PostcopyLost, PostcopyUnavailable
from migrator.flags import MigrateFlags
from migrator.records import KEEP_REASON, EventDraft, EventKind, Progress, Reason, StepContext
from migrator.states import POSTCOPY_STATES, State, Step, Trigger

RESUME = RetryPolicy(attempts=30, backoff=0.5, cap=5.0)
"""Resumptions of a paused post-copy: about two minutes in all, so a network cut of tens
of seconds is ridden out without an operator."""

NO_ABORT = (
    "it switched to post-copy: the destination runs the guest with part of its memory"
    " still on the source, so only going forward is safe"
)

Hook = Callable[[StepContext], Any]


def capable(run: Run) -> bool:
    """The migration may switch: ``--flag postcopy`` (refused before Begin where a host
    cannot carry it)."""
    return bool(run.params.flags & MigrateFlags.POSTCOPY)


def switch(run: Run, reason: str) -> bool:
    """Switch ``run`` to post-copy now, write-ahead: the intent commits, the hosts switch,
    the outcome commits. ``reason`` is journaled with the intent (what asked for it).

    True once the intent committed (the migration is then forward-only, whatever the hosts
    answered); False if it cannot switch any more or not yet: no post-copy capable Perform
    is running, it already switched, Perform ended, or an abort is requested. Safe to call
    from any thread while the run's Perform is underway.
    """
    switcher: Switcher | None = run.switcher
    return False if switcher is None else switcher.switch(reason)


def starter(run: Run) -> Callable[[str], None]:
    """The post-copy entry point a convergence applier is given for ``run`` (its policy's
    ``postcopy`` action, an operator's ``migrator postcopy`` request): ``switch``, raising
    ``PostcopyUnavailable`` where it cannot switch (no ``--flag postcopy``, Perform ended,
    already switched, an abort requested)."""

    def start(reason: str) -> None:
        if not switch(run, reason):
            raise PostcopyUnavailable()

    return start


class Switcher:
    """The switch of one run's Perform; ``close`` when Perform's hook returned."""

    def __init__(self, e: Engine, run: Run) -> None:
        self.e, self.run = e, run
        self.lock = threading.Lock()
        self.closed = False
        self.asked = False

    def switch(self, reason: str) -> bool:
        with self.lock:
            run = self.run
            if self.closed or run.state is not State.PERFORMING:
                return False
            draft = EventDraft(kind=EventKind.INTENT, step=Step.POSTCOPY, detail={"reason": reason})
            try:
                self.e.writes.intent(run, Trigger.START_POSTCOPY, draft, unless_aborted=True)
            except AbortRequested:
                return False
            run.postcopy = True
            switch_hosts(self.e, run)
            return True

    def close(self) -> None:
        """Perform's hook returned: no switch from now on (waits for one in flight)."""
        with self.lock:
            self.closed = True

    def progress(self, report: Callable[[Progress], None]) -> Callable[[Progress], None]:
        """Perform's progress sink, with the switch a failpoint may ask for once the
        transfer is underway, and the ``<perform|postcopy>.underway`` crash points."""
        failpoints = self.e.writes.failpoints

        def sink(progress: Progress) -> None:
            report(progress)
            if not failpoints or progress.transferred <= 0:
                return
            failpoints.hit("postcopy" if self.run.postcopy else "perform", "underway")
            if not self.asked and failpoints.asks("perform", "underway", "postcopy"):
                self.asked = True
                self.switch("asked by failpoint perform.underway")

        return sink


def watched(e: Engine, run: Run, hook: Hook) -> Hook:
    """Perform's hook for a post-copy capable migration: ``switch`` works while it runs."""
    switcher = run.switcher = Switcher(e, run)

    def call(ctx: StepContext) -> Any:
        try:
            return hook(replace(ctx, progress=switcher.progress(ctx.progress)))
        finally:
            switcher.close()

    return call


def switch_hosts(e: Engine, run: Run, *, attempt: int = 1) -> bool:
    """The switch's call (its intent is journaled) and its outcome: the source switches,
    then the destination runs the guest. A failure keeps ``POSTCOPY_SWITCHING``."""
    src, dst = _postcopy(run.src), _postcopy(run.dst)

    def hook(ctx: StepContext) -> None:
        src.start_postcopy(ctx, run.params)
        dst.run_postcopy(ctx, run.params)

    out = e.steps.call(run, Step.POSTCOPY, hook, attempt=attempt)
    trigger = Trigger.POSTCOPY_OK if out.ok else Trigger.POSTCOPY_FAILED
    e.writes.outcome(run, trigger, Step.POSTCOPY, out, attempt=attempt)
    return out.ok


def carry_on(e: Engine, run: Run, *, attempt: int = 1, replay: bool = False) -> bool:
    """Forward from any post-copy state until every page is sent (``PERFORMED``: True, the
    caller goes on with Finish(cancelled=0)); False if it ended ``IN_DOUBT`` or the
    resumptions ran out (still ``POSTCOPY_PAUSED``, for ``recover``)."""
    policy = RESUME if e.retry.backoff > 0 else replace(RESUME, backoff=0.0)  # replay, tests
    tries = policy.start(attempt)
    while True:
        out = resume(e, run, tries.number, replay=replay, last=tries.last)
        replay = False
        if out is None:
            return True
        if isinstance(out, PostcopyLost) or run.state not in POSTCOPY_STATES:
            e.writes.give_up(run, lost_reason(run, out))
            return False
        if tries.last:
            return False
        tries.next()


def resume(
    e: Engine, run: Run, attempt: int, *, replay: bool = False, last: bool = False
) -> BaseException | None:
    """One resumption, write-ahead: None once every page is sent (``PERFORMED``), else
    what failed (``POSTCOPY_PAUSED``); the ``last`` one's failure says what comes next."""
    draft = EventDraft(kind=EventKind.INTENT, step=Step.POSTCOPY_RESUME, attempt=attempt)
    reason: Reason = KEEP_REASON
    if last:  # the error is in the outcome's event
        reason = f"post-copy paused after {attempt} resumptions; `migrator recover` resumes it"
    out = e.steps.step(
        run, draft, lambda ctx: resume_hosts(run, ctx), Trigger.POSTCOPY_RESUME_FAILED,
        replay=replay, reason=reason,
    )  # fmt: skip
    if not out.ok:
        return out.error or DriverError("post-copy resumption failed")
    result = cast(PerformResult, out.value)
    run.cookie = result.cookie
    e.writes.outcome(
        run, Trigger.POSTCOPY_RESUME_OK, Step.POSTCOPY_RESUME, out, cookie_out=run.cookie,
        attempt=attempt, detail={**result.stats, "postcopy": True}, then=True,
    )  # fmt: skip
    return None


def resume_hosts(run: Run, ctx: StepContext) -> PerformResult:
    """Ask the source where post-copy is; switch if the journaled switch never reached
    it; recover the destination if paused; resume (or await) the source to the end."""
    src, dst, params = _postcopy(run.src), _postcopy(run.dst), run.params
    phase = src.postcopy_phase(params, ctx.migration_id)
    if phase is PostcopyPhase.LOST:
        raise PostcopyLost(
            domain=params.domain, host=redact_uri(run.src.uri), detail="the source's copy is gone"
        )
    if phase is PostcopyPhase.PRECOPY:  # the intent is journaled: the switch goes ahead
        src.start_postcopy(ctx, params)
        phase = src.postcopy_phase(params, ctx.migration_id)
    uri = dst.recover_postcopy(ctx, params) if phase is PostcopyPhase.PAUSED else ""
    if phase is not PostcopyPhase.COMPLETED:
        dst.run_postcopy(ctx, params)
    return src.resume_postcopy(ctx, params, uri)


def lost_reason(run: Run, error: BaseException) -> str:
    """What an operator can do when post-copy cannot be resumed."""
    return (
        f"post-copy cannot be resumed: {error}; the guest's memory is split between the"
        " hosts and a part is gone, so no host can run it from memory; the source keeps its"
        " part, paused. Restart the guest from its disks; `migrator resolve"
        f" {run.migration.id} --running-on src` then cleans the destination and tries to"
        " resume the source's copy (QEMU refuses to after post-copy)"
    )


def abort_refused(migration_id: str, state: State) -> str:
    return f"migration {migration_id} is {state}: {NO_ABORT}; it cannot be aborted"


def _postcopy(driver: object) -> PostcopyDriver:
    return cast(PostcopyDriver, driver)
