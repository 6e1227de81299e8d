"""Calling driver hooks: the context a hook gets, its timeout and lease, the checks on
what it returns, and probes (docs/drivers.md states what a hook must guarantee).

A hook's failure is data: whatever it raises becomes an :class:`Outcome` with the error,
which the flows journal (``writeahead.py``) and judge by their failure rules.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from migrator.drivers.api import (
    COOKIE_MAX,
    DESCRIPTION_MAX,
    DETAIL_MAX,
    URI_MAX,
    Driver,
    ProbeResult,
)
from migrator.drivers.uri import redact_uri
from migrator.engine import reasons
from migrator.engine.applier import Applier
from migrator.engine.hookrunner import HookRunner
from migrator.engine.lease import Keeper
from migrator.engine.retry import RetryPolicy
from migrator.engine.run import Outcome, Run
from migrator.engine.writeahead import WriteAhead
from migrator.errors import (
    CookieTooLarge,
    DriverError,
    DriverTextTooLarge,
    HostUnreachable,
    JournalError,
    PolicyAborted,
    StepAbandoned,
)
from migrator.records import (
    KEEP_REASON,
    EventDraft,
    EventKind,
    Migration,
    Progress,
    Reason,
    StepContext,
)
from migrator.states import RUNS_ON, START, Step, Trigger

PROGRESS_INTERVAL = 0.5
ABORT_POLL = 0.25
PROBE_PATIENCE = 20.0
"""Seconds a probe that cannot reach its host keeps asking (a daemon restart of several
seconds, its guests reconnected), by default."""
PROBE_BACKOFF_CAP = 2.0


def patience(seconds: float | None, backoff: float = 0.2) -> RetryPolicy:
    """A probe's retries: none begun ``seconds`` after the first attempt (None: unbounded
    in time; 1000 attempts at most), pausing ``backoff`` s, doubled up to 2 s."""
    return RetryPolicy(attempts=1000, backoff=backoff, deadline=seconds, cap=PROBE_BACKOFF_CAP)


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


def check_text(step: Step, what: str, text: object, limit: int) -> None:
    if not isinstance(text, str):
        raise DriverError(f"{step} returned a {what} of type {type(text).__name__}, not str")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise DriverTextTooLarge(step=str(step), what=what, size=size, limit=limit)


def json_size(value: object) -> int:
    """The size of ``value`` as the journal keeps it (JSON); a DriverError if it is none."""
    try:
        return len(json.dumps(value, default=str))
    except (TypeError, ValueError, RecursionError) as exc:
        raise DriverError(f"a hook returned data that is not JSON: {exc}") from None


def check_result(step: Step, value: object) -> None:
    """Every text and datum a hook returned, checked against its bound before anything
    of it is journaled (``drivers/api.py``): the cookie, description, URI and stats."""
    check_cookie(step, getattr(value, "cookie", b""))
    description = getattr(value, "description", None)
    if description is not None:
        check_text(step, "description", description, DESCRIPTION_MAX)
    uri = getattr(value, "uri", None)
    if uri is not None:
        check_text(step, "URI", uri, URI_MAX)
    stats = getattr(value, "stats", None)
    if stats is not None and (size := json_size(stats)) > DETAIL_MAX:
        raise DriverTextTooLarge(step=str(step), what="stats", size=size, limit=DETAIL_MAX)


def _bounded_detail(found: dict[str, Any]) -> dict[str, Any]:
    """A probe's detail as journaled: nested (a driver's keys never shadow ours), or only
    its size if over ``DETAIL_MAX``, or why it is not JSON."""
    try:
        size = json_size(found)
    except DriverError as exc:
        return {"detail_error": reasons.error_text(exc)[:500]}
    return {"detail": found} if size <= DETAIL_MAX else {"detail_bytes": size}


def validated(step: Step, out: Outcome) -> Outcome:
    """A hook's result with a cookie, description, URI or stats of the wrong type or over
    its bound is its failure."""
    if not out.ok:
        return out
    try:
        check_result(step, out.value)
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
        probe_patience: RetryPolicy | None = None,
        beside: Beside | None = None,
    ) -> None:
        self.writes = writes
        self.probe_patience = probe_patience or patience(PROBE_PATIENCE)
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
        reason: Reason = KEEP_REASON,
    ) -> Outcome:
        """Intent, call, and on failure the failed outcome (with ``reason``, by default the
        step's error); the caller records success. The machine calls the hook: it is the
        intent's ``call`` callback.

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
        done: list[Outcome] = []

        def call() -> None:  # run by the machine once the intent committed
            out = self.call(run, step, hook, attempt=draft.attempt)
            done.append(out)
            if not out.ok:
                self.writes.outcome(
                    run, failed, step, out, cancelled=draft.cancelled, attempt=draft.attempt,
                    reason=reason,
                )  # fmt: skip

        if replay:
            call()
        else:
            self.writes.intent(run, START[step], draft, unless_aborted=unless_aborted, call=call)
        return done[0]

    def call(self, run: Run, step: Step, hook: Hook, *, attempt: int = 1) -> Outcome:
        """Call ``hook`` with its context and timeout, its lease watched (``lease.Keeper``);
        check what it gave."""
        timeout = self.step_timeout
        stop = threading.Event()
        self._fence_check(run, step)
        self.writes.flush(run)  # a staged note (recovery replaying a step) is durable first
        applier = self.beside(run, step) if self.beside is not None else None
        ctx = StepContext(
            migration_id=run.migration.id,
            step=step,
            attempt=attempt,
            fence=run.migration.fence,
            deadline=None if timeout is None else time.monotonic() + timeout,
            progress=self._progress_sink(run, step, stop, applier),
            aborted=self._abort_check(run, applier),
            stopped=stop.is_set,
            controls=applier.take if applier is not None else list,
        )
        if applier is not None:
            applier.start()
        try:
            return self._called(run, step, hook, ctx, applier, stop)
        finally:
            if applier is not None:  # its last notes commit with the outcome
                run.staged.extend(applier.stop(run.state))
                if applier.migration.last_seq > run.migration.last_seq:  # it wrote notes
                    run.migration = dataclasses.replace(
                        run.migration, last_seq=applier.migration.last_seq
                    )

    def _called(
        self,
        run: Run,
        step: Step,
        hook: Hook,
        ctx: StepContext,
        applier: Applier | None,
        stop: threading.Event,
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
            stop.set()  # an abandoned hook's thread changes nothing more (``ctx.stopped``)
            raise  # the lease was lost while the hook ran: stop driving at once
        except Exception as exc:  # noqa: BLE001 -- every driver failure becomes journal data
            stop.set()  # a timed-out hook's thread too
            self.writes.failpoints.hit(step, "called")
            why = applier.gave_up if applier is not None else None
            error = PolicyAborted(why=why, detail=str(exc)) if why else exc
            return Outcome(error=error, duration=time.monotonic() - start)
        except BaseException:
            stop.set()
            raise
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
        """Ask a host what it holds; journal the answer; None if it cannot tell.

        A host that cannot be reached (``HostUnreachable``) is asked again within
        ``probe_patience`` (a daemon restarting for a few seconds is no reason to give up on
        a migration): each failed attempt is journaled at once, with ``retry_in``, the pause
        before the next; the last one, or any other error, without."""
        host = redact_uri(driver.uri)  # journaled: never a password
        tries = self.probe_patience.start()
        while True:
            start = time.monotonic()
            try:
                result = self.runner.call(
                    lambda: driver.probe(domain), step="probe", timeout=self.step_timeout
                )
            except Exception as exc:  # noqa: BLE001 -- any failure means "cannot tell"
                again = isinstance(exc, HostUnreachable) and not tries.last
                pause = self.probe_patience.pause(tries.number - 1)
                draft = EventDraft(
                    kind=EventKind.ERROR,
                    step=Step.PROBE,
                    uri=host,
                    error_type=type(exc).__name__,
                    error_message=reasons.error_text(exc),
                    duration=time.monotonic() - start,
                    attempt=tries.number,
                    detail={"retry_in": round(pause, 3)} if again else None,
                )
                if again:
                    self.writes.note(run, draft)  # committed now: the timeline shows it
                    tries.next()
                    continue
                self.writes.note(run, draft, then=True)  # commits with what it leads to
                return None
            break
        detail: dict[str, Any] = {"host": host, "domain": domain, "state": str(result.state)}
        if result.detail:
            detail.update(_bounded_detail(result.detail))
        draft = EventDraft(
            kind=EventKind.OK,
            step=Step.PROBE,
            uri=host,
            detail=detail,
            duration=time.monotonic() - start,
            attempt=tries.number,
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

    def _progress_sink(
        self, run: Run, step: Step, stop: threading.Event, applier: Applier | None
    ) -> Callable[[Progress], None]:
        """``ctx.progress``: journaled at most every 0.5 s, conditional on the fence (a
        refused sample raises ``FenceLost`` in the hook, which stops it); a hook the engine
        stopped waiting for reports nothing more; the policy applier sees every sample."""
        last = [0.0]

        def sink(progress: Progress) -> None:
            if stop.is_set():
                raise StepAbandoned(step=str(step))
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
