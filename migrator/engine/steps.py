"""Calling driver hooks: the context a hook gets, its timeout and lease, the checks on
what it returns, and probes (docs/drivers.md states what a hook must guarantee).

A hook's failure is data: whatever it raises becomes an :class:`Outcome` with the error,
which the flows journal (``writeahead.py``) and judge by their failure rules.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

from migrator.drivers.api import COOKIE_MAX, Driver, ProbeResult
from migrator.drivers.uri import redact_uri
from migrator.engine import reasons
from migrator.engine.applier import Applier
from migrator.engine.hookrunner import HookRunner
from migrator.engine.lease import Keeper
from migrator.engine.run import Outcome, Run
from migrator.engine.writeahead import WriteAhead
from migrator.errors import CookieTooLarge, DriverError, JournalError, PolicyAborted
from migrator.records import EventDraft, EventKind, Migration, Progress, StepContext
from migrator.states import RUNS_ON, START, Step, Trigger

PROGRESS_INTERVAL = 0.5
ABORT_POLL = 0.25

Hook = Callable[[StepContext], Any]
ProgressCallback = Callable[[Migration, Progress], None]
Gate = Callable[[Run, Step], None]
"""Called at each step boundary, before the intent: raises to stop driving (a worker's
graceful stop, docs/workers.md)."""
Beside = Callable[[Run, Step], Applier | None]
"""What runs beside a step's hook (the policy applier beside Perform), if anything."""


def check_cookie(step: Step, cookie: object) -> bytes:
    if not isinstance(cookie, bytes):
        raise DriverError(f"{step} returned a cookie of type {type(cookie).__name__}, not bytes")
    if len(cookie) > COOKIE_MAX:
        raise CookieTooLarge(step=str(step), size=len(cookie), limit=COOKIE_MAX)
    return cookie


def validated(step: Step, out: Outcome) -> Outcome:
    """A hook's result with a cookie that is not bytes, or too large, is its failure."""
    if not out.ok:
        return out
    try:
        check_cookie(step, getattr(out.value, "cookie", b""))
    except DriverError as exc:
        return Outcome(error=exc, duration=out.duration)
    return out


