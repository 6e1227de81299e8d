"""Prometheus metrics (the optional extra ``metrics``: ``pip install 'migrator[metrics]'``).

Two sources, one set of names, so a dashboard works with either:

- :class:`MetricsHook`, a hook for a controller that embeds the library: it counts what its
  own coordinators do, as they do it;
- :func:`serve_journal` (``migrator metrics --port P``): a collector that reads the journal
  at each scrape, for a controller that does not embed the library. Its counters are the
  journal's counts, so they drop when ``migrator prune`` deletes migrations.

Metrics: ``migrator_migrations_total{outcome}`` (counter: migrations that reached an end
state), ``migrator_step_duration_seconds{step,result}`` (histogram: how long driver hooks
took, ``result`` ``ok`` or ``error``), ``migrator_migrations_in_flight`` (gauge); from the
journal also ``migrator_queue_depth`` (gauge: migrations waiting for a worker) and
``migrator_takeovers_total`` (counter: migrations taken over from another coordinator,
docs/workers.md), and for each migration in Perform the job statistics of its last
progress sample (gauges labelled ``migration``, ``domain``; docs/convergence.md):
``migrator_perform_remaining_bytes``, ``migrator_perform_dirty_rate_bytes``,
``migrator_perform_iteration``, ``migrator_perform_expected_downtime_ms``,
``migrator_perform_throttle_percent``, ``migrator_perform_postcopy_requests``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from migrator.engine.observers import ENDS, HookEvent, HookName
from migrator.errors import UsageError
from migrator.journal.analytics import Histogram
from migrator.journal.queue import Queue
from migrator.journal.store import Journal
from migrator.states import State

BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0)
OUTCOMES = "migrator_migrations_total"
DURATIONS = "migrator_step_duration_seconds"
QUEUE_DEPTH = "migrator_queue_depth"
TAKEOVERS = "migrator_takeovers_total"
IN_FLIGHT = "migrator_migrations_in_flight"
JOB_STATS = (
    ("remaining", "migrator_perform_remaining_bytes", "Bytes Perform has left to send."),
    ("dirty_rate", "migrator_perform_dirty_rate_bytes", "Bytes the guest dirties per second."),
    ("passes", "migrator_perform_iteration", "Passes over the guest memory so far."),
    ("expected_downtime_ms", "migrator_perform_expected_downtime_ms", "Expected downtime, ms."),
    ("throttle_pct", "migrator_perform_throttle_percent", "Auto-converge vCPU throttle."),
    ("postcopy_requests", "migrator_perform_postcopy_requests", "Post-copy page requests."),
)
"""Each progress key of a migration in Perform, its gauge and what it means."""


class MetricsUnavailable(UsageError):
    def __init__(self) -> None:
        super().__init__("metrics need prometheus-client: pip install 'migrator[metrics]'")


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise MetricsUnavailable() from None
    return prometheus_client


class MetricsHook:
    """A hook that keeps the three metrics in ``registry`` (the default one if None)."""

    def __init__(self, registry: Any = None) -> None:
        prom = _prometheus()
        kw = {} if registry is None else {"registry": registry}
        self.outcomes = prom.Counter(
            OUTCOMES.removesuffix("_total"), "Migrations that reached an end state.",
            ["outcome"], **kw,
        )  # fmt: skip
        self.durations = prom.Histogram(
            DURATIONS, "Duration of driver hooks.", ["step", "result"], buckets=BUCKETS, **kw
        )
        self.in_flight = prom.Gauge(IN_FLIGHT, "Migrations being driven.", **kw)
        self._running: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, hook_event: HookEvent) -> None:
        event, mid = hook_event.event, hook_event.migration.id
        if hook_event.name in (HookName.MIGRATION_STARTED, HookName.RECOVERED):
            self._track(mid, running=True)
        elif hook_event.name is HookName.STEP_FINISHED and event.duration is not None:
            step = event.step.value if event.step else "?"
            self.durations.labels(step, event.kind).observe(event.duration)
        elif hook_event.name is HookName.MIGRATION_FINISHED:
            self.outcomes.labels(str(event.state)).inc()
            self._track(mid, running=False)

    def _track(self, migration_id: str, *, running: bool) -> None:
        with self._lock:
            if running:
                self._running.add(migration_id)
            else:
                self._running.discard(migration_id)
            self.in_flight.set(len(self._running))


class JournalCollector:
    """Computes the metrics from the journal at each scrape."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def describe(self) -> list[Any]:
        return []  # nothing to check at registration: the journal is read at each scrape

    def collect(self) -> Iterator[Any]:
        _prometheus()
        from prometheus_client import core

        by_state = dict(self.journal.count_by_state())
        outcomes = core.CounterMetricFamily(
            OUTCOMES, "Migrations that reached an end state.", labels=["outcome"]
        )
        for state in sorted(ENDS):
            outcomes.add_metric([str(state)], by_state.get(state, 0))
        yield outcomes
        queued = by_state.get(State.QUEUED, 0)
        in_flight = sum(n for s, n in by_state.items() if s not in ENDS) - queued
        yield core.GaugeMetricFamily(IN_FLIGHT, "Migrations being driven.", value=in_flight)
        yield core.GaugeMetricFamily(QUEUE_DEPTH, "Migrations waiting for a worker.", value=queued)
        takeovers = Queue(self.journal).takeovers()
        yield core.CounterMetricFamily(
            TAKEOVERS, "Migrations taken over from another coordinator.", value=takeovers
        )
        yield self._durations(core, self.journal.duration_buckets(BUCKETS))
        yield from self._job_stats(core)

    def _job_stats(self, core: Any) -> Iterator[Any]:
        performing = self.journal.list(states=[State.PERFORMING], limit=1000)
        for key, name, text in JOB_STATS:
            family = core.GaugeMetricFamily(name, text, labels=["migration", "domain"])
            for m in performing:
                value = (m.progress or {}).get(key)
                if isinstance(value, int | float):
                    family.add_metric([m.id, m.domain], value)
            yield family

    @staticmethod
    def _durations(core: Any, rows: dict[tuple[str, str], Histogram]) -> Any:
        family = core.HistogramMetricFamily(
            DURATIONS, "Duration of driver hooks.", labels=["step", "result"]
        )
        for labels, (counts, total, n) in sorted(rows.items()):
            buckets = [(str(b), c) for b, c in zip(BUCKETS, counts, strict=True)]
            buckets.append(("+Inf", n))
            family.add_metric(list(labels), buckets, total)
        return family


@dataclass
class Server:
    """A running metrics server; ``port`` is the one it listens on (``--port 0`` picks)."""

    http: Any
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.http.server_port)

    def wait(self) -> None:
        while self.thread.is_alive():
            self.thread.join(1.0)

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def serve_journal(journal: Journal, *, port: int, addr: str = "127.0.0.1") -> Server:
    """Serve ``/metrics`` computed from ``journal`` on a background thread."""
    prom = _prometheus()
    registry = prom.CollectorRegistry(auto_describe=False)
    registry.register(JournalCollector(journal))
    try:
        http, thread = prom.start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        raise UsageError(f"cannot listen on {addr}:{port}: {exc.strerror or exc}") from None
    return Server(http, thread)
