"""The coordinator: runs migrations with protocol v3 under the write-ahead rule.

For each step (DESIGN §5): (1) commit the intent, with every input the step will use;
(2) call the driver hook; (3) commit the outcome and the next state. The failure rules of
DESIGN §2 pick the next step from each outcome; the state table in ``states.py`` refuses
anything else. Driver exceptions become journal data (type name and text), never pickles.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import EllipsisType
from typing import Any, TypeVar, cast

from migrator import failpoints, negotiation, older, reasons, recovery
from migrator.drivers.base import (
    COOKIE_MAX,
    DomainState,
    Driver,
    MigrationParams,
    PerformResult,
    ProbeResult,
    TunnelledDriver,
    TunnelStream,
    connect,
    is_blocking,
    redact_uri,
    refuse_unhonoured,
)
from migrator.errors import (
    CookieTooLarge,
    CoordinatorCrashed,
    DomainExists,
    DomainNotFound,
    DriverError,
    FenceLost,
    JournalError,
    MigratorError,
    UsageError,
)
from migrator.flags import MigrateFlags
from migrator.hookrunner import HookRunner
from migrator.hooks import Hook, Hooks
from migrator.journal.store import Journal
from migrator.records import Event, EventDraft, Migration, Progress, StepContext
from migrator.states import (
    START,
    State,
    Step,
    Trigger,
    acquire_model,
    fire,
    release_model,
)

log = logging.getLogger(__name__)

R = TypeVar("R")

PROGRESS_INTERVAL = 0.5
ABORT_POLL = 0.25


def new_coordinator_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _check_cookie(step: Step, cookie: object) -> bytes:
    if not isinstance(cookie, bytes):
        raise DriverError(f"{step} returned a cookie of type {type(cookie).__name__}, not bytes")
    if len(cookie) > COOKIE_MAX:
        raise CookieTooLarge(step=str(step), size=len(cookie), limit=COOKIE_MAX)
    return cookie


@dataclass
class Run:
    """One migration being driven: its journal record, its hosts and what the steps gave.

    ``model`` is the state machine's view of ``migration.state``; the journal is the truth.
    """

    migration: Migration
    src: Driver
    dst: Driver
    params: MigrationParams
    cookie: bytes = b""
    description: str = ""
    uri: str = ""
    model: Any = None
    stream: TunnelStream | None = None
    """Tunnelled v3: the destination's end of the tunnel, from PrepareTunnel3."""

    def __post_init__(self) -> None:
        self.model = acquire_model(self.migration.state)

    @property
    def blocking(self) -> bool:
        """False when both drivers say their hooks never block: they are then called inline."""
        return is_blocking(self.src) or is_blocking(self.dst)

    @property
    def state(self) -> State:
        return self.migration.state

    @property
    def protocol(self) -> int:
        return self.migration.protocol

    @property
    def tunnelled(self) -> bool:
        return bool(self.params.flags & MigrateFlags.TUNNELLED)

    def release(self) -> None:
        release_model(self.model)


@dataclass(frozen=True)
class Outcome:
    """What a driver call gave: a value, or the exception it raised, and how long it took."""

    value: Any = None
    error: BaseException | None = None
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


ABORTABLE = (
    State.NEW,
    State.BEGINNING,
    State.BEGUN,
    State.PREPARING,
    State.PREPARED,
    State.PERFORMING,
    State.DUMPING,
    State.DUMPED,
    State.PREPARING2,
    State.PREPARED2,
    State.PERFORMING2,
    State.PREPARING1,
    State.PREPARED1,
    State.PERFORMING1,
)
"""States an abort can still turn back: until Perform's outcome is committed. After that
the coordinator asks Finish(cancelled=0) at once, so a later request could only race it
(and with v1 and v2 the source has already ended itself)."""
ABORTED = "aborted by an operator"
NOT_STARTED = "finish: the destination did not start the domain"


@dataclass(frozen=True)
class Recovered:
    """What ``recover`` did (or, with ``dry_run``, would do) with one migration."""

    id: str
    state: State
    plan: recovery.Plan
    claimed: bool = False
    claimed_because: str | None = None
    result: State | None = None
    reason: str | None = None
    note: str | None = None