class Steps:
    """Calls hooks for one coordinator, under the write-ahead rule."""

    def __init__(
        self,
        writes: WriteAhead,
        leases: Keeper,
        *,
        step_timeout: float | None,
        on_progress: ProgressCallback | None,
        gate: Gate | None = None,
        beside: Beside | None = None,
    ) -> None:
        self.writes = writes
        self.beside = beside
        self.journal = writes.journal
        self.leases = leases
        self.step_timeout = step_timeout
        self.on_progress = on_progress
        self.gate = gate
        self._runners = threading.local()
        self._every: list[HookRunner] = []
        self._lock = threading.Lock()

    @property
    def runner(self) -> HookRunner:
        """The calling thread's hook runner: threads sharing a coordinator (concurrent
        migrations, parallel recovery) each wait for their own hooks, never for another's."""
        runner: HookRunner | None = getattr(self._runners, "runner", None)
        if runner is None:
            runner = self._runners.runner = HookRunner()
            with self._lock:
                self._every.append(runner)
        return runner

    def close_thread(self) -> None:
        """Stop the calling thread's hook runner (a thread that drives no more migrations)."""
        runner: HookRunner | None = getattr(self._runners, "runner", None)
        if runner is None:
            return
        self._runners.runner = None
        with self._lock:
            self._every.remove(runner)
        runner.close()

    def close(self) -> None:
        with self._lock:
            every, self._every = self._every, []
        for runner in every:
            runner.close()

    def step(
        self,
        run: Run,
        draft: EventDraft,
        hook: Hook,
        failed: Trigger,
        *,
        replay: bool = False,
        unless_aborted: bool = False,
    ) -> Outcome:
        """Intent, call, and on failure the failed outcome; the caller records success.

        ``replay`` calls the hook again under the intent already journaled (recovery of a
        crash between intent and outcome): same inputs, the attempt number of ``draft``.
        ``unless_aborted``: see ``WriteAhead.intent`` (``AbortRequested``: not started).
        """
        step = draft.step
        assert step is not None
        if self.gate is not None:
            try:
                self.gate(run, step)
            except BaseException:
                self.writes.flush(run)  # a staged outcome is not lost to a handover
                raise
        if not replay:
            self.writes.intent(run, START[step], draft, unless_aborted=unless_aborted)
        out = self.call(run, step, hook, attempt=draft.attempt)
        if not out.ok:
            self.writes.outcome(
                run, failed, step, out, cancelled=draft.cancelled, attempt=draft.attempt
            )
        return out

    def call(self, run: Run, step: Step, hook: Hook, *, attempt: int = 1) -> Outcome:
        """Call ``hook`` with its context and timeout, its lease watched (``lease.Keeper``);
        check what it gave."""
        timeout = self.step_timeout
        self._fence_check(run, step)
        self.writes.flush(run)  # a staged note (recovery replaying a step) is durable first
        applier = self.beside(run, step) if self.beside is not None else None
        ctx = StepContext(
            migration_id=run.migration.id,
            step=step,
            attempt=attempt,
            fence=run.migration.fence,
            deadline=None if timeout is None else time.monotonic() + timeout,
            progress=self._progress_sink(run, applier),
            aborted=self._abort_check(run, applier),
            controls=applier.take if applier is not None else list,
        )
        if applier is not None:
            applier.start()
        try:
            return self._called(run, step, hook, ctx, applier)
        finally:
            if applier is not None:  # its last notes commit with the outcome
                run.staged.extend(applier.stop())
                if applier.migration.last_seq > run.migration.last_seq:  # it wrote notes
                    run.migration = dataclasses.replace(
                        run.migration, last_seq=applier.migration.last_seq
                    )

    def _called(
        self, run: Run, step: Step, hook: Hook, ctx: StepContext, applier: Applier | None
    ) -> Outcome:
        timeout = self.step_timeout
        start = time.monotonic()
        try:
            if run.blocking:
                value = self.runner.call(
                    lambda: hook(ctx),
                    step=str(step),
                    timeout=timeout,
                    tick=lambda: self.leases.check(run),
                    tick_every=min(1.0, self.journal.lease_seconds / 3),
                )
            else:  # hooks that never block are called inline (``Driver.blocking``)
                value = hook(ctx)
        except JournalError:
            raise  # the lease was lost while the hook ran: stop driving at once
        except Exception as exc:  # noqa: BLE001 -- every driver failure becomes journal data
            self.writes.failpoints.hit(step, "called")
            why = applier.gave_up if applier is not None else None
            error = PolicyAborted(why=why, detail=str(exc)) if why else exc
            return Outcome(error=error, duration=time.monotonic() - start)
        self.writes.failpoints.hit(step, "called")
        return validated(step, Outcome(value=value, duration=time.monotonic() - start))

    def _fence_check(self, run: Run, step: Step) -> None:
        """Before a call to a host that does not refuse a stale fence itself, make sure the
        journal still says we own the migration (FenceLost if not) and renew the lease, so
        a coordinator that was stopped past its lease never acts for the one that took over
        (docs/workers.md, "Fencing")."""
        driver = run.src if RUNS_ON[step] == "src" else run.dst
        if not getattr(driver, "checks_fence", False):
            self.leases.renew(run)

    def probe(self, run: Run, driver: Driver, domain: str) -> ProbeResult | None:
        """Ask a host what it holds; journal the answer; None if it cannot tell."""
        start = time.monotonic()
        host = redact_uri(driver.uri)  # journaled: never a password
        try:
            result = self.runner.call(
                lambda: driver.probe(domain), step="probe", timeout=self.step_timeout
            )
        except Exception as exc:  # noqa: BLE001 -- any failure means "cannot tell"
            draft = EventDraft(
                kind=EventKind.ERROR,
                step=Step.PROBE,
                uri=host,
                error_type=type(exc).__name__,
                error_message=reasons.error_text(exc),
                duration=time.monotonic() - start,
            )
            self.writes.note(run, draft, then=True)  # commits with what it leads to
            return None
        detail: dict[str, Any] = {"host": host, "domain": domain, "state": str(result.state)}
        if result.detail:
            detail["detail"] = result.detail  # nested: a driver's keys never shadow ours
        draft = EventDraft(
            kind=EventKind.OK,
            step=Step.PROBE,
            uri=host,
            detail=detail,
            duration=time.monotonic() - start,
        )
        self.writes.note(run, draft, then=True)  # commits with what it leads to
        return result

    def _abort_check(self, run: Run, applier: Applier | None) -> Callable[[], bool]:
        """``ctx.aborted``: the policy's abort, or the persisted abort request (read at most
        every 0.25 s)."""
        state = {"at": 0.0, "aborted": False}

        def aborted() -> bool:
            if applier is not None and applier.aborted():
                return True
            now = time.monotonic()
            if not state["aborted"] and now - state["at"] >= ABORT_POLL:
                state["at"] = now
                state["aborted"] = self.journal.abort_requested(run.migration.id)
            return bool(state["aborted"])

        return aborted

    def _progress_sink(self, run: Run, applier: Applier | None) -> Callable[[Progress], None]:
        last = [0.0]

        def sink(progress: Progress) -> None:
            if applier is not None:
                applier.observe(progress)
            now = time.monotonic()
            final = progress.remaining == 0
            if self.on_progress is not None:
                self.on_progress(run.migration, progress)
            if final or now - last[0] >= PROGRESS_INTERVAL:
                last[0] = now
                self.journal.set_progress(run.migration, progress.as_dict())

        return sink
