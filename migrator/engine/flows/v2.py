"""Protocol v2 (libvirt's ``virDomainMigrateVersion2``): DumpXML, Prepare2, Perform, Finish2.

DumpXML on the source, Prepare2 on the destination, Perform on the source, which ends the
source copy itself once the domain was sent (and resumes it on failure), then Finish2 on
the destination with the outcome of Perform as its ``cancelled`` flag. Kept because
drivers may speak only v2; it can lose the domain, which v3 was made to prevent: once
Perform ended the source, a destination that does not start the domain leaves it running
nowhere (``LOST``). The rules make it as safe as it can be (docs/protocols.md): a failed
Perform is judged by probing the source (gone means sent: forward; running means not
sent: back); a failing Finish2 is retried, then the destination is probed before anything
is declared lost (``FAILED_FINISH``); where no probe can tell, the migration waits
``IN_DOUBT``.

A failed step does not get a state of its own: its error event keeps the intent state, and
recovery from that state does what the failure rule does, after looking at the last event.
v1 (``flows/v1.py``) is this flow with the differences declared there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, cast

from migrator.drivers.api import OlderDriver
from migrator.engine import reasons
from migrator.engine.flows.base import (
    ABANDONED,
    Action,
    Engine,
    FinishVerdict,
    Plan,
    Then,
    judge_finish,
    last_event,
    set_reason_if_none,
    waits_for_operator,
)
from migrator.engine.run import Outcome, Run
from migrator.records import Event, EventDraft, EventKind, Migration
from migrator.states import State, Step, Trigger

FAILED_FINISH: dict[tuple[FinishVerdict, bool], tuple[Then, str]] = {
    (FinishVerdict.RUNS, False): (Then.FORWARD, ""),
    (FinishVerdict.RUNS, True): (
        Then.GIVE_UP,
        "{step}(cancelled=1) failed and the destination runs the domain",
    ),
    (FinishVerdict.CANNOT_TELL, False): (
        Then.GIVE_UP,
        "{step} failed, the destination cannot be probed, and Perform had ended the source",
    ),
    (FinishVerdict.ABSENT, False): (
        Then.LOST,
        "{step} failed and the destination does not run the domain ({state}); Perform had"
        " ended the source: the domain is lost",
    ),
    (FinishVerdict.CANNOT_TELL, True): (Then.BACK, ""),
    (FinishVerdict.ABSENT, True): (Then.BACK, ""),
}
"""Every Finish attempt raised: by what the destination says and ``cancelled``. With
``cancelled`` the source resumed itself when Perform failed (or never stopped): it is the
copy, whatever the destination may still hold."""

FINISHED: dict[tuple[bool, bool], tuple[Trigger, str | None]] = {
    (False, True): (Trigger.CONFIRMED, None),
    (False, False): (
        Trigger.DOMAIN_LOST,
        "{step}: the destination did not start the domain, and Perform had ended the"
        " source: the domain is lost",
    ),
    (True, True): (Trigger.GIVE_UP, "{step}(cancelled=1) still reports the domain running:"
                   " broken driver"),
    (True, False): (Trigger.ROLLED_BACK, None),
}  # fmt: skip
"""Finish answered, by ``(cancelled, running)``: the end and its reason (None for a
rollback: the cause it had)."""


class V2Flow:
    """Protocol v2 as data (its steps, states, texts) and the rules over them."""

    protocol: ClassVar[int] = 2
    describe: ClassVar[Step | None] = Step.DUMP_XML
    prepare_step: ClassVar[Step] = Step.PREPARE2
    perform_step: ClassVar[Step] = Step.PERFORM2
    finish_step: ClassVar[Step] = Step.FINISH2
    ok: ClassVar[dict[Step, Trigger]] = {
        Step.DUMP_XML: Trigger.DUMP_XML_OK,
        Step.PREPARE2: Trigger.PREPARE2_OK,
        Step.PERFORM2: Trigger.PERFORM2_OK,
    }
    failed: ClassVar[dict[Step, Trigger]] = {
        Step.DUMP_XML: Trigger.DUMP_XML_FAILED,
        Step.PREPARE2: Trigger.PREPARE2_FAILED,
        Step.PERFORM2: Trigger.PERFORM2_FAILED,
        Step.FINISH2: Trigger.FINISH2_FAILED,
    }
    start_finish: ClassVar[Trigger] = Trigger.START_FINISH2
    preparing: ClassVar[tuple[State, ...]] = (State.PREPARING2, State.PREPARED2)
    performing: ClassVar[State] = State.PERFORMING2
    performed: ClassVar[State] = State.PERFORMED2
    finishing: ClassVar[State] = State.FINISHING2
    abortable: ClassVar[frozenset[State]] = frozenset(
        {State.DUMPING, State.DUMPED, State.PREPARING2, State.PREPARED2, State.PERFORMING2}
    )
    describing: ClassVar[tuple[State, ...]] = (State.DUMPING, State.DUMPED)
    back_text: ClassVar[str] = "Finish2(cancelled=1)"
    finish_text: ClassVar[str] = "Finish2(cancelled=0)"
    cleanup_plan: ClassVar[Plan] = Plan(
        Action.CANCEL_WITH_CLEANUP,
        "Finish2(cancelled=1) on the destination; the source never stopped",
        True,
    )

    # -- the steps ---------------------------------------------------------------------

    def drive(self, e: Engine, run: Run) -> None:
        """Run a new migration: describe, Prepare, then Perform and Finish."""
        if self.describe is not None and not self._describe(e, run, self.describe):
            return  # FAILED: DumpXML changes nothing
        step, description = self.prepare_step, self.description(run)
        dst = cast(OlderDriver, run.dst)  # negotiation saw it offer v2 or v1
        draft = EventDraft(kind=EventKind.INTENT, step=step, description=description)
        hook = lambda ctx: dst.prepare2(ctx, run.params, description)
        out = e.steps.step(run, draft, hook, self.failed[step])
        if not out.ok:
            self.after_prepare_failed(e, run)
            return
        run.uri, run.cookie = out.value.uri, out.value.cookie
        e.writes.outcome(
            run, self.ok[step], step, out, cookie_out=run.cookie, uri=run.uri, then=True
        )
        self.perform(e, run)

    def _describe(self, e: Engine, run: Run, step: Step) -> bool:
        src = cast(OlderDriver, run.src)
        draft = EventDraft(kind=EventKind.INTENT, step=step)
        hook = lambda ctx: src.dump_xml(ctx, run.params)
        out = e.steps.step(run, draft, hook, self.failed[step])
        if not out.ok:
            return False
        run.description = out.value.description
        e.writes.outcome(run, self.ok[step], step, out, description=run.description, then=True)
        return True  # Prepare's intent follows

    def description(self, run: Run) -> str | None:
        """What Prepare is given of the domain."""
        return run.description

    def after_prepare_failed(self, e: Engine, run: Run) -> None:
        """A lost reply may have created the incoming copy: clean the destination."""
        self.finish(e, run, cancelled=True)

    def perform(self, e: Engine, run: Run, *, attempt: int = 1, replay: bool = False) -> None:
        """Perform, then Finish forward, or judge the failure by probing the source."""
        step, cookie, uri = self.perform_step, run.cookie, run.uri
        src = cast(OlderDriver, run.src)
        draft = EventDraft(
            kind=EventKind.INTENT, step=step, cookie_in=cookie, uri=uri, attempt=attempt
        )
        hook = lambda ctx: src.perform2(ctx, run.params, cookie, uri)
        out = e.steps.step(run, draft, hook, self.failed[step], replay=replay)
        if not out.ok:
            self.after_perform(e, run, failed=True)
            return
        run.cookie = out.value.cookie
        e.writes.outcome(
            run, self.ok[step], step, out, cookie_out=run.cookie, attempt=attempt,
            detail=dict(out.value.stats) or None, then=True,
        )  # fmt: skip
        self.finish(e, run, cancelled=False)

    def after_perform(self, e: Engine, run: Run, *, failed: bool, attempt: int = 1) -> None:
        """Perform failed, or the coordinator died during it: what did the source do?

        Gone, or a completed transfer: the domain was sent, so only forward (Finish,
        cancelled=0). Still there after a failure (or an abort): it resumed, so back. Still
        there after a crash: replay Perform under its journaled intent. No answer: IN_DOUBT.
        """
        probe = e.steps.probe(run, run.src, run.params.domain)
        if probe is None:
            e.writes.give_up(run, f"{self.perform_step} failed and the source cannot be probed")
            return
        sent = probe.transfers.get(run.migration.id) == "completed"
        if sent or not probe.state.active:
            self.finish(e, run, cancelled=False)
        elif failed or run.migration.abort_requested:
            self.back(e, run)
        else:
            self.perform(e, run, attempt=attempt + 1, replay=True)

    def back(self, e: Engine, run: Run) -> None:
        """Before Perform ended the source: clean the destination."""
        self.finish(e, run, cancelled=True)

    def finish(
        self, e: Engine, run: Run, *, cancelled: bool, first_attempt: int = 1, replay: bool = False
    ) -> None:
        """Finish, retried by the retry policy; its outcome ends the migration. The calls
        are the intent's ``call``, run by the machine once the intent committed."""

        def call() -> None:
            self._finish_calls(e, run, cancelled=cancelled, first_attempt=first_attempt)

        if replay:
            call()
            return
        draft = EventDraft(
            kind=EventKind.INTENT, step=self.finish_step, cookie_in=run.cookie,
            cancelled=cancelled, attempt=first_attempt,
        )  # fmt: skip
        e.writes.intent(run, self.start_finish, draft, call=call)

    def _finish_calls(self, e: Engine, run: Run, *, cancelled: bool, first_attempt: int) -> None:
        step, cookie = self.finish_step, run.cookie
        dst = cast(OlderDriver, run.dst)
        cause = run.migration.reason
        hook = lambda ctx: dst.finish2(ctx, run.params, cookie, cancelled)
        tries = e.retry.start(first_attempt)
        while True:
            out = e.steps.call(run, step, hook, attempt=tries.number)
            if out.ok:
                self._finished(e, run, out, cancelled=cancelled, attempt=tries.number, cause=cause)
                return
            e.writes.outcome(
                run, self.failed[step], step, out, cancelled=cancelled, attempt=tries.number
            )
            if tries.last:
                break
            tries.next()
        self.after_finish_failed(e, run, cancelled=cancelled, cause=cause)

    def _finished(
        self, e: Engine, run: Run, out: Outcome, *, cancelled: bool, attempt: int,
        cause: str | None,
    ) -> None:  # fmt: skip
        running = bool(out.value.running)
        trigger, text = FINISHED[(cancelled, running)]
        reason = cause if trigger is Trigger.ROLLED_BACK else _format(text, self.finish_step)
        e.writes.outcome(
            run, trigger, self.finish_step, out, reason=reason, cookie_out=out.value.cookie,
            cancelled=cancelled, attempt=attempt, detail={"running": running},
        )  # fmt: skip

    def after_finish_failed(
        self, e: Engine, run: Run, *, cancelled: bool, cause: str | None
    ) -> None:
        """Every Finish attempt raised: ask the destination before declaring anything."""
        probe = e.steps.probe(run, run.dst, run.params.dest_name)
        then, text = FAILED_FINISH[(judge_finish(probe), cancelled)]
        reason = _format(text, self.finish_step, probe.state if probe else None)
        if then is Then.FORWARD:
            e.writes.decided(run, Trigger.CONFIRMED, None, end="CONFIRMED", by="probe")
        elif then is Then.GIVE_UP:
            e.writes.give_up(run, reason or "")
        elif then is Then.LOST:
            e.writes.decided(run, Trigger.DOMAIN_LOST, reason, end="LOST", by="probe")
        else:
            reason = reasons.cleanup_failed(cause or "cancelled", run.dst.uri)
            e.writes.decided(run, Trigger.ROLLED_BACK, reason, end="ROLLED_BACK", by="probe")

    def resolve(self, e: Engine, run: Run, running_on: str) -> None:
        """``dst``: the destination runs it, so CONFIRMED; ``src``: back."""
        if running_on == "dst":
            e.writes.decided(run, Trigger.RESOLVE_DST, None, end="CONFIRMED", resolved="dst")
        else:
            self.back(e, run)

    # -- recovery ------------------------------------------------------------------------

    def carry_out(self, e: Engine, run: Run, plan: Plan) -> None:
        """Do what ``plan`` says (``plan`` is this flow's)."""
        action = self._actions().get(plan.action)
        if action is not None:
            action(e, run, plan)

    def _actions(self) -> dict[Action, Callable[[Engine, Run, Plan], Any]]:
        return {
            Action.ABANDON: self._abandon,
            Action.CANCEL_WITH_CLEANUP: self._cancel,
            Action.PROBE_PERFORM: lambda e, run, p: self.after_perform(
                e, run, failed=False, attempt=p.attempt
            ),
            Action.AFTER_PERFORM_FAILED: lambda e, run, p: self.after_perform(
                e, run, failed=True, attempt=p.attempt
            ),
            Action.FINISH: lambda e, run, p: self.finish(e, run, cancelled=False),
            Action.REPLAY_FINISH: lambda e, run, p: self.finish(
                e, run, cancelled=bool(p.cancelled), first_attempt=p.attempt, replay=True
            ),
        }

    def _abandon(self, e: Engine, run: Run, plan: Plan) -> None:
        draft = EventDraft(kind=EventKind.RECOVERY, detail={"action": "abandon"})
        trigger = Trigger.ABANDON if run.state is State.NEW else Trigger.FAIL
        reason = run.migration.reason or "abandoned: nothing was changed"
        e.writes.transition(run, trigger, draft, reason=reason)

    def _cancel(self, e: Engine, run: Run, plan: Plan) -> None:
        set_reason_if_none(e, run)
        self.back(e, run)

    def plan(self, migration: Migration, history: Sequence[Event]) -> Plan:
        """Back before Perform, judge Perform by the source, forward after it."""
        state = migration.state
        if state is State.NEW:
            return ABANDONED
        if state in self.describing:
            return Plan(Action.ABANDON, "FAILED: DumpXML changed nothing on the source")
        if state in self.preparing:
            return self.cleanup_plan
        if state is self.performing:
            return self._performing_plan(history)
        if state is self.performed:
            return Plan(Action.FINISH, f"{self.finish_text}: its outcome ends the migration", False)
        if state is self.finishing:
            return self._finishing_plan(history)
        return waits_for_operator(state)

    def _performing_plan(self, history: Sequence[Event]) -> Plan:
        last = last_event(history, self.perform_step)
        attempt = last.attempt if last else 1
        if last is not None and last.kind == EventKind.ERROR:
            return Plan(
                Action.AFTER_PERFORM_FAILED,
                "probe the source after Perform failed: forward with Finish if it is gone,"
                f" else {self.back_text}",
                attempt=attempt,
            )
        return Plan(
            Action.PROBE_PERFORM,
            "probe the source: forward with Finish if it sent the domain or is gone,"
            f" else replay Perform ({self.back_text} if an abort was asked)",
            attempt=attempt,
        )

    def _finishing_plan(self, history: Sequence[Event]) -> Plan:
        intent = last_event(history, self.finish_step, EventKind.INTENT)
        last = last_event(history, self.finish_step)
        cancelled = bool(intent and intent.cancelled)
        attempt = (last.attempt if last else 1) + 1
        name = "Finish2(cancelled=1)" if cancelled else self.finish_text
        return Plan(Action.REPLAY_FINISH, f"replay {name}", cancelled, attempt)


def _format(text: str | None, step: Step, state: object = None) -> str | None:
    return None if text is None else text.format(step=step, state=state)
