"""``migrator --otel`` exports over OTLP/HTTP: a receiver on 127.0.0.1 parses the protobuf
requests (``opentelemetry-proto``) and finds the migration's trace, whose id is the
journaled one and whose root span is the parent that hook commands get in TRACEPARENT.
Without ``--otel`` nothing of OpenTelemetry is even imported."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from migrator.journal.store import Journal
from migrator.traceids import traceparent
from tests.conftest import ROOT, Hosts, run_cli


@contextmanager
def collector() -> Iterator[tuple[str, list[Span]]]:
    """An OTLP/HTTP trace receiver on loopback: its endpoint, and the spans it was sent."""
    spans: list[Span] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            assert self.path == "/v1/traces"
            request = ExportTraceServiceRequest.FromString(body)
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    spans.extend(scope_spans.spans)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", spans
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_migrate_with_otel_sends_its_trace_over_otlp_http(
    db_url: str, tmp_path: Path, hosts: Hosts
) -> None:
    db = db_url
    seen = tmp_path / "traceparent"
    hook = f"sh -c 'echo $TRACEPARENT >> {seen}'"
    with collector() as (endpoint, spans):
        proc = run_cli(
            "--otel", "migrate", "vm1", "--src", hosts.src_uri, "--dst", hosts.dst_uri,
            "--hook-command", hook, db=db, env={"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint},
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    with Journal.open(db) as journal:
        [m] = journal.list()
    assert m.trace_id is not None
    assert sorted(s.name for s in spans) == sorted(
        ["begin", "prepare", "perform", "finish", "confirm", "migration"]
    )
    assert {s.trace_id.hex() for s in spans} == {m.trace_id}
    [root] = [s for s in spans if s.name == "migration"]
    assert all(s.parent_span_id == root.span_id for s in spans if s is not root)
    attributes = {a.key: a.value.string_value for a in root.attributes}
    assert attributes["migrator.outcome"] == "CONFIRMED"
    assert attributes["migrator.source.uri"] == hosts.src_uri
    parents = set(seen.read_text().split())
    assert parents == {traceparent(m.trace_id)} and f"-{root.span_id.hex()}-" in parents.pop()


def test_without_otel_opentelemetry_is_never_imported(tmp_path: Path, hosts: Hosts) -> None:
    script = (
        "import atexit, sys\n"
        "atexit.register(lambda: print(sorted(m for m in sys.modules if 'opentelemetry' in m)))\n"
        "from migrator.cli.main import main\n"
        "main(sys.argv[1:])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MIGRATOR_DB": f"sqlite:///{tmp_path / 'j.db'}"}
    for name in (
        "MIGRATOR_OTEL",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ):
        env.pop(name, None)
    proc = subprocess.run(
        [sys.executable, "-c", script, "migrate", "vm1", "--src", hosts.src_uri, "--dst",
         hosts.dst_uri, "--json"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "[]"


def test_a_sigkilled_migrate_and_its_recover_export_one_trace(tmp_path: Path, hosts: Hosts) -> None:
    """``migrate --otel`` is SIGKILLed in Perform after it exported Begin and Prepare;
    ``recover --otel`` exports the interrupted Perform, the recovery and the rest: one
    trace, under the root the first process named."""
    db = f"sqlite:///{tmp_path / 'j.db'}"
    hosts.src.set_fault("perform", "slow", seconds=120)
    with collector() as (endpoint, spans):
        env = {
            **os.environ, "PYTHONPATH": str(ROOT), "MIGRATOR_DB": db,
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "20",
        }  # fmt: skip
        env.pop("MIGRATOR_FAILPOINTS", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "migrator", "--otel", "migrate", "vm1", "--src",
             hosts.src_uri, "--dst", hosts.dst_uri],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while len(spans) < 2:
                assert proc.poll() is None and time.monotonic() < deadline, "no span exported"
                time.sleep(0.02)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        first = [s.name for s in spans]
        hosts.src.clear_faults()
        recovered = run_cli(
            "--otel", "recover", db=db, env={"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}
        )
        assert recovered.returncode == 0, recovered.stderr
    with Journal.open(db) as journal:
        [m] = journal.list()
    assert first == ["begin", "prepare"] and m.state.value == "ROLLED_BACK"
    assert {s.trace_id.hex() for s in spans} == {m.trace_id}
    names = [s.name for s in spans]
    assert names == ["begin", "prepare", "perform", "finish", "confirm", "recovery", "migration"]
    root = spans[-1].span_id
    assert spans[0].parent_span_id == root and spans[5].parent_span_id == root
    assert spans[2].parent_span_id == root  # perform, started before the recovery
    assert all(s.parent_span_id == spans[5].span_id for s in spans[3:5])
