"""OpenTelemetry traces of migrations, built from the journal's committed events.

No span is opened inside a step: a ``Tracer`` thread tails the journal by position (as
webhooks and hook delivery do) and turns each migration's events into finished spans
whose start and end are the times of the events that bound them (docs/tracing.md):

- the root span ``migration``, from the migration's creation to its end state;
- a span per step (``begin``, ``prepare``, ...), from its intent to its outcome; a step
  whose coordinator died before its outcome ends, ``interrupted``, at the recovery;
- a span ``recovery`` per claim of the migration by ``recover`` or a worker's takeover,
  parent of the steps it drove, and ``resolve`` for an operator's decision.

Trace and span ids come from the journal (``traceids.py``), so a migration recovered or
taken over by another process continues the same trace under the same root. The
OpenTelemetry SDK is imported only when a ``Tracer`` is built (extra ``tracing``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from migrator.errors import JournalUnavailable, MigratorError
from migrator.journal.store import Journal
from migrator.records import OUTCOMES, Entry, Event, EventKind, Migration
from migrator.redaction import redact
from migrator.states import TERMINAL, Step
from migrator.traceids import ROOT, recovery_span, span_id, step_span

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

log = logging.getLogger("migrator.tracing")

ENABLE_ENV = "MIGRATOR_OTEL"
"""``MIGRATOR_OTEL=1`` turns tracing on, as ``--otel`` does."""
ENDPOINT_ENVS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
"""Either turns tracing on too: where the OTLP/HTTP exporter sends the spans."""
PAGE = 500
SETTLE = 5.0
"""Seconds ``stop`` waits at most for the last committed events to become readable."""
REMEMBERED = 10_000
"""Migrations a builder follows at most (the most recent): one handed over unfinished to
another process is forgotten after as many others."""
MESSAGE_MAX = 500
"""Characters of a step's error message kept as an attribute."""
_ON_DESTINATION = frozenset(s for s in Step if s.value.startswith(("prepare", "finish")))


def enabled(flag: bool = False, env: Mapping[str, str] | None = None) -> bool:
    """Whether traces are wanted: ``--otel``, ``MIGRATOR_OTEL=1`` or an OTLP endpoint set."""
    env = os.environ if env is None else env
    on = env.get(ENABLE_ENV, "").lower() in ("1", "true", "yes")
    return flag or on or any(env.get(name) for name in ENDPOINT_ENVS)


@dataclass(frozen=True, slots=True)
class SpanData:
    """A finished span as the journal gives it, before OpenTelemetry sees it."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    start: datetime
    end: datetime
    attributes: dict[str, str | int | float | bool]
    error: str | None = None
    """The status description of a span that failed; None: it did not."""


def host_attributes(migration: Migration) -> dict[str, str | int | float | bool]:
    """The migration's attributes on every span: hosts (passwords redacted), driver."""
    attributes: dict[str, str | int | float | bool] = {
        "migrator.migration.id": migration.id,
        "migrator.domain": migration.domain,
        "migrator.protocol": migration.protocol,
    }
    for role, uri in (("source", migration.src), ("destination", migration.dst)):
        shown = redact(uri)
        parts = urlsplit(shown)
        attributes[f"migrator.{role}.uri"] = shown
        attributes[f"migrator.{role}.host"] = parts.hostname or parts.path or shown
        attributes[f"migrator.{role}.driver"] = parts.scheme
    return attributes


@dataclass
class _Trail:
    """What the builder remembers of one migration between its events."""

    migration: Migration
    trace_id: str
    intents: dict[Step, Event] = field(default_factory=dict)
    recovery: Event | None = None


