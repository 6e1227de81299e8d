"""The policy applier: runs beside one Perform, never in its way (docs/convergence.md).

While a driver's Perform runs on the hook thread, the applier's own thread:

- reads the latest job statistics the driver reported (``observe``, called from the
  progress callback: it only keeps the sample) and asks the policy's ``Tracker`` what is
  due: a step of the downtime ramp, a stall, an overrun budget, the action;
- every ``REQUEST_POLL`` s reads the runtime requests journaled for the migration by any
  process (``journal/requests.py``) and turns each into a control or a post-copy switch;
- journals what it did (``TUNED``, ``STALLED``, ``OVER_BUDGET``, ``ACTION``, ``REQUEST``
  events, through the journal's write path, in the migration's Perform state) and stamps
  each request applied.

The driver takes the controls at its polls (``ctx.controls()``: a pop from a queue) and
reports each one made through ``Control.done`` (an append): no journal write, no lock
held by a journal call, ever runs in the driver's loop. The action ``abort`` turns
``ctx.aborted()`` true at once. Post-copy is started through the one entry point the
coordinator is given (``start_postcopy(reason)``); without one it is refused.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from migrator.convergence.policy import Action, Policy, Setting, from_dict
from migrator.convergence.tracker import Decision, Kind, Tracker
from migrator.engine.run import Run
from migrator.errors import JournalError, PostcopyUnavailable, StateConflict
from migrator.journal.requests import Requests
from migrator.journal.store import Journal
from migrator.records import (
    Change,
    Control,
    ControlKind,
    EventDraft,
    EventKind,
    Migration,
    Progress,
    Request,
    RequestKind,
)
from migrator.states import POSTCOPY_STATES, TERMINAL, State, Step

log = logging.getLogger(__name__)

TICK = 0.1
REQUEST_POLL = 0.5

BESIDE_PERFORM = frozenset({State.PERFORMING, *POSTCOPY_STATES})
"""The states a note of the applier is journaled in."""

StartPostcopy = Callable[[str], None]
"""Switch the migration to post-copy now, for ``reason``; raises if it cannot."""


def refuse_postcopy(reason: str) -> None:
    """The entry point when none is given: post-copy is refused."""
    raise PostcopyUnavailable()


CONTROL_OF_REQUEST = {
    RequestKind.DOWNTIME: ControlKind.DOWNTIME,
    RequestKind.SPEED: ControlKind.SPEED,
}
SETTING_OF_CONTROL = {
    ControlKind.DOWNTIME: Setting.DOWNTIME,
    ControlKind.SPEED: Setting.SPEED,
    ControlKind.POSTCOPY_SPEED: Setting.POSTCOPY_BANDWIDTH,
    ControlKind.AUTO_CONVERGE: Setting.AUTO_CONVERGE,
    ControlKind.PARALLEL: Setting.PARALLEL,
    ControlKind.PAUSE: Setting.PAUSE,
}


def honoured(driver: object) -> frozenset[Setting]:
    """The policy settings a driver acts on (``honoured_settings``; none if it says none)."""
    found: frozenset[Setting] = getattr(driver, "honoured_settings", frozenset())
    return frozenset(found)


class Applier:
    """Applies ``policy`` and the runtime requests to one Perform of ``migration``."""

    def __init__(
        self,
        journal: Journal,
        coordinator_id: str,
        migration: Migration,
        policy: Policy | None,
        *,
        settings: frozenset[Setting],
        start_postcopy: StartPostcopy = refuse_postcopy,
        step: Step = Step.PERFORM,
    ) -> None:
        self.journal = journal
        self.requests = Requests(journal)
        self.coordinator_id = coordinator_id
        self.migration = migration
        self.policy = policy or Policy()
        self.settings = settings
        self.start_postcopy = start_postcopy
        self.step = step
        self.tracker = Tracker(self.policy)
        self.gave_up: str | None = None
        """Why the policy aborted Perform ("stalled", "over_budget"), or None."""
        self._controls: collections.deque[Control] = collections.deque()
        self._done: collections.deque[tuple[EventDraft, Request | None, str]] = collections.deque()
        self._latest: Progress | None = None
        self._last_pass = 0
        self._boundaries: collections.deque[Progress] = collections.deque()
        self._taken: set[int] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._stopped = False
        self._settle_later: list[tuple[Request, str]] = []
        self._started = 0.0
        self._polled = 0.0

    # -- what the hook thread calls: each returns at once ------------------------------------

    def observe(self, progress: Progress) -> None:
        """Keep the latest sample, and the first of each pass: the remaining bytes at the
        iteration boundary, which stall detection compares (a later sample of the same
        pass would say less)."""
        if progress.passes > self._last_pass:
            self._last_pass = progress.passes
            self._boundaries.append(progress)
        self._latest = progress

    def take(self) -> list[Control]:
        out = []
        while self._controls:
            out.append(self._controls.popleft())
        return out

    def aborted(self) -> bool:
        return self.gave_up is not None

    # -- the applier's own thread ----------------------------------------------------------

    def start(self) -> None:
        """Queue what must be set before the data goes, then start the thread."""
        self._started = time.monotonic()
        policy = self.policy
        if policy.auto_converge:
            self._control(ControlKind.AUTO_CONVERGE, 1, "auto_converge")
        if policy.parallel_connections is not None:
            self._control(ControlKind.PARALLEL, policy.parallel_connections, "parallel")
        if policy.postcopy_bandwidth_mib is not None:
            self._control(ControlKind.POSTCOPY_SPEED, policy.postcopy_bandwidth_mib, "postcopy")
        self._carry_out(self.tracker.decide(0.0, None))
        thread = threading.Thread(target=self._loop, name=f"applier {self.migration.id[:8]}")
        thread.daemon = True
        thread.start()

    def stop(self) -> list[Change]:
        """Perform returned: what is left to journal, for the caller to commit with
        Perform's outcome (one transaction, no write of its own). Waits at most for the
        one note the thread may be writing; the thread then stamps the requests and ends."""
        with self._lock:
            self._stopped = True
            left, self._done = list(self._done), collections.deque()
        self._settle_later = [(r, outcome) for _, r, outcome in left if r is not None]
        self._stop.set()
        return [Change(draft, self.migration.state) for draft, _, _ in left]

    def _loop(self) -> None:
        try:
            while not self._stop.wait(TICK):
                self._round()
            for request, outcome in self._settle_later:
                self.requests.settle(request.id, outcome)
        except JournalError as exc:  # the lease was lost or the journal fails: Perform decides
            log.warning("applier of %s stopped: %s", self.migration.id, exc)

    def _round(self) -> None:
        now = time.monotonic()
        elapsed = now - self._started
        while self._boundaries:
            self._carry_out(self.tracker.decide(elapsed, self._boundaries.popleft()))
        sample, self._latest = self._latest, None
        self._carry_out(self.tracker.decide(elapsed, sample))
        if now - self._polled >= REQUEST_POLL:
            self._polled = now
            for request in self.journal.requests(self.migration.id):
                if request.pending and request.id not in self._taken:
                    self._taken.add(request.id)
                    self._apply(request)
        self._journal_done()

    # -- decisions -------------------------------------------------------------------------

    def _carry_out(self, decisions: list[Decision]) -> None:
        for d in decisions:
            if d.kind is Kind.DOWNTIME:
                self._control(ControlKind.DOWNTIME, d.value, "ramp", **d.detail)
            elif d.kind is Kind.STALLED:
                self._say(EventDraft(kind=EventKind.STALLED, step=self.step, detail=d.detail))
            elif d.kind is Kind.OVER_BUDGET:
                self._say(EventDraft(kind=EventKind.OVER_BUDGET, step=self.step, detail=d.detail))
            else:
                self._act(Action(d.detail["action"]), str(d.detail["why"]))

    def _act(self, action: Action, why: str) -> None:
        detail: dict[str, Any] = {"action": str(action), "why": why}
        if action is Action.ABORT:
            self._say(EventDraft(kind=EventKind.ACTION, step=self.step, detail=detail))
            self.gave_up = why
        elif action is Action.PAUSE:
            self._control(ControlKind.PAUSE, 1, "action", why=why)
        else:
            error = self._postcopy(f"the convergence policy: Perform {why.replace('_', ' ')}")
            detail["outcome"] = error or "post-copy started"
            self._say(EventDraft(kind=EventKind.ACTION, step=self.step, detail=detail))

    def _postcopy(self, reason: str) -> str | None:
        try:
            self.start_postcopy(reason)
        except Exception as exc:  # noqa: BLE001 -- a refusal is the request's outcome
            return f"refused: {exc}"
        return None

    def _control(self, kind: ControlKind, value: int, by: str, **detail: Any) -> None:
        """Queue a control for the driver; its event is journaled once the driver made it."""
        if SETTING_OF_CONTROL[kind] not in self.settings:
            self._finished(
                kind, value, by, None, "refused: the source's driver does not honour it", detail
            )
            return
        self._controls.append(
            Control(
                kind, value, done=lambda error: self._finished(kind, value, by, None, error, detail)
            )
        )

    def _finished(
        self,
        kind: ControlKind,
        value: int,
        by: str,
        request: Request | None,
        error: str | None,
        detail: dict[str, Any],
    ) -> None:
        outcome = error or "applied"
        facts = {"setting": str(kind), "value": value, "by": by, "outcome": outcome, **detail}
        if kind is ControlKind.PAUSE:
            draft = EventDraft(
                kind=EventKind.ACTION, step=self.step, detail={"action": "pause", **facts}
            )
        elif request is not None:
            facts["request"] = request.id
            draft = EventDraft(kind=EventKind.REQUEST, step=self.step, detail=facts)
        else:
            draft = EventDraft(kind=EventKind.TUNED, step=self.step, detail=facts)
        self._done.append((draft, request, outcome))

    def _apply(self, request: Request) -> None:
        if request.kind is RequestKind.POSTCOPY:
            error = self._postcopy(f"requested by an operator (request {request.id})")
            outcome = error or "applied: post-copy started"
            detail = {"request": request.id, "setting": "postcopy", "outcome": outcome}
            self._done.append(
                (
                    EventDraft(kind=EventKind.REQUEST, step=self.step, detail=detail),
                    request,
                    outcome,
                )
            )
            return
        kind, value = CONTROL_OF_REQUEST[request.kind], int(request.value or 0)
        if SETTING_OF_CONTROL[kind] not in self.settings:
            self._finished(
                kind,
                value,
                "request",
                request,
                "refused: the source's driver does not honour it",
                {},
            )
            return
        self._controls.append(
            Control(
                kind,
                value,
                done=lambda error: self._finished(kind, value, "request", request, error, {}),
            )
        )

    # -- the journal -----------------------------------------------------------------------

    def _say(self, draft: EventDraft) -> None:
        self._done.append((draft, None, ""))

    def _journal_done(self) -> None:
        """Journal each note in turn, unless Perform returned (``stop`` took them)."""
        while True:
            with self._lock:
                if self._stopped or not self._done:
                    return
                draft, request, outcome = self._done.popleft()
                self._note(draft)
            if request is not None:
                self.requests.settle(request.id, outcome)

    def _note(self, draft: EventDraft) -> None:
        """Journal ``draft`` beside the step, in the migration's state: Perform's, or the
        post-copy state a switch moved it to meanwhile (read again once, same fence)."""
        for _ in range(2):
            change = Change(draft, self.migration.state)
            try:
                self.migration = self.journal.record_changes(
                    self.migration, [change], coordinator=self.coordinator_id, each=False
                )[-1]  # its last_seq, which the step's next commit reads back by (``steps.py``)
                return
            except StateConflict:
                now = self.journal.get(self.migration.id)
                if now.fence != self.migration.fence or now.state not in BESIDE_PERFORM:
                    break
                self.migration = now
            except JournalError as exc:
                log.info("applier of %s: %s not journaled: %s", self.migration.id, draft.kind, exc)
                return
        log.info("applier of %s: %s not journaled: Perform ended", self.migration.id, draft.kind)


PostcopyFactory = Callable[[Run], StartPostcopy]
"""The post-copy entry point of a run being driven (the coordinator's ``postcopy=``)."""


class Convergence:
    """What a coordinator runs beside Perform, and keeps of policies and requests."""

    def __init__(
        self, journal: Journal, coordinator_id: str, postcopy: PostcopyFactory | None
    ) -> None:
        self.journal = journal
        self.requests = Requests(journal)
        self.coordinator_id = coordinator_id
        self.postcopy = postcopy

    def beside(self, run: Run, step: Step) -> Applier | None:
        """An applier for a Perform of protocol v3 (``Steps(beside=...)``); at the first
        call of a run with a policy not yet journaled (Begin's, its row now written), the
        policy is journaled for whoever may take the migration over."""
        if run.policy is not None and not run.policy_journaled:  # at the first call: Begin's
            self.requests.set_policy(run.migration.id, run.policy.as_dict())
            run.policy_journaled = True
        if step is not Step.PERFORM or (run.policy is None and not run.blocking):
            return None  # an in-process host's Perform returns at once: nothing to apply
        start = refuse_postcopy if self.postcopy is None else self.postcopy(run)
        return Applier(
            self.journal,
            self.coordinator_id,
            run.migration,
            run.policy,
            settings=honoured(run.src),
            start_postcopy=start,
            step=step,
        )

    def request(self, migration_id: str, kind: RequestKind, value: int | None) -> Request:
        """Journal a runtime request for a migration (an id or a unique prefix) in Perform."""
        migration = self.journal.find(migration_id)
        return self.requests.add(migration.id, kind, value)

    def resumed(self, run: Run) -> Run:
        """``run`` (rebuilt from the journal) with the policy journaled for it."""
        found = self.journal.policy(run.migration.id)
        if found is not None:
            run.policy, run.policy_journaled = from_dict(found), True
        return run

    def ended(self, run: Run) -> None:
        """Stamp the requests still pending once the migration ended: never applied."""
        state = run.migration.state
        if state not in TERMINAL:
            return
        why = f"not applied: Perform had ended (the migration ended {state})"
        try:  # a read first: most migrations have no request, and a write is a commit
            if any(r.pending for r in self.journal.requests(run.migration.id)):
                self.requests.settle_all(run.migration.id, why)
        except JournalError as exc:  # shown as pending until the journal works again
            log.warning("requests of %s not stamped: %s", run.migration.id, exc)
