"""A migration's trace context: span ids derived from the trace id and what a span stands
for, the same in every process; a W3C traceparent only with a trace id."""

from __future__ import annotations

import re

from migrator.traceids import ROOT, recovery_span, span_id, step_span, traceparent

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_span_ids_are_the_same_for_the_same_span_and_differ_between_spans() -> None:
    ids = [span_id(TRACE, what) for what in (ROOT, step_span(3), step_span(5), recovery_span(3))]
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) and i.strip("0") for i in ids)
    assert len(set(ids)) == 4
    assert span_id(TRACE, step_span(3)) == ids[1]
    assert span_id("0" * 31 + "1", ROOT) != ids[0]


def test_the_traceparent_names_the_root_span_of_the_trace() -> None:
    assert traceparent(TRACE) == f"00-{TRACE}-{span_id(TRACE, ROOT)}-01"
    assert traceparent(None) is None and traceparent("") is None and traceparent("abc") is None