class Builder:
    """Turns the committed events of migrations, in order, into finished spans."""

    def __init__(self) -> None:
        self._trails: dict[str, _Trail] = {}

    def knows(self, migration_id: str) -> bool:
        return migration_id in self._trails

    def follow(self, migration: Migration) -> None:
        """Start following ``migration`` (its trace id from the journal)."""
        trace_id = migration.trace_id or migration.id.replace("-", "")
        self._trails[migration.id] = _Trail(migration, trace_id)
        if len(self._trails) > REMEMBERED:
            del self._trails[next(iter(self._trails))]

    def feed(self, entry: Entry) -> list[SpanData]:
        """The spans ``entry``'s event ends (none for a migration not followed)."""
        event = entry.event
        trail = self._trails.get(event.migration_id)
        if trail is None:
            return []
        spans: list[SpanData] = []
        if event.kind is EventKind.INTENT and event.step is not None:
            trail.intents[event.step] = event
        elif event.kind in OUTCOMES and event.step in trail.intents:
            spans.append(self._step(trail, trail.intents.pop(event.step), event))
        elif event.kind is EventKind.RECOVERY and "previous_owner" in (event.detail or {}):
            spans += self._interrupted(trail, event)
            if trail.recovery is not None:
                spans.append(self._recovery(trail, trail.recovery, event))
            trail.recovery = event
        elif event.kind is EventKind.RESOLVE:
            spans.append(self._span(trail, "resolve", f"resolve/{event.seq}", event, event))
        elif event.kind is EventKind.ACTION:  # a convergence policy's action
            span = self._span(trail, "policy action", f"action/{event.seq}", event, event)
            for key, value in (event.detail or {}).items():
                if key in ("action", "why", "outcome") and isinstance(value, str):
                    span.attributes[f"migrator.policy.{key}"] = _bounded(value)
            spans.append(span)
        if event.state in TERMINAL:
            spans += self._ended(trail, event, entry.reason)
        return spans

    def _ended(self, trail: _Trail, end: Event, reason: str | None) -> list[SpanData]:
        spans = self._interrupted(trail, end)
        if trail.recovery is not None:
            spans.append(self._recovery(trail, trail.recovery, end))
        del self._trails[end.migration_id]
        m = trail.migration
        error = None if end.state.value == "CONFIRMED" else f"ended {end.state.value}"
        attributes = {**host_attributes(m), "migrator.outcome": end.state.value}
        if reason:
            attributes["migrator.reason"] = _bounded(reason)
        root = SpanData(
            "migration", trail.trace_id, span_id(trail.trace_id, ROOT), None,
            m.created_at, end.at, attributes, error,
        )  # fmt: skip
        return [*spans, root]

    def _interrupted(self, trail: _Trail, at: Event) -> list[SpanData]:
        """The steps whose coordinator never journaled an outcome, ended at ``at``."""
        spans = [
            self._step(trail, intent, at, interrupted=True) for intent in trail.intents.values()
        ]
        trail.intents.clear()
        return spans

    def _step(
        self, trail: _Trail, intent: Event, outcome: Event, *, interrupted: bool = False
    ) -> SpanData:
        assert intent.step is not None
        name = intent.step.value
        span = self._span(trail, name, step_span(intent.seq), intent, outcome)
        attributes = span.attributes
        attributes["migrator.step"] = name
        if intent.step is not Step.PROBE:  # a probe asks either host
            on = "destination" if intent.step in _ON_DESTINATION else "source"
            attributes["migrator.step.host"] = on
        attributes["migrator.attempt"] = intent.attempt
        error = None
        if interrupted:
            attributes["migrator.outcome"] = "interrupted"
            error = "no outcome journaled: its coordinator stopped"
        else:
            attributes["migrator.outcome"] = outcome.kind.value
            if outcome.kind is EventKind.ERROR:
                error = _bounded(f"{outcome.error_type}: {outcome.error_message}")
                attributes["migrator.error.type"] = outcome.error_type or ""
        if intent.cancelled is not None:
            attributes["migrator.cancelled"] = intent.cancelled
        return SpanData(**{**_fields(span), "error": error})

    def _recovery(self, trail: _Trail, claim: Event, end: Event) -> SpanData:
        span = self._span(trail, "recovery", recovery_span(claim.seq), claim, end, parent=ROOT)
        for key, value in (claim.detail or {}).items():
            if isinstance(value, str) and key in ("action", "because", "from_state", "plan"):
                span.attributes[f"migrator.recovery.{key}"] = _bounded(value)
        span.attributes["migrator.coordinator"] = claim.coordinator or ""
        span.attributes["migrator.outcome"] = end.state.value
        return span

    def _span(
        self, trail: _Trail, name: str, what: str, start: Event, end: Event, *, parent: str = ""
    ) -> SpanData:
        """A span of ``trail``'s trace from ``start`` to ``end``; its parent the open
        recovery (if any) or the root, unless ``parent`` names it."""
        trace = trail.trace_id
        if not parent:
            open_recovery = trail.recovery
            parent = ROOT if open_recovery is None else recovery_span(open_recovery.seq)
        attributes = host_attributes(trail.migration)
        if start.coordinator:
            attributes["migrator.coordinator"] = start.coordinator
        return SpanData(
            name, trace, span_id(trace, what), span_id(trace, parent),
            start.at, max(end.at, start.at), attributes,
        )  # fmt: skip


def _fields(span: SpanData) -> dict[str, Any]:
    return {name: getattr(span, name) for name in SpanData.__slots__}


def _bounded(text: str) -> str:
    return text if len(text) <= MESSAGE_MAX else text[:MESSAGE_MAX] + "…"


