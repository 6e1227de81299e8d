"""How fast the journal's observers keep up (run on demand, not in the test run).

    python -m tests.benchmarks.bench_observers [--migrations N] [--db URL]

``N`` migrations between ``null://`` hosts (10 events each) are journaled first (SQLite in
a temporary directory unless ``--db``); then one webhook endpoint (a receiver on
127.0.0.1, ``tests/webhooks/receiver.py``) is given every event from the first, and a
tracer builds the spans of every event into the SDK's in-memory exporter. Reported:
events per second delivered, spans per second built.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid

from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from migrator import Coordinator, Journal
from migrator.drivers.null import NullDriver
from migrator.tracing import Tracer
from migrator.webhooks import Endpoint, Webhooks
from tests.webhooks.receiver import receiving


def journaled(journal: Journal, count: int) -> int:
    coordinator = Coordinator(journal)
    for _ in range(count):
        name = uuid.uuid4().hex[:8]
        src, dst = NullDriver(f"null://s-{name}"), NullDriver(f"null://d-{name}")
        src.define("vm")
        coordinator.migrate("vm", src=src, dst=dst)
    coordinator.close()
    return len(journal.events_after(None, limit=10 * count + 10))


def webhooks(journal: Journal, events: int) -> float:
    with receiving(b"k") as receiver:
        deliverer = Webhooks(journal, [Endpoint("bench", receiver.url, b"k", start="start")])
        began = time.perf_counter()
        deliverer.start()
        receiver.wait_for(events, timeout=600)
        took = time.perf_counter() - began
        deliverer.stop(timeout=10)
    return events / took


def traces(journal: Journal) -> tuple[int, float]:
    tracer = Tracer(journal, SimpleSpanProcessor(InMemorySpanExporter()), since=None)
    began = time.perf_counter()
    spans = tracer.catch_up()
    return spans, spans / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--migrations", type=int, default=200)
    parser.add_argument("--db")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db or f"sqlite:///{tmp}/journal.db"
        with Journal.open(url, upgrade=True) as journal:
            events = journaled(journal, args.migrations)
            rate = webhooks(journal, events)
            print(f"webhooks: {events} events, {rate:.0f} events/s to one endpoint")
            spans, per_second = traces(journal)
            print(f"traces: {spans} spans, {per_second:.0f} spans/s built and exported")


if __name__ == "__main__":
    main()