DESCRIBE = (Step.BEGIN, Step.DUMP_XML)
"""The steps that give the domain description, in every protocol."""
PREPARE = (Step.PREPARE, Step.PREPARE_TUNNEL, Step.PREPARE2, Step.PREPARE1)
"""The steps that give the URI to send to, in every protocol."""


def _last_cookie(history: list[Event]) -> bytes:
    """The cookie the next step takes: the newest output, or the newest step's input."""
    for event in reversed(history):
        if event.kind == "ok" and event.cookie_out is not None:
            return event.cookie_out
        if event.kind == "intent" and event.cookie_in is not None:
            return event.cookie_in
    return b""


def _relay(ctx: StepContext, run: Run, cookie: bytes) -> PerformResult:
    """Tunnelled Perform: the source sends through us into the destination's stream."""
    stream = run.stream
    if stream is None:
        raise DriverError("no tunnel to the destination: PrepareTunnel3 gave no stream")
    relayed = [0]

    def send(data: bytes) -> None:
        stream.write(data)
        relayed[0] += len(data)

    src = cast(TunnelledDriver, run.src)  # negotiation saw both hosts offer TUNNELLED
    try:
        result: PerformResult = src.perform_tunnel(ctx, run.params, cookie, send)
        stream.close()
    except BaseException:
        stream.abort()
        raise
    return dataclasses.replace(result, stats={**result.stats, "relayed_bytes": relayed[0]})


ProgressCallback = Callable[[Migration, Progress], None]
Reason = str | None | EllipsisType
"""A new reason for the migration, None to clear it, or ``...`` to keep it."""