class Tracer:
    """Exports the spans of the journal's migrations to ``processor``, from a thread that
    tails the journal (``start``/``stop``; the server can run one too).

    ``since``: the position to read after (``"now"``: the journal's last position when
    started; None: from the first event). ``coordinator``: only the events that coordinator
    journaled (a command's own migrations; a migration it recovers is read from its first
    event, so a step its dead owner left without an outcome is ended by the recovery).
    """

    def __init__(
        self,
        journal: Journal,
        processor: SpanProcessor,
        *,
        coordinator: str | None = None,
        since: int | str | None = "now",
        poll: float = 0.5,
    ) -> None:
        from opentelemetry.sdk.resources import Resource

        self.journal, self.processor, self.coordinator = journal, processor, coordinator
        self.poll = poll
        self._cursor = journal.last_position() if since == "now" else _position(since)
        self._builder = Builder()
        self._resource = Resource.create({"service.name": "migrator"})
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stop_listening: Callable[[], None] | None = None

    def start(self) -> Tracer:
        self._stop_listening = self.journal.listen(lambda _mid, _owner: self._wake.set())
        self._thread = threading.Thread(target=self._run, name="migrator-tracing", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Export what was committed until now (waiting up to ``SETTLE`` seconds for it to
        become readable), flush the processor, and stop."""
        if self._stop_listening is not None:
            self._stop_listening()
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            self._settle(min(timeout, SETTLE))
        except MigratorError as exc:
            log.warning("traces of the last events not exported: %s", exc)
        self.processor.force_flush(int(timeout * 1000))
        self.processor.shutdown()

    def _settle(self, timeout: float) -> None:
        """``catch_up`` until every event committed by now was read: on PostgreSQL a
        transaction open elsewhere on the server holds readers back for a while."""
        newest = self.journal.last_position(readable=False)
        deadline = time.monotonic() + timeout
        self.catch_up()
        while newest is not None and (self._cursor or 0) < newest:
            if time.monotonic() >= deadline:
                log.warning("traces of events past position %s not exported", self._cursor)
                return
            time.sleep(0.05)
            self.catch_up()

    def catch_up(self) -> int:
        """Export the spans of every event committed so far; how many spans."""
        exported = 0
        while True:
            entries = self.journal.events_after(self._cursor, PAGE)
            for entry in entries:
                for span in self._spans(entry):
                    self.processor.on_end(as_readable(span, self._resource))
                    exported += 1
                self._cursor = entry.position
            if len(entries) < PAGE:
                return exported

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.catch_up()
            except (JournalUnavailable, MigratorError) as exc:
                log.warning("traces not exported yet: %s", exc)
            except Exception:  # a bug must not end tracing for good
                log.exception("traces not exported")
            self._wake.wait(self.poll)
            self._wake.clear()

    def _spans(self, entry: Entry) -> list[SpanData]:
        event = entry.event
        if self.coordinator is not None and event.coordinator != self.coordinator:
            return []
        if not self._builder.knows(event.migration_id):
            self._follow(event.migration_id, entry.position)
        return self._builder.feed(entry)

    def _follow(self, migration_id: str, position: int) -> None:
        """Follow a migration first seen at ``position``: what came before is read
        without exporting, so its open steps and recovery are known."""
        self._builder.follow(self.journal.get(migration_id))
        for earlier in self.journal.entries_from(migration_id, 1):
            if earlier.position >= position:
                break
            self._builder.feed(earlier)


def as_readable(span: SpanData, resource: Any) -> ReadableSpan:
    """``span`` as the SDK's finished span, with its journaled ids and times."""
    from opentelemetry import trace as api
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    flags = api.TraceFlags(api.TraceFlags.SAMPLED)
    trace_id = int(span.trace_id, 16)
    context = api.SpanContext(trace_id, int(span.span_id, 16), is_remote=False, trace_flags=flags)
    parent = None
    if span.parent_id is not None:
        parent = api.SpanContext(trace_id, int(span.parent_id, 16), False, trace_flags=flags)
    status = api.Status(api.StatusCode.UNSET)
    if span.error is not None:
        status = api.Status(api.StatusCode.ERROR, span.error)
    return ReadableSpan(
        span.name,
        context=context,
        parent=parent,
        resource=resource,
        attributes=span.attributes,
        status=status,
        start_time=_nanoseconds(span.start),
        end_time=_nanoseconds(span.end),
        instrumentation_scope=InstrumentationScope("migrator"),
    )


def otlp_processor() -> SpanProcessor:
    """A batch processor with the OTLP/HTTP exporter, configured by the ``OTEL_*``
    environment (endpoint, headers, timeout), as every OpenTelemetry SDK is."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    return BatchSpanProcessor(OTLPSpanExporter())


def _position(since: int | str | None) -> int | None:
    if isinstance(since, str):
        raise ValueError(f'since must be a position, None or "now", not {since!r}')
    return since


def _nanoseconds(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(microseconds=1) * 1000


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
