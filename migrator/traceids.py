"""The W3C trace context of a migration: its trace id (journaled, ``Migration.trace_id``)
and span ids derived from the journal, so that every process that reads it names the same
spans.

A span id is a hash of the trace id and what the span stands for (the migration itself, a
step by the seq of its intent, a recovery by the seq of its claim note): the observer that
exports spans (``tracing.py``), hook commands (``TRACEPARENT``) and webhooks
(``traceparent``) agree on them without talking to each other, and a span exported twice
(after a crash) keeps its id. No I/O, no import of OpenTelemetry.
"""

from __future__ import annotations

import hashlib

ROOT = "migration"
"""What the root span of a migration's trace stands for."""


def span_id(trace_id: str, what: str) -> str:
    """The span id (16 hex digits, never all zeros) of ``what`` in the trace ``trace_id``."""
    digest = hashlib.sha256(f"{trace_id}/{what}".encode()).hexdigest()
    return digest[:16] if digest[:16].strip("0") else "0000000000000001"


def step_span(seq: int) -> str:
    """What the span of a step whose intent is event ``seq`` stands for."""
    return f"step/{seq}"


def recovery_span(seq: int) -> str:
    """What the span of a recovery (or takeover) whose claim note is event ``seq`` stands for."""
    return f"recovery/{seq}"


def traceparent(trace_id: str | None, what: str = ROOT) -> str | None:
    """The W3C ``traceparent`` of span ``what`` (sampled); None without a trace id (a
    migration journaled before schema revision 0007 has one after the upgrade)."""
    if not trace_id or len(trace_id) != 32:
        return None
    return f"00-{trace_id}-{span_id(trace_id, what)}-01"