class Coordinator:
    """Runs migrations and records every step in ``journal``.

    ``step_timeout`` (seconds, or None) turns a hung hook into a failure of its step;
    ``confirm_attempts`` and ``retry_backoff`` bound the retries of a failing Confirm,
    after which the migration stays CONFIRMING for ``recover`` to finish.
    """

    def __init__(
        self,
        journal: Journal,
        *,
        coordinator_id: str | None = None,
        step_timeout: float | None = 600.0,
        confirm_attempts: int = 5,
        retry_backoff: float = 0.2,
        on_progress: ProgressCallback | None = None,
        hooks: Iterable[Hook] = (),
    ) -> None:
        self.journal = journal
        self.hooks = Hooks(hooks)  # observers, called after each commit (hooks.py)
        self.id = coordinator_id or new_coordinator_id()
        self.step_timeout = step_timeout
        self.confirm_attempts = max(1, confirm_attempts)
        self.retry_backoff = retry_backoff
        self.on_progress = on_progress
        self._runner = HookRunner()
        try:
            self._failpoints: Mapping[str, str] = failpoints.active()  # read once: cheap
        except ValueError as exc:
            raise UsageError(f"{failpoints.ENV_VAR}: {exc}") from None

    def close(self) -> None:
        self._runner.close()

    # -- the public entry point ----------------------------------------------------------

    def migrate(
        self,
        domain: str,
        *,
        src: Driver,
        dst: Driver,
        flags: MigrateFlags = MigrateFlags.NONE,
        dname: str | None = None,
        bandwidth: int = 0,
        protocol: int | None = None,
    ) -> Migration:
        """Migrate ``domain`` from ``src`` to ``dst``; return the migration at its end state.

        Bad input raises a ``UsageError`` before anything is journaled or called.
        """
        params, version = self._preflight(
            domain, src, dst, MigrateFlags(flags), dname, bandwidth, protocol
        )
        migration = self.journal.create(
            domain=domain,
            dname=dname,
            src=redact_uri(src.uri),
            dst=redact_uri(dst.uri),
            protocol=version,
            flags=int(params.flags),
            bandwidth=bandwidth,
            owner=self.id,
        )
        run = Run(migration, src, dst, params)
        try:
            if version == 3:
                self._drive_v3(run)
            else:
                older.drive(self, run)
        finally:
            run.release()
        return run.migration

    # -- recovery, operators' commands -------------------------------------------------------

    def recover(self, *, dry_run: bool = False, steal: bool = False) -> list[Recovered]:
        """Bring every orphaned migration to a safe end (DESIGN §6); see ``recovery.py``.

        A migration is claimed when its owner provably died (same host, process gone), its
        lease lapsed, or ``steal``; one whose owner is alive is reported and left alone.
        ``dry_run`` plans without claiming, calling or writing anything.
        """
        reports = []
        for migration in self.journal.list(states=recovery.RECOVERABLE):
            try:
                reports.append(self._recover_one(migration, dry_run=dry_run, steal=steal))
            except MigratorError as exc:  # one migration's trouble must not stop the others
                state = self.journal.get(migration.id).state
                plan = recovery.plan(migration, [])
                note = f"recovery stopped: {exc}"
                reports.append(
                    Recovered(migration.id, migration.state, plan, True, None, state, None, note)
                )
        return reports

    def _recover_one(self, migration: Migration, *, dry_run: bool, steal: bool) -> Recovered:
        history = self.journal.history(migration.id)
        the_plan = recovery.plan(migration, history)
        why = recovery.claimable(migration, steal=steal)
        report = Recovered(migration.id, migration.state, the_plan, claimed_because=why)
        if dry_run or why is None:
            return report
        try:
            claimed = self.journal.claim(migration, self.id)
        except FenceLost:
            return dataclasses.replace(report, note="claimed by another coordinator")
        try:
            run = self._resume(claimed, history)
        except MigratorError as exc:
            return dataclasses.replace(report, note=f"cannot reach its hosts: {exc}")
        try:
            detail = {
                "from_state": str(migration.state),
                "action": str(the_plan.action),
                "plan": the_plan.text,
                "previous_owner": migration.owner,
                "because": why,
            }
            self._note(run, EventDraft(kind="recovery", detail=detail))
            self._carry_out(run, the_plan)
        finally:
            run.release()
        return dataclasses.replace(
            report, claimed=True, result=run.migration.state, reason=run.migration.reason
        )

    def _resume(self, migration: Migration, history: list[Event]) -> Run:
        """A Run rebuilt from the journal: hosts, parameters and the last cookie handed on."""
        params = MigrationParams(
            domain=migration.domain,
            flags=MigrateFlags(migration.flags),
            dname=migration.dname,
            bandwidth=migration.bandwidth,
        )
        run = Run(
            migration, self.connect_host(migration.src), self.connect_host(migration.dst), params
        )
        run.cookie = _last_cookie(history)
        begun = next((e for e in history if e.step in DESCRIBE and e.kind == "ok"), None)
        prepared = next((e for e in history if e.step in PREPARE and e.kind == "ok"), None)
        run.description = (begun.description if begun else None) or ""
        run.uri = (prepared.uri if prepared else None) or ""
        return run

    def connect_host(self, uri: str) -> Driver:
        """The driver for a journaled host URI (a seam: replay answers from the journal)."""
        return connect(uri)

    def _carry_out(self, run: Run, plan: recovery.Plan) -> None:
        if run.protocol != 3:
            older.carry_out(self, run, plan)
            return
        action, cancelled = plan.action, bool(plan.cancelled)
        if action is recovery.Action.ABANDON:
            draft = EventDraft(kind="recovery", detail={"action": "abandon"})
            self._transition(run, Trigger.ABANDON, draft, reason="abandoned before Begin")
        elif action is recovery.Action.CANCEL:
            self._confirm(run, cancelled=True, reason=self._crash_reason(run))
        elif action is recovery.Action.CANCEL_WITH_CLEANUP:
            if run.state is State.PERFORMING:  # aborted, then crashed: Perform did not finish
                crash = CoordinatorCrashed(step="perform", detail="an abort was requested")
                self._outcome(run, Trigger.PERFORM_FAILED, Step.PERFORM, Outcome(error=crash))
            self._set_reason_if_none(run)
            self._finish(run, cancelled=True)
        elif action is recovery.Action.PROBE_PERFORM:
            self._recover_perform(run)
        elif action is recovery.Action.FINISH:
            self._finish(run, cancelled=False)
        elif action is recovery.Action.REPLAY_FINISH:
            self._finish(run, cancelled=cancelled, attempt=plan.attempt, replay=True)
        elif action is recovery.Action.AFTER_FINISH_FAILED:
            self._after_finish_failed(run, cancelled=cancelled, attempt=plan.attempt)
        elif action is recovery.Action.CONFIRM and cancelled:
            self._confirm(run, cancelled=True, reason=run.migration.reason or NOT_STARTED)
        elif action is recovery.Action.CONFIRM:
            self._confirm(run, cancelled=False)
        elif action is recovery.Action.GIVE_UP:
            self._give_up(run, plan.text)
        elif action is recovery.Action.REPLAY_CONFIRM:
            self.confirm_with_retries(
                run, cancelled=cancelled, first_attempt=plan.attempt, cause=plan.reason or ...
            )

    def _recover_perform(self, run: Run) -> None:
        """A crash during Perform: forward if the source says the transfer completed."""
        probe = self._probe(run, run.src, run.params.domain)
        completed = probe is not None and probe.transfers.get(run.migration.id) == "completed"
        if completed:
            out = Outcome(value=None)
            self._outcome(run, Trigger.PERFORM_OK, Step.PERFORM, out, detail={"recovered": True})
            self._finish(run, cancelled=False)
            return
        crash = CoordinatorCrashed(
            step="perform", detail="the source reports no completed transfer"
        )
        self._outcome(run, Trigger.PERFORM_FAILED, Step.PERFORM, Outcome(error=crash))
        self._finish(run, cancelled=True)

    def _crash_reason(self, run: Run) -> str:
        return run.migration.reason or f"cancelled by recovery after a crash in {run.state}"

    def _set_reason_if_none(self, run: Run) -> None:
        if run.migration.reason is None:
            self._note(
                run,
                EventDraft(kind="recovery", detail={"cancel": True}),
                reason=self._crash_reason(run),
            )

    def resolve(self, migration_id: str, *, running_on: str) -> Migration:
        """An operator's decision for an IN_DOUBT migration: where the domain really runs.

        ``src``: Finish(cancelled=1) removes what the destination holds, then Confirm
        (cancelled=1) resumes the source; should the destination still report the domain
        running, the migration stays IN_DOUBT. ``dst``: Confirm(cancelled=0) kills the paused
        source. The decision is journaled with the operator's coordinator id.
        """
        if running_on not in ("src", "dst"):
            raise UsageError(f"--running-on must be src or dst, not {running_on!r}")
        migration = self.journal.find(migration_id)
        if migration.state is not State.IN_DOUBT:
            raise UsageError(f"migration {migration.id} is {migration.state}, not IN_DOUBT")
        migration = self.journal.claim(migration, self.id)
        run = self._resume(migration, self.journal.history(migration.id))
        reason = f"resolved by an operator: the domain runs on {running_on}"
        try:
            self._note(
                run, EventDraft(kind="resolve", detail={"running_on": running_on}), reason=reason
            )
            if run.protocol != 3:
                older.resolve(self, run, running_on=running_on)
            elif running_on == "src":
                self._finish(run, cancelled=True)
            else:
                draft = EventDraft(
                    kind="intent", step=Step.CONFIRM, cookie_in=run.cookie, cancelled=False
                )
                self._transition(run, Trigger.RESOLVE, draft)
                self.confirm_with_retries(run, cancelled=False)
        finally:
            run.release()
        return run.migration

    def abort(self, migration_id: str) -> Migration:
        """Persist an abort request; a running Perform notices it and the cancel path runs."""
        migration = self.journal.find(migration_id)
        if not self.journal.request_abort(migration.id, states=ABORTABLE):
            current = self.journal.get(migration.id)
            raise UsageError(
                f"migration {current.id} is {current.state}: only a migration that has not"
                " finished Perform can be aborted"
            )
        return self.journal.get(migration.id)

    # -- checks before anything is written ------------------------------------------------

    def _preflight(
        self,
        domain: str,
        src: Driver,
        dst: Driver,
        flags: MigrateFlags,
        dname: str | None,
        bandwidth: int,
        protocol: int | None,
    ) -> tuple[MigrationParams, int]:
        if bandwidth < 0:
            raise UsageError(f"bandwidth must be >= 0 MiB/s, not {bandwidth}")
        if not domain or (dname is not None and not dname):
            raise UsageError("a domain name must not be empty")
        if src.uri == dst.uri:
            raise UsageError(f"source and destination are the same host: {redact_uri(src.uri)}")
        version = negotiation.negotiate(
            src.features(),
            dst.features(),
            forced=protocol,
            tunnelled=bool(flags & MigrateFlags.TUNNELLED),
        )
        src_state = self._best_effort_probe(src, domain)
        if src_state is not None and not src_state.active:
            raise DomainNotFound(domain=domain, host=redact_uri(src.uri))
        dst_state = self._best_effort_probe(dst, dname or domain)
        if dst_state is not None and dst_state not in (DomainState.ABSENT, DomainState.SHUTOFF):
            # A shut-off definition on the destination is replaced, as libvirt does.
            raise DomainExists(domain=dname or domain, host=redact_uri(dst.uri))
        if src_state is DomainState.PAUSED:
            flags |= MigrateFlags.PAUSED  # as libvirt: a paused source stays paused on dst
        refuse_unhonoured(flags, src, dst)
        params = MigrationParams(domain=domain, flags=flags, dname=dname, bandwidth=bandwidth)
        return params, version

    @staticmethod
    def _best_effort_probe(driver: Driver, domain: str) -> DomainState | None:
        """A host that cannot be probed is left for the steps to judge."""
        try:
            return driver.probe(domain).state
        except Exception as exc:  # noqa: BLE001 -- any driver failure means "cannot tell"
            log.warning(
                "probe of %s on %s failed before the migration: %s",
                domain,
                redact_uri(driver.uri),
                exc,
            )
            return None

    # -- protocol v3 ------------------------------------------------------------------------

    def _drive_v3(self, run: Run) -> None:
        if not self._begin(run):
            return
        if not self._prepare(run):
            self._cancel(run)
            return
        if not self._perform(run):
            self._cancel(run)
            return
        if run.migration.abort_requested:  # as of the commit of Perform's outcome
            # Aborted while the data went: still before the point of no return.
            self._note(run, EventDraft(kind="abort", step=Step.PERFORM), reason=ABORTED)
            self._cancel(run)
            return
        self._finish(run, cancelled=False)

    def _step(
        self,
        run: Run,
        draft: EventDraft,
        hook: Callable[[StepContext], Any],
        failed: Trigger,
        *,
        replay: bool = False,
    ) -> Outcome:
        """Intent, call, and on failure the failed outcome; the caller records success.

        ``replay`` calls the hook again under the intent already journaled (recovery of a
        crash between intent and outcome): same inputs, next attempt number.
        """
        step = draft.step
        assert step is not None
        if not replay:
            self._intent(run, START[step], draft)
        out = self._validated(step, self._call(run, step, hook, attempt=draft.attempt))
        if not out.ok:
            self._outcome(run, failed, step, out, cancelled=draft.cancelled, attempt=draft.attempt)
        return out

    def _begin(self, run: Run) -> bool:
        draft = EventDraft(kind="intent", step=Step.BEGIN)
        out = self._step(
            run, draft, lambda ctx: run.src.begin(ctx, run.params), Trigger.BEGIN_FAILED
        )
        if not out.ok:
            return False
        run.description, run.cookie = out.value.description, out.value.cookie
        self._outcome(
            run, Trigger.BEGIN_OK, Step.BEGIN, out, cookie_out=run.cookie,
            description=run.description,
        )  # fmt: skip
        return True

    def _prepare(self, run: Run) -> bool:
        """Prepare, or for a tunnelled migration PrepareTunnel3 (same states, own step)."""
        cookie, description = run.cookie, run.description
        step = Step.PREPARE_TUNNEL if run.tunnelled else Step.PREPARE
        draft = EventDraft(kind="intent", step=step, cookie_in=cookie, description=description)
        if run.tunnelled:
            dst = cast(TunnelledDriver, run.dst)

            def hook(ctx: StepContext) -> Any:
                return dst.prepare_tunnel(ctx, run.params, cookie, description)
        else:

            def hook(ctx: StepContext) -> Any:
                return run.dst.prepare(ctx, run.params, cookie, description)

        out = self._step(run, draft, hook, Trigger.PREPARE_FAILED)
        if not out.ok:
            return False
        if run.tunnelled:
            run.stream, run.uri = out.value.stream, ""
        else:
            run.uri = out.value.uri
        run.cookie = out.value.cookie
        self._outcome(
            run, Trigger.PREPARE_OK, step, out, cookie_out=run.cookie, uri=run.uri or None
        )
        return True

    def _perform(self, run: Run) -> bool:
        cookie, uri = run.cookie, run.uri
        draft = EventDraft(kind="intent", step=Step.PERFORM, cookie_in=cookie, uri=uri or None)
        if run.tunnelled:

            def hook(ctx: StepContext) -> Any:
                return _relay(ctx, run, cookie)
        else:

            def hook(ctx: StepContext) -> Any:
                return run.src.perform(ctx, run.params, cookie, uri)

        out = self._step(run, draft, hook, Trigger.PERFORM_FAILED)
        if not out.ok:
            return False
        run.cookie = out.value.cookie
        self._outcome(
            run, Trigger.PERFORM_OK, Step.PERFORM, out, cookie_out=run.cookie,
            detail=dict(out.value.stats) or None,
        )  # fmt: skip
        return True

    def _cancel(self, run: Run) -> None:
        """Before the point of no return: clean the destination, then resume the source."""
        self._finish(run, cancelled=True)

    def _finish(self, run: Run, *, cancelled: bool, attempt: int = 1, replay: bool = False) -> None:
        cookie = run.cookie
        draft = EventDraft(
            kind="intent", step=Step.FINISH, cookie_in=cookie, cancelled=cancelled,
            attempt=attempt,
        )  # fmt: skip
        out = self._step(
            run,
            draft,
            lambda ctx: run.dst.finish(ctx, run.params, cookie, cancelled),
            Trigger.FINISH_FAILED,
            replay=replay,
        )
        if not out.ok:
            self._after_finish_failed(run, cancelled=cancelled, attempt=attempt)
            return
        running = bool(out.value.running)
        run.cookie = out.value.cookie
        self._outcome(
            run,
            Trigger.FINISH_OK,
            Step.FINISH,
            out,
            cookie_out=run.cookie,
            cancelled=cancelled,
            attempt=attempt,
            detail={"running": running},
        )
        if cancelled and running:
            self._give_up(
                run,
                "Finish(cancelled=1) still reports the domain running on the destination:"
                " broken driver",
            )
            return
        if running:
            self._confirm(run, cancelled=False)
        elif cancelled:
            self._confirm(run, cancelled=True)
        else:
            self._confirm(run, cancelled=True, reason=NOT_STARTED)

    def _after_finish_failed(self, run: Run, *, cancelled: bool, attempt: int) -> None:
        """Finish raised: the destination's state is unknown, so ask it before acting.

        libvirt kills the source here "even though that may leave no VM at all"; we never
        act on a guess: running on dst -> Confirm(0); surely not -> clean dst and Confirm(1);
        cannot tell -> IN_DOUBT with the source kept paused. A failing cleanup (cancelled)
        Finish is retried like Confirm; if it never succeeds the source, the only copy that
        ever ran, is resumed all the same and the reason says what dst may still hold.
        """
        probe = self._probe(run, run.dst, run.params.dest_name)
        if probe is not None and probe.state.active:
            if cancelled:
                self._give_up(
                    run,
                    "Finish(cancelled=1) failed and the destination runs the domain",
                )
            else:
                self._confirm(run, cancelled=False)
            return
        if probe is None and not cancelled:
            self._give_up(
                run,
                "Finish failed and the destination cannot be probed; the source is kept paused",
            )
            return
        if cancelled and attempt < self.confirm_attempts:
            self._backoff(attempt)
            self._finish(run, cancelled=True, attempt=attempt + 1)
            return
        if cancelled:
            # A cancelling Finish never started the domain, so the source is the only copy.
            self._confirm(
                run,
                cancelled=True,
                reason=reasons.cleanup_failed(run.migration.reason, run.dst.uri),
            )
            return
        self._finish(run, cancelled=True)

    def _backoff(self, attempt: int) -> None:
        time.sleep(min(5.0, self.retry_backoff * 2 ** (attempt - 1)))

    def _confirm(self, run: Run, *, cancelled: bool, reason: Reason = ...) -> None:
        cause = run.migration.reason if reason is ... else reason
        draft = EventDraft(
            kind="intent", step=Step.CONFIRM, cookie_in=run.cookie, cancelled=cancelled,
            detail={"reason": cause} if cancelled and cause else None,
        )  # fmt: skip
        self._intent(run, Trigger.START_CONFIRM, draft, reason=reason)
        self.confirm_with_retries(run, cancelled=cancelled)

    def confirm_with_retries(
        self, run: Run, *, cancelled: bool, first_attempt: int = 1, cause: Reason = ...
    ) -> None:
        """Call Confirm (its intent is journaled) until it succeeds or the attempts run out.

        A rollback ends with ``cause`` as its reason (by default the reason at the start):
        the failures of Confirm attempts explain a stuck migration, not a rollback.
        """
        cookie = run.cookie
        cause = run.migration.reason if cause is ... else cause
        for attempt in range(first_attempt, first_attempt + self.confirm_attempts):
            out = self._call(
                run,
                Step.CONFIRM,
                lambda ctx: run.src.confirm(ctx, run.params, cookie, cancelled),
                attempt=attempt,
            )
            out = self._validated(Step.CONFIRM, out)
            if out.ok:
                trigger = Trigger.ROLLED_BACK if cancelled else Trigger.CONFIRMED
                reason = cause if cancelled else None  # a success clears retry noise
                self._outcome(
                    run,
                    trigger,
                    Step.CONFIRM,
                    out,
                    cookie_out=out.value.cookie,
                    cancelled=cancelled,
                    attempt=attempt,
                    reason=reason,
                )
                return
            last = attempt == first_attempt + self.confirm_attempts - 1
            reason = reasons.step_failed(Step.CONFIRM, out.error or DriverError()) + (
                f" (after {attempt} attempts; `migrator recover` retries it)" if last else ""
            )
            self._outcome(
                run,
                Trigger.CONFIRM_FAILED,
                Step.CONFIRM,
                out,
                cancelled=cancelled,
                attempt=attempt,
                reason=reason,
            )
            if not last:
                time.sleep(min(5.0, self.retry_backoff * 2 ** (attempt - first_attempt)))

    def _give_up(self, run: Run, reason: str) -> None:
        self._transition(run, Trigger.GIVE_UP, EventDraft(kind="in_doubt"), reason=reason)

    def _probe(self, run: Run, driver: Driver, domain: str) -> ProbeResult | None:
        """Ask a host what it holds; journal the answer; None if it cannot tell."""
        start = time.monotonic()
        try:
            result = self._runner.call(
                lambda: driver.probe(domain), step="probe", timeout=self.step_timeout
            )
        except Exception as exc:  # noqa: BLE001 -- any failure means "cannot tell"
            self._note(
                run,
                EventDraft(
                    kind="error",
                    step=Step.PROBE,
                    uri=redact_uri(driver.uri),
                    error_type=type(exc).__name__,
                    error_message=reasons.error_text(exc),
                    duration=time.monotonic() - start,
                ),
            )
            return None
        host = redact_uri(driver.uri)  # journaled: never a password
        detail: dict[str, Any] = {"host": host, "domain": domain, "state": str(result.state)}
        if result.detail:
            detail["detail"] = result.detail  # nested: a driver's keys never shadow ours
        self._note(
            run,
            EventDraft(
                kind="ok",
                step=Step.PROBE,
                uri=host,
                detail=detail,
                duration=time.monotonic() - start,
            ),
        )
        return result

    # -- the write-ahead mechanics ---------------------------------------------------------

    @staticmethod
    def _validated(step: Step, out: Outcome) -> Outcome:
        """A hook's result with a cookie that is not bytes, or too large, is its failure."""
        if not out.ok:
            return out
        cookie = getattr(out.value, "cookie", b"")
        try:
            _check_cookie(step, cookie)
        except DriverError as exc:
            return Outcome(error=exc, duration=out.duration)
        return out

    def _call(
        self,
        run: Run,
        step: Step,
        hook: Callable[[StepContext], R],
        *,
        attempt: int = 1,
    ) -> Outcome:
        timeout = self.step_timeout
        ctx = StepContext(
            migration_id=run.migration.id,
            step=step,
            attempt=attempt,
            fence=run.migration.fence,
            deadline=None if timeout is None else time.monotonic() + timeout,
            progress=self._progress_sink(run),
            aborted=self._abort_check(run),
        )
        start = time.monotonic()
        watched = run.blocking
        try:
            value = self._runner.call(
                lambda: hook(ctx),
                step=str(step),
                timeout=timeout if watched else None,
                tick=(lambda: self.journal.heartbeat(run.migration)) if watched else None,
                tick_every=self.journal.lease_seconds / 3,
            )
        except JournalError:
            raise  # the heartbeat lost the lease: stop driving at once
        except Exception as exc:  # noqa: BLE001 -- every driver failure becomes journal data
            failpoints.hit(f"{step}.called", self._failpoints)
            return Outcome(error=exc, duration=time.monotonic() - start)
        failpoints.hit(f"{step}.called", self._failpoints)
        return Outcome(value=value, duration=time.monotonic() - start)

    def _abort_check(self, run: Run) -> Callable[[], bool]:
        """``ctx.aborted``: reads the persisted abort request, at most every 0.25 s."""
        state = {"at": 0.0, "aborted": False}

        def aborted() -> bool:
            now = time.monotonic()
            if not state["aborted"] and now - state["at"] >= ABORT_POLL:
                state["at"] = now
                state["aborted"] = self.journal.abort_requested(run.migration.id)
            return bool(state["aborted"])

        return aborted

    def _progress_sink(self, run: Run) -> Callable[[Progress], None]:
        last = [0.0]

        def sink(progress: Progress) -> None:
            now = time.monotonic()
            final = progress.remaining == 0
            if self.on_progress is not None:
                self.on_progress(run.migration, progress)
            if final or now - last[0] >= PROGRESS_INTERVAL:
                last[0] = now
                self.journal.set_progress(run.migration, progress.as_dict())

        return sink

    def _intent(
        self, run: Run, trigger: Trigger, draft: EventDraft, *, reason: Reason = ...
    ) -> None:
        self._transition(run, trigger, draft, reason=reason)
        assert draft.step is not None
        failpoints.hit(f"{draft.step}.intent", self._failpoints)

    def _outcome(
        self,
        run: Run,
        trigger: Trigger,
        step: Step,
        out: Outcome,
        *,
        reason: Reason = ...,
        **fields: Any,
    ) -> None:
        if out.ok:
            draft = EventDraft(kind="ok", step=step, duration=out.duration, **fields)
        else:
            assert out.error is not None
            draft = EventDraft(
                kind="error",
                step=step,
                duration=out.duration,
                error_type=type(out.error).__name__,
                error_message=reasons.error_text(out.error),
                **fields,
            )
            reason = reasons.step_failed(step, out.error) if reason is ... else reason
        self._transition(run, trigger, draft, reason=reason)
        failpoints.hit(f"{step}.recorded", self._failpoints)

    def _transition(
        self,
        run: Run,
        trigger: Trigger,
        draft: EventDraft,
        *,
        reason: Reason = ...,
    ) -> None:
        """Fire ``trigger`` on the machine, then commit the event and the new state."""
        before = run.model.state
        state = fire(run.model, trigger)
        try:
            run.migration = self.journal.record(
                run.migration, draft, state=state, coordinator=self.id, reason=reason
            )
        except BaseException:
            run.model.state = before
            raise
        self.hooks.after_commit(run.migration, draft, before, self.id)

    def _note(self, run: Run, draft: EventDraft, *, reason: Reason = ...) -> None:
        """Commit an event that does not change the state (a probe, say)."""
        run.migration = self.journal.record(
            run.migration, draft, state=run.state, coordinator=self.id, reason=reason
        )
        self.hooks.after_commit(run.migration, draft, run.state, self.id)
