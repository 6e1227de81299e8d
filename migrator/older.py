"""Protocols v2 and v1, driven with the coordinator's write-ahead steps (DESIGN §2).

v2 (libvirt's ``virDomainMigrateVersion2``): DumpXML on the source, Prepare2 on the
destination, Perform on the source, which ends the source copy itself once the domain was
sent (and resumes it on failure), then Finish2 on the destination with the outcome of
Perform as its ``cancelled`` flag. v1 is the same without DumpXML (Prepare gets no
description) and without a way to cancel: its Finish is called only after a Perform that
succeeded.

Both are kept because drivers may speak only them; both can lose the domain, which v3 was
made to prevent: once Perform ended the source, a destination that does not start the
domain leaves it running nowhere (``LOST``). This module makes them as safe as they can
be: a failed Perform is judged by probing the source (gone means sent: forward; running
means not sent: back); a failing Finish is retried, then the destination is probed before
anything is declared lost; where no probe can tell, the migration waits ``IN_DOUBT``.

A failed step does not get a state of its own: its error event keeps the intent state, and
recovery from that state does what the failure rule does, after looking at the last event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from migrator import reasons, recovery
from migrator.drivers.base import OlderDriver, redact_uri
from migrator.records import EventDraft
from migrator.states import State, Step, Trigger

if TYPE_CHECKING:
    from migrator.coordinator import Coordinator, Run

PREPARE = {2: Step.PREPARE2, 1: Step.PREPARE1}
PERFORM = {2: Step.PERFORM2, 1: Step.PERFORM1}
FINISH = {2: Step.FINISH2, 1: Step.FINISH1}
FAILED = {
    Step.DUMP_XML: Trigger.DUMP_XML_FAILED,
    Step.PREPARE2: Trigger.PREPARE2_FAILED,
    Step.PERFORM2: Trigger.PERFORM2_FAILED,
    Step.FINISH2: Trigger.FINISH2_FAILED,
    Step.PREPARE1: Trigger.PREPARE1_FAILED,
    Step.PERFORM1: Trigger.PERFORM1_FAILED,
    Step.FINISH1: Trigger.FINISH1_FAILED,
}
OK = {
    Step.DUMP_XML: Trigger.DUMP_XML_OK,
    Step.PREPARE2: Trigger.PREPARE2_OK,
    Step.PERFORM2: Trigger.PERFORM2_OK,
    Step.PREPARE1: Trigger.PREPARE1_OK,
    Step.PERFORM1: Trigger.PERFORM1_OK,
}

NO_CANCEL_V1 = (
    "protocol v1 cannot cancel on the destination: an incoming copy that never ran may remain on "
)


def drive(c: Coordinator, run: Run) -> None:
    """Run a new migration with v2 or v1, as ``run.protocol`` says."""
    src = cast(OlderDriver, run.src)  # negotiation saw it offer v2 or v1
    dst = cast(OlderDriver, run.dst)
    if run.protocol == 2:
        draft = EventDraft(kind="intent", step=Step.DUMP_XML)
        out = c._step(
            run, draft, lambda ctx: src.dump_xml(ctx, run.params), Trigger.DUMP_XML_FAILED
        )
        if not out.ok:
            return  # FAILED: DumpXML changes nothing
        run.description = out.value.description
        c._outcome(run, Trigger.DUMP_XML_OK, Step.DUMP_XML, out, description=run.description)
    step = PREPARE[run.protocol]
    description = run.description if run.protocol == 2 else None
    draft = EventDraft(kind="intent", step=step, description=description)
    out = c._step(run, draft, lambda ctx: dst.prepare2(ctx, run.params, description), FAILED[step])
    if not out.ok:
        if run.protocol == 2:
            finish(c, run, cancelled=True)  # a lost reply may have created the incoming copy
        # v1: PREPARE1_FAILED is FAILED already.
        return
    run.uri, run.cookie = out.value.uri, out.value.cookie
    c._outcome(run, OK[step], step, out, cookie_out=run.cookie, uri=run.uri)
    perform(c, run)


def perform(c: Coordinator, run: Run, *, attempt: int = 1, replay: bool = False) -> None:
    """Perform, then Finish forward, or judge the failure by probing the source."""
    step, cookie, uri = PERFORM[run.protocol], run.cookie, run.uri
    src = cast(OlderDriver, run.src)  # negotiation saw it offer v2 or v1
    draft = EventDraft(kind="intent", step=step, cookie_in=cookie, uri=uri, attempt=attempt)
    out = c._step(
        run,
        draft,
        lambda ctx: src.perform2(ctx, run.params, cookie, uri),
        FAILED[step],
        replay=replay,
    )
    if not out.ok:
        after_perform(c, run, failed=True)
        return
    run.cookie = out.value.cookie
    c._outcome(
        run, OK[step], step, out, cookie_out=run.cookie, attempt=attempt,
        detail=dict(out.value.stats) or None,
    )  # fmt: skip
    finish(c, run, cancelled=False)


def after_perform(c: Coordinator, run: Run, *, failed: bool, attempt: int = 1) -> None:
    """Perform failed, or the coordinator died during it: what did the source do?

    Gone, or a completed transfer: the domain was sent, so only forward (Finish, cancelled=0).
    Still there after a failure (or an abort): it resumed, so back. Still there after a
    crash: replay Perform under its journaled intent. No answer: IN_DOUBT.
    """
    probe = c._probe(run, run.src, run.params.domain)
    if probe is None:
        c._give_up(run, f"{PERFORM[run.protocol]} failed and the source cannot be probed")
        return
    sent = probe.transfers.get(run.migration.id) == "completed"
    if sent or not probe.state.active:
        finish(c, run, cancelled=False)
    elif failed or run.migration.abort_requested:
        back(c, run)
    else:
        perform(c, run, attempt=attempt + 1, replay=True)


def back(c: Coordinator, run: Run) -> None:
    """Before Perform ended the source: clean the destination (v2), or end FAILED (v1)."""
    if run.protocol == 2:
        finish(c, run, cancelled=True)
        return
    cause = run.migration.reason or "cancelled"
    reason = reasons.with_note(cause, NO_CANCEL_V1 + redact_uri(run.dst.uri))
    c._transition(
        run, Trigger.FAIL, EventDraft(kind="decided", detail={"end": "FAILED"}), reason=reason
    )


def finish(
    c: Coordinator, run: Run, *, cancelled: bool, first_attempt: int = 1, replay: bool = False
) -> None:
    """Finish2 (or v1's Finish) with retries; its outcome ends the migration."""
    step, cookie = FINISH[run.protocol], run.cookie
    dst = cast(OlderDriver, run.dst)
    if not replay:
        draft = EventDraft(
            kind="intent", step=step, cookie_in=cookie, cancelled=cancelled,
            attempt=first_attempt,
        )  # fmt: skip
        c._intent(run, Trigger.START_FINISH2 if run.protocol == 2 else Trigger.START_FINISH1, draft)
    cause = run.migration.reason
    last = first_attempt + c.confirm_attempts - 1
    for attempt in range(first_attempt, last + 1):
        out = c._validated(
            step,
            c._call(
                run, step, lambda ctx: dst.finish2(ctx, run.params, cookie, cancelled),
                attempt=attempt,
            ),
        )  # fmt: skip
        if out.ok:
            _finished(c, run, step, out, cancelled=cancelled, attempt=attempt, cause=cause)
            return
        assert out.error is not None
        c._outcome(
            run, FAILED[step], step, out, cancelled=cancelled, attempt=attempt,
            reason=reasons.step_failed(step, out.error),
        )  # fmt: skip
        if attempt < last:
            c._backoff(attempt - first_attempt + 1)
    after_finish_failed(c, run, cancelled=cancelled, cause=cause)


def _finished(
    c: Coordinator, run: Run, step: Step, out: Any, *, cancelled: bool, attempt: int,
    cause: str | None,
) -> None:  # fmt: skip
    running = bool(out.value.running)
    fields: dict[str, Any] = {
        "cookie_out": out.value.cookie, "cancelled": cancelled, "attempt": attempt,
        "detail": {"running": running},
    }  # fmt: skip
    if running and not cancelled:
        c._outcome(run, Trigger.CONFIRMED, step, out, reason=None, **fields)
    elif not cancelled:
        reason = (
            f"{step}: the destination did not start the domain, and Perform had ended the"
            " source: the domain is lost"
        )
        c._outcome(run, Trigger.DOMAIN_LOST, step, out, reason=reason, **fields)
    elif not running:
        c._outcome(run, Trigger.ROLLED_BACK, step, out, reason=cause, **fields)
    else:
        reason = f"{step}(cancelled=1) still reports the domain running: broken driver"
        c._outcome(run, Trigger.GIVE_UP, step, out, reason=reason, **fields)


def after_finish_failed(c: Coordinator, run: Run, *, cancelled: bool, cause: str | None) -> None:
    """Every Finish attempt raised: ask the destination before declaring anything."""
    step = FINISH[run.protocol]
    probe = c._probe(run, run.dst, run.params.dest_name)
    if probe is not None and probe.state.active:
        if cancelled:
            c._give_up(run, f"{step}(cancelled=1) failed and the destination runs the domain")
        else:
            draft = EventDraft(kind="decided", detail={"end": "CONFIRMED", "by": "probe"})
            c._transition(run, Trigger.CONFIRMED, draft, reason=None)
        return
    if cancelled:
        # The source resumed itself when Perform failed (or never stopped): it is the copy.
        reason = reasons.cleanup_failed(cause or "cancelled", run.dst.uri)
        draft = EventDraft(kind="decided", detail={"end": "ROLLED_BACK", "by": "probe"})
        c._transition(run, Trigger.ROLLED_BACK, draft, reason=reason)
        return
    if probe is None:
        c._give_up(
            run,
            f"{step} failed, the destination cannot be probed, and Perform had ended the source",
        )
        return
    reason = (
        f"{step} failed and the destination does not run the domain ({probe.state}); Perform"
        " had ended the source: the domain is lost"
    )
    draft = EventDraft(kind="decided", detail={"end": "LOST", "by": "probe"})
    c._transition(run, Trigger.DOMAIN_LOST, draft, reason=reason)


def resolve(c: Coordinator, run: Run, *, running_on: str) -> None:
    """An operator's decision for an IN_DOUBT v1/v2 migration (the note is journaled)."""
    if running_on == "dst":
        draft = EventDraft(kind="decided", detail={"end": "CONFIRMED", "resolved": "dst"})
        c._transition(run, Trigger.RESOLVE_DST, draft, reason=None)
    elif run.protocol == 2:
        finish(c, run, cancelled=True)
    else:
        back(c, run)


def carry_out(c: Coordinator, run: Run, plan: recovery.Plan) -> None:
    """A recovery plan of ``recovery.plan_older`` (v1, v2)."""
    action, cancelled = plan.action, bool(plan.cancelled)
    if action is recovery.Action.ABANDON:
        draft = EventDraft(kind="recovery", detail={"action": "abandon"})
        trigger = Trigger.ABANDON if run.state is State.NEW else Trigger.FAIL
        c._transition(
            run, trigger, draft, reason=run.migration.reason or "abandoned: nothing was changed"
        )
    elif action is recovery.Action.CANCEL_WITH_CLEANUP:
        c._set_reason_if_none(run)
        back(c, run)
    elif action is recovery.Action.PROBE_PERFORM:
        after_perform(c, run, failed=False, attempt=plan.attempt)
    elif action is recovery.Action.AFTER_PERFORM_FAILED:
        after_perform(c, run, failed=True, attempt=plan.attempt)
    elif action is recovery.Action.FINISH:
        finish(c, run, cancelled=False)
    elif action is recovery.Action.REPLAY_FINISH:
        finish(c, run, cancelled=cancelled, first_attempt=plan.attempt, replay=True)
