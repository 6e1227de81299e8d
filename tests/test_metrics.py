"""Prometheus metrics: the hook for embedders, and the journal's server, scraped for real."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from migrator.drivers.api import MigrationParams, PerformResult
from migrator.drivers.null import NullDriver
from migrator.engine.coordinator import Coordinator
from migrator.journal.store import Journal
from migrator.metrics import MetricsHook, serve_journal
from migrator.records import StepContext
from tests.conftest import ROOT, run_cli


class PerformFails(NullDriver):
    def perform(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, uri: str
    ) -> PerformResult:
        raise OSError("link down")


def migrate(journal: Journal, src_cls: type[NullDriver] = NullDriver, **kw: object) -> None:
    name = uuid.uuid4().hex[:10]
    src, dst = src_cls(f"null://src-{name}"), NullDriver(f"null://dst-{name}")
    src.define("vm1")
    coordinator = Coordinator(journal, **kw)  # type: ignore[arg-type]
    try:
        coordinator.migrate("vm1", src=src, dst=dst)
    finally:
        coordinator.close()  # the hooks were given every event


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        body: bytes = r.read()
    return body.decode()


def test_metrics_hook_counts_outcomes_steps_and_in_flight(journal: Journal) -> None:
    registry = CollectorRegistry()
    hook = MetricsHook(registry)
    migrate(journal, hooks=[hook])
    migrate(journal, PerformFails, hooks=[hook])
    value = registry.get_sample_value
    assert value("migrator_migrations_total", {"outcome": "CONFIRMED"}) == 1
    assert value("migrator_migrations_total", {"outcome": "ROLLED_BACK"}) == 1
    perform_ok = {"step": "perform", "result": "ok"}
    assert value("migrator_step_duration_seconds_count", perform_ok) == 1
    perform_err = {"step": "perform", "result": "error"}
    assert value("migrator_step_duration_seconds_count", perform_err) == 1
    assert value("migrator_migrations_in_flight") == 0


def test_journal_server_serves_metrics_over_http(journal: Journal) -> None:
    migrate(journal)
    migrate(journal, PerformFails)
    server = serve_journal(journal, port=0)
    try:
        text = scrape(server.port)
        migrate(journal)
        again = scrape(server.port)
    finally:
        server.close()
    assert 'migrator_migrations_total{outcome="ROLLED_BACK"} 1.0' in text
    assert 'migrator_migrations_total{outcome="CONFIRMED"} 1.0' in text
    assert "migrator_migrations_in_flight 0.0" in text
    assert 'migrator_step_duration_seconds_count{result="error",step="perform"} 1.0' in text
    assert 'migrator_step_duration_seconds_bucket{le="+Inf",result="ok",step="begin"} 2.0' in text
    assert 'migrator_migrations_total{outcome="CONFIRMED"} 2.0' in again  # read at each scrape


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_metrics_command_serves_the_journal(journal: Journal) -> None:
    migrate(journal)
    port = free_port()
    env = {**os.environ, "MIGRATOR_DB": str(journal.engine.url)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "migrator", "metrics", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                text = scrape(port)
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert 'migrator_migrations_total{outcome="CONFIRMED"} 1.0' in text


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_metrics_without_the_extra_is_a_one_line_error(db_url: str, tmp_path: Path) -> None:
    (tmp_path / "prometheus_client.py").write_text("raise ImportError('not installed')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    proc = run_cli("metrics", "--port", str(free_port()), db=db_url, env=env)
    assert proc.returncode == 2
    assert proc.stderr == (
        "migrator: error: metrics need prometheus-client: pip install 'migrator[metrics]'\n"
    )


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_metrics_on_a_busy_port_is_a_one_line_error(db_url: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        proc = run_cli("metrics", "--port", str(s.getsockname()[1]), db=db_url)
    assert proc.returncode == 2
    [line] = proc.stderr.splitlines()
    assert line.startswith("migrator: error: cannot listen on 127.0.0.1:")
