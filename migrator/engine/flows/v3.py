"""Protocol v3 (and tunnelled v3): Begin, Prepare, Perform, Finish, Confirm.

The failure rules (docs/states.md): a failure before Perform's outcome cancels (Finish
with ``cancelled=1`` cleans the destination, Confirm with ``cancelled=1`` resumes the
source); after it, only forward, and a Finish that raised is judged by probing the
destination (``FAILED_FINISH``). Recovery plans (docs/recovery.md): back before the point
of no return, forward after it, replaying an interrupted step with its journaled inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, cast

from migrator.drivers.api import TunnelledDriver
from migrator.engine import reasons
from migrator.engine.flows import postcopy, v3_plans, v3_tunnel
from migrator.engine.flows.base import (
    Action,
    Engine,
    FinishVerdict,
    Plan,
    Then,
    crash_reason,
    judge_finish,
    set_reason_if_none,
)
from migrator.engine.retry import Attempts
from migrator.engine.run import Outcome, Run
from migrator.errors import AbortRequested, CoordinatorCrashed, DriverError
from migrator.records import (
    KEEP_REASON,
    Event,
    EventDraft,
    EventKind,
    Migration,
    Reason,
    StepContext,
)
from migrator.states import State, Step, Trigger

ABORTED = "aborted by an operator"
NOT_STARTED = "finish: the destination did not start the domain"
BROKEN = "Finish(cancelled=1) still reports the domain running on the destination: broken driver"
POSTCOPY_NOT_RUNNING = (
    "finish after post-copy: the destination does not run the domain, and the source holds"
    " only the pages it had at the switch (kept paused); find where the guest's state is,"
    " then `migrator resolve`"
)


FAILED_FINISH: dict[tuple[FinishVerdict, bool], tuple[Then, str]] = {
    (FinishVerdict.RUNS, False): (Then.FORWARD, ""),
    (FinishVerdict.RUNS, True): (
        Then.GIVE_UP,
        "Finish(cancelled=1) failed and the destination runs the domain",
    ),
    (FinishVerdict.CANNOT_TELL, False): (
        Then.GIVE_UP,
        "Finish failed and the destination cannot be probed; the source is kept paused",
    ),
    (FinishVerdict.ABSENT, False): (Then.BACK, ""),
    (FinishVerdict.CANNOT_TELL, True): (Then.BACK, ""),
    (FinishVerdict.ABSENT, True): (Then.BACK, ""),
}
"""A Finish that raised, by what the destination says and ``cancelled``. libvirt kills the
source here "even though that may leave no VM at all"; v3 never acts on a guess."""


# -- the steps -------------------------------------------------------------------------


def drive(e: Engine, run: Run) -> None:
    if not begin(e, run):
        return
    if not prepare(e, run) or not perform(e, run):
        if run.postcopy:  # switched: the failure paused post-copy, only forward
            forward(e, run)
        else:
            finish(e, run, cancelled=True)
        return
    if not run.migration.abort_requested:  # as of the last commit
        try:  # Perform's outcome commits with this intent, unless an abort is requested
            finish(e, run, cancelled=False, unless_aborted=True)
            return
        except AbortRequested:
            pass  # Perform's outcome committed alone, the intent not
    # Aborted while the data went: still before the point of no return.
    e.writes.note(run, EventDraft(kind=EventKind.ABORT, step=Step.PERFORM), reason=ABORTED)
    finish(e, run, cancelled=True)


def begin(e: Engine, run: Run) -> bool:
    draft = EventDraft(kind=EventKind.INTENT, step=Step.BEGIN)
    hook = lambda ctx: run.src.begin(ctx, run.params)
    out = e.steps.step(run, draft, hook, Trigger.BEGIN_FAILED)
    if not out.ok:
        return False
    run.description, run.cookie = out.value.description, out.value.cookie
    e.writes.outcome(
        run, Trigger.BEGIN_OK, Step.BEGIN, out, cookie_out=run.cookie,
        description=run.description, then=True,
    )  # fmt: skip
    return True


def prepare(e: Engine, run: Run) -> bool:
    """Prepare, or for a tunnelled migration PrepareTunnel3 (same states, own step)."""
    cookie, description = run.cookie, run.description
    step = Step.PREPARE_TUNNEL if run.tunnelled else Step.PREPARE
    draft = EventDraft(kind=EventKind.INTENT, step=step, cookie_in=cookie, description=description)
    hook: Callable[[StepContext], Any]
    if run.tunnelled:
        dst = cast(TunnelledDriver, run.dst)
        hook = lambda ctx: dst.prepare_tunnel(ctx, run.params, cookie, description)
    else:
        hook = lambda ctx: run.dst.prepare(ctx, run.params, cookie, description)
    out = e.steps.step(run, draft, hook, Trigger.PREPARE_FAILED)
    if not out.ok:
        return False
    if run.tunnelled:
        run.stream, run.uri = out.value.stream, ""
    else:
        run.uri = out.value.uri
    run.cookie = out.value.cookie
    e.writes.outcome(
        run, Trigger.PREPARE_OK, step, out, cookie_out=run.cookie, uri=run.uri or None, then=True
    )
    return True


def perform(e: Engine, run: Run, *, attempt: int = 1, replay: bool = False) -> bool:
    """Perform; ``replay`` calls it again under its journaled intent (recovery)."""
    cookie, uri = run.cookie, run.uri
    draft = EventDraft(
        kind=EventKind.INTENT, step=Step.PERFORM, cookie_in=cookie, uri=uri or None, attempt=attempt
    )
    hook: Callable[[StepContext], Any]
    if run.tunnelled:
        hook = lambda ctx: v3_tunnel.relay(ctx, run, cookie, replay=replay)
    else:
        hook = lambda ctx: run.src.perform(ctx, run.params, cookie, uri)
        if postcopy.capable(run) and not replay:
            hook = postcopy.watched(e, run, hook)
    out = e.steps.step(run, draft, hook, Trigger.PERFORM_FAILED, replay=replay)
    run.switcher = None
    if not out.ok:
        return False
    run.cookie = out.value.cookie
    detail = {**out.value.stats, "recovered": True} if replay else dict(out.value.stats)
    e.writes.outcome(
        run, Trigger.PERFORM_OK, Step.PERFORM, out, cookie_out=run.cookie, attempt=attempt,
        detail=detail or None, then=True,
    )  # fmt: skip
    return True


def finish(
    e: Engine,
    run: Run,
    *,
    cancelled: bool,
    attempt: int = 1,
    replay: bool = False,
    tries: Attempts | None = None,
    unless_aborted: bool = False,
) -> None:
    """Finish, then Confirm as its outcome says (``after_finish``), or the failure rules.

    ``unless_aborted``: ``AbortRequested`` if an abort is requested when the intent
    commits; nothing of Finish happened then."""
    cookie = run.cookie
    draft = EventDraft(
        kind=EventKind.INTENT,
        step=Step.FINISH,
        cookie_in=cookie,
        cancelled=cancelled,
        attempt=attempt,
    )
    hook = lambda ctx: run.dst.finish(ctx, run.params, cookie, cancelled)
    out = e.steps.step(
        run, draft, hook, Trigger.FINISH_FAILED, replay=replay, unless_aborted=unless_aborted
    )
    if not out.ok:
        after_finish_failed(e, run, cancelled=cancelled, attempt=attempt, tries=tries)
        return
    running = bool(out.value.running)
    run.cookie = out.value.cookie
    e.writes.outcome(
        run, Trigger.FINISH_OK, Step.FINISH, out, cookie_out=run.cookie, cancelled=cancelled,
        attempt=attempt, detail={"running": running}, then=True,
    )  # fmt: skip
    after_finish(e, run, cancelled=cancelled, running=running)


def after_finish(e: Engine, run: Run, *, cancelled: bool, running: bool) -> None:
    """Finish answered: Confirm(0) if the destination runs the domain, else Confirm(1)."""
    if cancelled and running and run.resolved_on == "src":
        e.writes.give_up(run, reasons.operator_disagrees(run.migration.id))
    elif cancelled and running:
        e.writes.give_up(run, BROKEN)
    elif running:
        confirm(e, run, cancelled=False)
    elif run.postcopy and not cancelled:  # never back after the switch
        e.writes.give_up(run, POSTCOPY_NOT_RUNNING)
    elif cancelled:
        confirm(e, run, cancelled=True)
    else:
        confirm(e, run, cancelled=True, reason=NOT_STARTED)


def after_finish_failed(
    e: Engine, run: Run, *, cancelled: bool, attempt: int, tries: Attempts | None = None
) -> None:
    """Finish raised: ask the destination, then do what ``FAILED_FINISH`` says.

    A cleanup (cancelling) Finish that keeps failing is retried by the retry policy; if it
    never succeeds the source, the only copy that ever ran, is resumed all the same and the
    reason says what the destination may still hold.
    """
    probe = e.steps.probe(run, run.dst, run.params.dest_name)
    then, text = FAILED_FINISH[(judge_finish(probe), cancelled)]
    if run.postcopy and not cancelled and then is not Then.FORWARD:
        then, text = Then.GIVE_UP, POSTCOPY_NOT_RUNNING
    if then is Then.FORWARD:
        confirm(e, run, cancelled=False)
    elif then is Then.GIVE_UP:
        e.writes.give_up(run, text)
    elif not cancelled:
        finish(e, run, cancelled=True)
    else:
        _retry_cleanup(e, run, tries or e.retry.start(1, at=attempt))


def _retry_cleanup(e: Engine, run: Run, tries: Attempts) -> None:
    if tries.last:
        # A cancelling Finish never started the domain, so the source is the only copy.
        reason = reasons.cleanup_failed(run.migration.reason, run.dst.uri)
        confirm(e, run, cancelled=True, reason=reason)
        return
    finish(e, run, cancelled=True, attempt=tries.next(), tries=tries)


def confirm(e: Engine, run: Run, *, cancelled: bool, reason: Reason = KEEP_REASON) -> None:
    cause = run.migration.reason if reason is KEEP_REASON else reason
    draft = EventDraft(
        kind=EventKind.INTENT, step=Step.CONFIRM, cookie_in=run.cookie, cancelled=cancelled,
        detail={"reason": cause} if cancelled and cause else None,
    )  # fmt: skip
    call = lambda: confirm_with_retries(e, run, cancelled=cancelled)
    e.writes.intent(run, Trigger.START_CONFIRM, draft, reason=reason, call=call)


def confirm_with_retries(
    e: Engine, run: Run, *, cancelled: bool, first_attempt: int = 1, cause: Reason = KEEP_REASON
) -> None:
    """Call Confirm (its intent is journaled) until it succeeds or the attempts run out,
    after which the migration stays CONFIRMING for ``recover`` to finish.

    A rollback ends with ``cause`` as its reason (by default the reason at the start):
    the failures of Confirm attempts explain a stuck migration, not a rollback.
    """
    cookie = run.cookie
    cause = run.migration.reason if cause is KEEP_REASON else cause
    hook = lambda ctx: run.src.confirm(ctx, run.params, cookie, cancelled)
    tries = e.retry.start(first_attempt)
    while True:
        attempt = tries.number
        out = e.steps.call(run, Step.CONFIRM, hook, attempt=attempt)
        if out.ok:
            trigger = Trigger.ROLLED_BACK if cancelled else Trigger.CONFIRMED
            e.writes.outcome(
                run, trigger, Step.CONFIRM, out, cookie_out=out.value.cookie,
                cancelled=cancelled, attempt=attempt,
                reason=cause if cancelled else None,  # a success clears retry noise
                detail=getattr(out.value, "detail", None) or None,  # what else the host did
            )  # fmt: skip
            return
        last = tries.last
        reason = reasons.step_failed(Step.CONFIRM, out.error or DriverError()) + (
            f" (after {attempt} attempts; `migrator recover` retries it)" if last else ""
        )
        e.writes.outcome(
            run, Trigger.CONFIRM_FAILED, Step.CONFIRM, out, cancelled=cancelled,
            attempt=attempt, reason=reason,
        )  # fmt: skip
        if last:
            return
        tries.next()


def resolve(e: Engine, run: Run, running_on: str) -> None:
    """``src``: clean the destination, then resume the source; ``dst``: Confirm(0)."""
    run.resolved_on = running_on
    if running_on == "src":
        finish(e, run, cancelled=True)
        return
    draft = EventDraft(
        kind=EventKind.INTENT, step=Step.CONFIRM, cookie_in=run.cookie, cancelled=False
    )
    e.writes.transition(run, Trigger.RESOLVE, draft)
    confirm_with_retries(e, run, cancelled=False)


def forward(e: Engine, run: Run, *, attempt: int = 1, replay: bool = False) -> None:
    """After the switch: resume post-copy until every page is sent, then Finish(0)."""
    if postcopy.carry_on(e, run, attempt=attempt, replay=replay):
        finish(e, run, cancelled=False)


# -- recovery ----------------------------------------------------------------------------


def recover_perform(e: Engine, run: Run, attempt: int) -> None:
    """A crash during Perform: forward if the source says the transfer completed.

    Perform is then replayed under its journaled intent: the hook is idempotent, so it
    returns the result of the transfer that completed, and Finish gets Perform's cookie.
    """
    probe = e.steps.probe(run, run.src, run.params.domain)
    if probe is not None and probe.transfers.get(run.migration.id) == "completed":
        forward = perform(e, run, attempt=attempt, replay=True)
        finish(e, run, cancelled=not forward)
        return
    crash = CoordinatorCrashed(step="perform", detail="the source reports no completed transfer")
    e.writes.outcome(run, Trigger.PERFORM_FAILED, Step.PERFORM, Outcome(error=crash))
    finish(e, run, cancelled=True)


def cancel_with_cleanup(e: Engine, run: Run) -> None:
    if run.state is State.PERFORMING:  # aborted, then crashed: Perform did not finish
        crash = CoordinatorCrashed(step="perform", detail="an abort was requested")
        e.writes.outcome(run, Trigger.PERFORM_FAILED, Step.PERFORM, Outcome(error=crash))
    set_reason_if_none(e, run)
    finish(e, run, cancelled=True)


def _confirm_as_planned(e: Engine, run: Run, plan: Plan) -> None:
    if plan.cancelled:
        confirm(e, run, cancelled=True, reason=run.migration.reason or NOT_STARTED)
    else:
        confirm(e, run, cancelled=False)


def _abandon(e: Engine, run: Run, plan: Plan) -> None:
    draft = EventDraft(kind=EventKind.RECOVERY, detail={"action": "abandon"})
    e.writes.transition(run, Trigger.ABANDON, draft, reason="abandoned before Begin")


CARRY_OUT: dict[Action, Callable[[Engine, Run, Plan], None]] = {
    Action.ABANDON: _abandon,
    Action.CANCEL: lambda e, run, p: confirm(e, run, cancelled=True, reason=crash_reason(run)),
    Action.CANCEL_WITH_CLEANUP: lambda e, run, p: cancel_with_cleanup(e, run),
    Action.PROBE_PERFORM: lambda e, run, p: recover_perform(e, run, p.attempt),
    Action.FINISH: lambda e, run, p: finish(e, run, cancelled=False),
    Action.REPLAY_FINISH: lambda e, run, p: finish(
        e, run, cancelled=bool(p.cancelled), attempt=p.attempt, replay=True
    ),
    Action.AFTER_FINISH_FAILED: lambda e, run, p: after_finish_failed(
        e, run, cancelled=bool(p.cancelled), attempt=p.attempt
    ),
    Action.CONFIRM: _confirm_as_planned,
    Action.GIVE_UP: lambda e, run, p: e.writes.give_up(run, p.text),
    Action.REPLAY_CONFIRM: lambda e, run, p: confirm_with_retries(
        e,
        run,
        cancelled=bool(p.cancelled),
        first_attempt=p.attempt,
        cause=p.reason or KEEP_REASON,
    ),
    Action.POSTCOPY_RESUME: lambda e, run, p: forward(e, run, attempt=p.attempt),
    Action.POSTCOPY_REPLAY_RESUME: lambda e, run, p: forward(
        e, run, attempt=p.attempt, replay=True
    ),
    Action.NONE: lambda e, run, p: None,
}
"""Each recovery action of ``plan``, carried out."""


class V3Flow:
    """Protocol v3, as the coordinator drives it (see :class:`flows.base.Flow`)."""

    protocol: ClassVar[int] = 3
    abortable: ClassVar[frozenset[State]] = frozenset(
        {State.NEW, State.BEGINNING, State.BEGUN, State.PREPARING, State.PREPARED,
         State.PERFORMING}
    )  # fmt: skip

    def drive(self, engine: Engine, run: Run) -> None:
        drive(engine, run)

    def plan(self, migration: Migration, history: Sequence[Event]) -> Plan:
        return v3_plans.plan(migration, history)

    def carry_out(self, engine: Engine, run: Run, plan: Plan) -> None:
        CARRY_OUT[plan.action](engine, run, plan)

    def resolve(self, engine: Engine, run: Run, running_on: str) -> None:
        resolve(engine, run, running_on)
