"""Traces built from the journal (``migrator/tracing.py``), exported to the SDK's in-memory
exporter: one trace per migration, a span per step under its root, the hosts, driver and
outcome as attributes, event times as span times; after a crash and ``recover`` the same
trace goes on, under a ``recovery`` span."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from migrator.engine.coordinator import Coordinator
from migrator.failpoints import Crash, Failpoints
from migrator.journal.store import Journal
from migrator.records import EventKind, Migration
from migrator.states import TERMINAL
from migrator.traceids import ROOT, span_id
from migrator.tracing import Tracer, enabled, host_attributes
from migrator.workers import Worker
from tests.conftest import Hosts, readable_events, run_cli

STEPS = ["begin", "prepare", "perform", "finish", "confirm"]


def exported(journal: Journal, **options: object) -> list[ReadableSpan]:
    """The spans of every event in the journal, once all are readable."""
    exporter = InMemorySpanExporter()
    tracer = Tracer(journal, SimpleSpanProcessor(exporter), since=None, **options)  # type: ignore[arg-type]
    readable_events(journal)
    tracer.catch_up()
    return list(exporter.get_finished_spans())


def ns(at: datetime) -> int:
    return round(at.timestamp() * 1_000_000) * 1000


def test_a_migration_is_one_trace_with_a_span_per_step_under_its_root(
    db_url: str, hosts: Hosts
) -> None:
    with Journal.open(db_url) as journal:
        m = Coordinator(journal).migrate("vm1", src=hosts.src, dst=hosts.dst)
        events = journal.history(m.id)
        spans = exported(journal)
    assert m.trace_id is not None and len(m.trace_id) == 32
    assert [s.name for s in spans] == [*STEPS, "migration"]
    trace = int(m.trace_id, 16)
    assert {s.context.trace_id for s in spans} == {trace}
    *steps, root = spans
    assert root.parent is None and root.context.span_id == int(span_id(m.trace_id, ROOT), 16)
    assert all(s.parent is not None and s.parent.span_id == root.context.span_id for s in steps)
    intents = [e for e in events if e.kind is EventKind.INTENT]
    outcomes = [e for e in events if e.kind is EventKind.OK]
    assert [s.start_time for s in steps] == [ns(e.at) for e in intents]
    assert [s.end_time for s in steps] == [ns(e.at) for e in outcomes]
    assert root.start_time == ns(m.created_at) and root.end_time == ns(events[-1].at)
    assert root.attributes is not None and steps[0].attributes is not None
    assert root.attributes["migrator.outcome"] == "CONFIRMED"
    assert root.attributes["migrator.source.driver"] == "test"
    assert root.attributes["migrator.destination.uri"] == hosts.dst_uri
    assert [s.attributes["migrator.step.host"] for s in steps if s.attributes] == [
        "source", "destination", "source", "destination", "source",
    ]  # fmt: skip
    assert all(s.attributes and s.attributes["migrator.outcome"] == "ok" for s in steps)
    assert all(s.status.status_code is StatusCode.UNSET for s in spans)


def test_after_a_crash_recover_continues_the_same_trace(tmp_path, hosts: Hosts) -> None:
    db = f"sqlite:///{tmp_path / 'j.db'}"
    crashed = run_cli(
        "migrate", "vm1", "--src", hosts.src_uri, "--dst", hosts.dst_uri, "--live",
        db=db, env={"MIGRATOR_FAILPOINTS": "perform.intent=crash"},
    )  # fmt: skip
    assert crashed.returncode != 0
    with Journal.open(db) as journal:
        [before] = journal.list()
        assert run_cli("recover", db=db).returncode == 0
        after = journal.get(before.id)
        spans = exported(journal)
    assert after.trace_id == before.trace_id and after.state.value == "ROLLED_BACK"
    assert {s.context.trace_id for s in spans} == {int(str(before.trace_id), 16)}
    # perform's intent was journaled, then the process died: a rollback (cancelling Finish
    # and Confirm) by the recovery, under its span
    assert [s.name for s in spans] == [*STEPS, "recovery", "migration"]
    by_name = {s.name: s for s in spans}
    interrupted, recovery = spans[2], by_name["recovery"]
    assert interrupted.attributes and interrupted.attributes["migrator.outcome"] == "interrupted"
    assert interrupted.status.status_code is StatusCode.ERROR
    assert (
        recovery.attributes and recovery.attributes["migrator.recovery.from_state"] == "PERFORMING"
    )
    assert interrupted.end_time == recovery.start_time
    assert by_name["migration"].status.status_code is StatusCode.ERROR
    assert by_name["finish"].attributes and by_name["finish"].attributes["migrator.cancelled"]
    root = by_name["migration"].context.span_id
    assert recovery.parent is not None and recovery.parent.span_id == root
    driven = spans[3:-2]  # the steps the recovery drove, under it
    assert driven and all(s.parent and s.parent.span_id == recovery.context.span_id for s in driven)


def test_a_tracer_of_one_coordinator_exports_only_its_own_migrations(
    tmp_path, hosts: Hosts
) -> None:
    hosts.src.define("vm2", memory_mib=1)
    with Journal.open(f"sqlite:///{tmp_path / 'j.db'}") as journal:
        mine, other = Coordinator(journal), Coordinator(journal)
        kept = mine.migrate("vm1", src=hosts.src, dst=hosts.dst)
        other.migrate("vm2", src=hosts.src, dst=hosts.dst)
        spans = exported(journal, coordinator=mine.id)
    assert {s.context.trace_id for s in spans} == {int(str(kept.trace_id), 16)}
    assert len(spans) == 6


def test_passwords_in_host_uris_are_redacted_in_the_attributes() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    m = Migration(
        "5a9e1c4e-0000-4000-8000-000000000000", "vm1", None, "acme://admin:secret@host1/",
        "acme://host2/", 3, 0, 0, "NEW", None, None, None, 1, 0, False, at, at, None, None,  # type: ignore[arg-type]
    )  # fmt: skip
    attributes = host_attributes(m)
    assert attributes["migrator.source.uri"] == "acme://admin:***@host1/"
    assert attributes["migrator.source.host"] == "host1"
    assert "secret" not in repr(attributes)


def test_tracing_is_on_with_the_flag_or_its_environment_only() -> None:
    assert not enabled(False, {})
    assert not enabled(False, {"MIGRATOR_OTEL": "0"})
    assert enabled(True, {})
    assert enabled(False, {"MIGRATOR_OTEL": "1"})
    assert enabled(False, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})


def test_a_worker_s_takeover_continues_the_same_trace(db_url: str, hosts: Hosts) -> None:
    """The owner died after Perform's intent (its lease lapses); the worker that takes the
    migration over continues its trace: a recovery span by the worker, under the root."""
    with Journal.open(db_url, lease_seconds=1.0) as journal:
        crashed = Coordinator(journal, failpoints=Failpoints({"perform.intent": "raise"}))
        with pytest.raises(Crash):
            crashed.migrate("vm1", src=hosts.src, dst=hosts.dst)
        [m] = journal.list()
        worker = Worker(journal, poll=0.1).start()
        try:
            deadline = time.monotonic() + 60
            while journal.get(m.id).state not in TERMINAL:
                assert time.monotonic() < deadline, "not taken over"
                time.sleep(0.05)
        finally:
            worker.stop()
            assert worker.join(60)
        spans = exported(journal)
    assert {s.context.trace_id for s in spans} == {int(str(m.trace_id), 16)}
    [recovery] = [s for s in spans if s.name == "recovery"]
    assert recovery.attributes and recovery.attributes["migrator.coordinator"] == worker.id
    assert spans[-1].name == "migration"
    assert recovery.parent and recovery.parent.span_id == spans[-1].context.span_id


def test_a_convergence_policy_s_action_is_a_span_of_its_own(db_url: str, tmp_path) -> None:
    """A domain that never converges alone: the policy's abort is a ``policy action`` span
    under the root, with what it did, why, and the migration rolled back."""
    from migrator.convergence.policy import Action, Policy
    from migrator.drivers.test import TestDriver
    from migrator.flags import MigrateFlags

    src = TestDriver(f"test://{tmp_path / 'busy-a'}")
    dst = TestDriver(f"test://{tmp_path / 'busy-b'}")
    src.define("vm1", memory_mib=4, dirty_mib_s=16)
    with Journal.open(db_url) as journal:
        c = Coordinator(journal, step_timeout=60)
        try:
            m = c.migrate(
                "vm1", src=src, dst=dst, flags=MigrateFlags.LIVE, bandwidth=8,
                policy=Policy(stall_iterations=2, action=Action.ABORT),
            )  # fmt: skip
        finally:
            c.close()
        spans = exported(journal)
    assert m.state.value == "ROLLED_BACK"
    [action] = [s for s in spans if s.name == "policy action"]
    [root] = [s for s in spans if s.name == "migration"]
    assert action.parent is not None and action.parent.span_id == root.context.span_id
    assert action.attributes is not None
    assert action.attributes["migrator.policy.action"] == "abort"
    assert action.attributes["migrator.policy.why"] == "stalled"
