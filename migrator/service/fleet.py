"""The routes around the migrations: ``/v1/workers``, ``/v1/stats``, ``/v1/diagram``,
``/healthz``, ``/readyz`` and ``/metrics`` (Prometheus, from the journal)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from migrator import diagram, inspect
from migrator.journal.schema import SCHEMA_HEAD
from migrator.jsonform import iso
from migrator.service import models
from migrator.service.auth import READ
from migrator.service.problems import problem, responses
from migrator.service.state import service
from migrator.workers import fleet

router = APIRouter()
SVG = "image/svg+xml"
PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"


@router.get(
    "/v1/workers", response_model=list[models.WorkerInfo], responses=responses(401, 403, 503),
    tags=["fleet"],
)  # fmt: skip
def workers(request: Request, _auth: None = READ) -> list[dict[str, Any]]:
    """The live workers (as ``migrator workers``): what each holds, its last heartbeat."""
    svc = service(request)
    return [_worker(s) for s in fleet.seen(svc.journal, lease=svc.lease)]


def _worker(s: fleet.Seen) -> dict[str, Any]:
    w = s.info
    return {
        "id": w.id,
        "hostname": w.hostname,
        "pid": w.pid,
        "concurrency": w.concurrency,
        "started_at": iso(w.started_at),
        "heartbeat_at": iso(w.heartbeat_at),
        "stopping": w.stopping,
        "state": str(s.status),
        "holds": list(w.holds),
    }


@router.get(
    "/v1/stats", response_model=models.Stats, responses=responses(401, 403, 503), tags=["fleet"]
)
def stats(request: Request, _auth: None = READ) -> dict[str, Any]:
    """Counts by state, step durations (p50/p95/max), top failure reasons (``migrator
    stats``)."""
    return inspect.stats(service(request).journal)


@router.get(
    "/v1/diagram",
    response_class=Response,
    responses={
        200: {"content": {SVG: {}}, "description": "SVG"},
        **responses(401, 403, 404, 409, 422, 503),
    },
    tags=["fleet"],
)
def draw(
    request: Request,
    migration: Annotated[str | None, Query(min_length=1, max_length=36)] = None,
    _auth: None = READ,
) -> Response:
    """The state machine as SVG (graphviz), the path ``migration`` took highlighted."""
    path = None
    if migration is not None:
        _found, path = inspect.path(service(request).journal, migration)
    return Response(diagram.render(diagram.Format.SVG, path), media_type=SVG)


@router.get("/healthz", response_model=models.Health, tags=["health"])
def healthz() -> dict[str, str]:
    """The server answers."""
    return {"status": "ok"}


@router.get("/readyz", response_model=models.Ready, responses=responses(503), tags=["health"])
def readyz(request: Request) -> Any:
    """The journal answers and its schema is at this server's revision."""
    found = service(request).journal.revision()
    if found != SCHEMA_HEAD:
        return problem(503, f"the journal's schema is at {found}, not {SCHEMA_HEAD}")
    return {"status": "ok", "revision": found}


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {PROMETHEUS: {}}, "description": "Prometheus text"},
        **responses(401, 403, 503),
    },
    tags=["health"],
)
def metrics(request: Request, _auth: None = READ) -> Response:
    """Prometheus metrics computed from the journal (as ``migrator metrics``)."""
    from prometheus_client import CollectorRegistry, generate_latest

    from migrator.metrics import JournalCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(JournalCollector(service(request).journal))
    return Response(generate_latest(registry), media_type=PROMETHEUS)
