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

from migrator.convergence.policy import Action, Policy, Setting
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
from migrator.states import POSTCOPY_STATES, State, Step

log = logging.getLogger(__name__)

TICK = 0.1
REQUEST_POLL = 0.5

BESIDE_PERFORM = frozenset({State.PERFORMING, *POSTCOPY_STATES})
"""The states a note of the applier is journaled in."""
BESIDE = frozenset({Step.PERFORM, Step.POSTCOPY_RESUME})
"""The steps an applier runs beside: Perform, and each resumption of a paused post-copy."""

AFTER_SWITCH = "the migration switched to post-copy, where a downtime means nothing"

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
        switched: Callable[[], bool] = lambda: False,
    ) -> None:
        self.journal = journal
        self.requests = Requests(journal)
        self.coordinator_id = coordinator_id
        self.migration = migration
        self.policy = policy or Policy()
        self.settings = settings
        self.start_postcopy = start_postcopy
        self.step = step
        self.switched = switched
        """Whether the migration switched to post-copy (its intent is journaled): the
        policy then decides nothing more, and ``set-speed`` is the post-copy bandwidth."""
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
        """Queue what must be set before the data goes (Perform's, not a post-copy
        resumption's), then start the thread."""
        self._started = time.monotonic()
        if self.step is Step.PERFORM:
            self._before_data()
        else:  # a resumption: what was journaled while paused goes with its first data
            self._poll()
        thread = threading.Thread(target=self._loop, name=f"applier {self.migration.id[:8]}")
        thread.daemon = True
        thread.start()

    def _before_data(self) -> None:
        policy = self.policy
        if policy.auto_converge:
            self._control(ControlKind.AUTO_CONVERGE, 1, "auto_converge")
        if policy.parallel_connections is not None:
            self._control(ControlKind.PARALLEL, policy.parallel_connections, "parallel")
        if policy.postcopy_bandwidth_mib is not None:
            self._control(ControlKind.POSTCOPY_SPEED, policy.postcopy_bandwidth_mib, "postcopy")
        self._carry_out(self.tracker.decide(0.0, None))

    def stop(self, state: State) -> list[Change]:
        """The step returned: what is left to journal, in ``state`` (the run's), for the
        caller to commit with the step's outcome (one transaction, no write of its own).
        Waits at most for the one note the thread may be writing; the thread then stamps
        the requests and ends."""
        with self._lock:
            self._stopped = True
            left, self._done = list(self._done), collections.deque()
        self._settle_later = [(r, outcome) for _, r, outcome in left if r is not None]
        self._stop.set()
        return [Change(draft, state) for draft, _, _ in left]

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
        self._decide(now - self._started)
        if now - self._polled >= REQUEST_POLL:
            self._poll()
        self._journal_done()

    def _poll(self) -> None:
        self._polled = time.monotonic()
        for request in self.journal.requests(self.migration.id):
            if request.pending and request.id not in self._taken:
                self._taken.add(request.id)
                self._apply(request)

    # -- decisions -------------------------------------------------------------------------

    def _decide(self, elapsed: float) -> None:
        """What the policy says of the samples since the last round; nothing once the
        migration switched to post-copy: the guest runs on the destination, so a stall, a
        budget or a downtime means nothing there, and no action may follow."""
        if self.switched():
            self._boundaries.clear()
            self._latest = None
            return
        while self._boundaries:
            self._carry_out(self.tracker.decide(elapsed, self._boundaries.popleft()))
        sample, self._latest = self._latest, None
        self._carry_out(self.tracker.decide(elapsed, sample))

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
        """Switch; the notes that led to it are journaled first, before the switch's
        intent, in Perform's state."""
        self._journal_done()
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
            self._apply_postcopy(request)
            return
        kind, value = self._control_of(request)
        refused = None
        if self.switched() and kind is ControlKind.DOWNTIME:
            refused = f"refused: {AFTER_SWITCH}"
        elif SETTING_OF_CONTROL[kind] not in self.settings:
            refused = "refused: the source's driver does not honour it"
        if refused is not None:
            self._finished(kind, value, "request", request, refused, {})
            return
        self._controls.append(
            Control(
                kind,
                value,
                done=lambda error: self._finished(kind, value, "request", request, error, {}),
            )
        )

    def _control_of(self, request: Request) -> tuple[ControlKind, int]:
        """The control a ``downtime`` or ``speed`` request is: after the switch to
        post-copy, a ``speed`` is the post-copy bandwidth."""
        kind = CONTROL_OF_REQUEST[request.kind]
        if kind is ControlKind.SPEED and self.switched():
            kind = ControlKind.POSTCOPY_SPEED
        return kind, int(request.value or 0)

    def _apply_postcopy(self, request: Request) -> None:
        if self.switched():
            outcome = "not applied: the migration had switched to post-copy already"
        else:
            error = self._postcopy(f"requested by an operator (request {request.id})")
            outcome = error or "applied: post-copy started"
        detail = {"request": request.id, "setting": "postcopy", "outcome": outcome}
        draft = EventDraft(kind=EventKind.REQUEST, step=self.step, detail=detail)
        self._done.append((draft, request, outcome))

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
