"""The write-ahead layer: the only code that writes a migration's state (docs/journal.md).

For each step: (1) the intent is committed, with every input the step will use; (2) the
driver hook is called (``steps.py``); (3) the outcome is committed with the next state. A
state change and its event are one transaction (``Journal.record``, a compare-and-set on
state and fence). A successful outcome the flow goes on from at once (``then=True``) is
*staged* and commits in one transaction with the next intent (``Journal.record_changes``):
both are durable before the next hook is called and before anything observes the outcome,
with one commit instead of two (docs/journal.md, "Commits"). Likewise a new migration's
row is written with its first intent (``Run.unwritten``). Nothing staged outlives the
run: the next write carries it, or ``flush`` commits it alone. An armed
``<step>.recorded`` failpoint commits that outcome alone, so a crash between the two
commits, which older journals hold, stays testable and replayable.

Every state change is a trigger fired on the migration's model of the ``transitions``
machine (``fire``; ``machine.machine()``, built from the one state table). The machine
checks the trigger (``IllegalTransition`` before anything is written or called), then
calls its ``write`` callback, which is this module's commit (or staging) of the change;
only when that succeeded does the machine's state change, and then its ``call`` callback
runs the work an intent was fired with: the step's driver hook (``Steps.step``), and for
Confirm its retries. A step that recovery calls again under an intent already journaled
fires nothing: there is no change of state to make. Notes, which change no state,
commit without a trigger. Hooks are never called here: they are given the committed
events by the coordinator's delivery thread (``delivery.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from migrator.engine import reasons
from migrator.engine.run import Outcome, Run
from migrator.errors import AbortRequested
from migrator.failpoints import Failpoints
from migrator.journal.store import Journal
from migrator.machine import Machine, machine
from migrator.records import KEEP_REASON, Change, EventDraft, EventKind, Reason
from migrator.states import STATE_OF, Step, Trigger


def noted(draft: EventDraft) -> str:
    """The failpoint name of a note: ``probe.noted``, ``recovery.noted``, ..."""
    return str(draft.step or draft.kind)


class WriteAhead:
    """Commits intents, outcomes, notes and transitions for one coordinator."""

    def __init__(
        self,
        journal: Journal,
        coordinator_id: str,
        failpoints: Failpoints,
        *,
        states: Machine | None = None,
    ) -> None:
        self.journal = journal
        self.coordinator_id = coordinator_id
        self.failpoints = failpoints
        self.machine = states or machine()

    def fire(
        self,
        run: Run,
        trigger: Trigger,
        draft: EventDraft,
        *,
        reason: Reason = KEEP_REASON,
        stage: bool = False,
        unless_aborted: bool = False,
        call: Callable[[], None] | None = None,
    ) -> None:
        """Fire ``trigger`` on ``run``'s model: the machine checks it, then its ``write``
        callback commits ``draft`` with the new state (or stages it, ``stage``), and once
        the state changed its ``call`` callback runs ``call``."""
        model = run.model
        if model is None:
            model = run.model = self.machine.acquire(run.state, engine=self, run=run)
            run.machine = self.machine
        self.machine.fire(
            model,
            trigger,
            draft=draft,
            reason=reason,
            stage=stage,
            unless_aborted=unless_aborted,
            call=call,
        )

    def write(self, run: Run, event: Any) -> None:
        """The machine's ``write`` callback, before the state changes: the write-ahead commit
        of the trigger's event with the transition's destination."""
        kwargs = event.kwargs
        change = Change(kwargs["draft"], STATE_OF[event.transition.dest], kwargs["reason"])
        if kwargs["stage"]:
            run.staged.append(change)
        else:
            self._commit(run, change, unless_aborted=kwargs["unless_aborted"])

    def intent(
        self,
        run: Run,
        trigger: Trigger,
        draft: EventDraft,
        *,
        reason: Reason = KEEP_REASON,
        unless_aborted: bool = False,
        call: Callable[[], None] | None = None,
    ) -> None:
        """Commit a step's intent (``draft.step``); then the machine runs ``call``, the
        step's hook.

        ``unless_aborted``: the intent holds only if no abort is requested when it commits
        (Finish going forward); if one is, what was staged commits alone, the intent does
        not, nothing is called, and ``AbortRequested`` is raised for the flow to cancel
        instead."""
        step = draft.step
        assert step is not None

        def then() -> None:
            self.failpoints.hit(step, "intent")
            if call is not None:
                call()

        self.fire(run, trigger, draft, reason=reason, unless_aborted=unless_aborted, call=then)

    def outcome(
        self,
        run: Run,
        trigger: Trigger,
        step: Step,
        out: Outcome,
        *,
        reason: Reason = KEEP_REASON,
        then: bool = False,
        **fields: Any,
    ) -> None:
        """Commit what ``step``'s hook gave; a failure's reason says which step and why.

        ``then``: the flow's next write is the next step's intent; a success is staged to
        commit with it (see the module docstring).

        A failed cleanup (a cancelling call) keeps the reason the migration already has:
        the failure being cleaned up after is the cause, the cleanup's error is in its event.
        """
        if out.ok:
            draft = EventDraft(kind=EventKind.OK, step=step, duration=out.duration, **fields)
            if then and reason is KEEP_REASON and not self.failpoints.covers(step, "recorded"):
                self.fire(run, trigger, draft, stage=True)
                return
        else:
            assert out.error is not None
            draft = EventDraft(
                kind=EventKind.ERROR,
                step=step,
                duration=out.duration,
                error_type=type(out.error).__name__,
                error_message=reasons.error_text(out.error),
                **fields,
            )
            cleaning_up = bool(fields.get("cancelled")) and run.migration.reason is not None
            if reason is KEEP_REASON and not cleaning_up:
                reason = reasons.step_failed(step, out.error)
        self.transition(run, trigger, draft, reason=reason)
        self.failpoints.hit(step, "recorded")

    def transition(
        self, run: Run, trigger: Trigger, draft: EventDraft, *, reason: Reason = KEEP_REASON
    ) -> None:
        """Fire ``trigger``: the event and the new state commit (with whatever is staged
        before it)."""
        self.fire(run, trigger, draft, reason=reason)

    def note(
        self, run: Run, draft: EventDraft, *, reason: Reason = KEEP_REASON, then: bool = False
    ) -> None:
        """Commit an event that does not change the state (a probe, a recovery note).

        ``then``: the run goes on at once; the note is staged like an outcome, to commit
        with the next write, which is durable before any hook is called (``Steps.call``
        flushes)."""
        change = Change(draft, run.state, reason)
        if then and not self.failpoints.covers(noted(draft), "noted"):
            run.staged.append(change)
            return
        self._commit(run, change)
        self.failpoints.hit(noted(draft), "noted")  # replay stops here for a crash after it

    def flush(self, run: Run) -> None:
        """Commit what is staged, alone (the run stops before its next write)."""
        if run.staged or run.unwritten:
            self._commit(run, None)

    def _commit(self, run: Run, change: Change | None, *, unless_aborted: bool = False) -> None:
        staged, run.staged = run.staged, []
        changes = staged if change is None else [*staged, change]
        try:
            migrations = self.journal.record_changes(
                run.migration,
                changes,
                coordinator=self.coordinator_id,
                insert=run.unwritten,
                each=False,
                unless_aborted=unless_aborted,
            )
        except AbortRequested:
            run.staged = staged
            self.flush(run)  # the outcomes it carried are durable before the flow goes on
            raise
        run.unwritten = False
        run.migration = migrations[-1]
        for done in staged:
            if done.draft.kind in (EventKind.OK, EventKind.ERROR):
                assert done.draft.step is not None
                self.failpoints.hit(done.draft.step, "recorded")
            else:
                self.failpoints.hit(noted(done.draft), "noted")

    def give_up(self, run: Run, reason: str) -> None:
        """IN_DOUBT: the engine cannot tell where the domain runs, and stops."""
        self.transition(run, Trigger.GIVE_UP, EventDraft(kind=EventKind.IN_DOUBT), reason=reason)

    def decided(self, run: Run, trigger: Trigger, reason: Reason, **detail: Any) -> None:
        """An end decided without a step of its own (v1/v2: from a probe, or an operator)."""
        draft = EventDraft(kind=EventKind.DECIDED, detail=detail)
        self.transition(run, trigger, draft, reason=reason)
