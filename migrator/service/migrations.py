"""``/v1/migrations``: queue, list, show and act on migrations, each route one call of the
library function the matching command calls (``submit``, ``list``, ``show``, ``abort``,
``resolve``, and the runtime requests ``set-downtime``, ``set-speed``, ``postcopy``)."""

from __future__ import annotations

import hashlib
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from migrator import inspect
from migrator.errors import JournalError, MigrationNotFound, MigratorError, UsageError
from migrator.flags import MigrateFlags, parse_flags
from migrator.journal.tokens import Tokens
from migrator.records import EventKind
from migrator.records import Migration as Record
from migrator.service import models
from migrator.service.auth import OPERATE, READ
from migrator.service.problems import responses
from migrator.service.state import Service, service
from migrator.states import State

router = APIRouter(prefix="/v1/migrations", tags=["migrations"])
# The reads answer with the journal's JSON form as it is (``jsonform``): FastAPI's check
# and re-encoding of it against the response model cost more than the read itself. The
# models still document it, and the schemathesis test checks every answer against them.
PAGE = 50
MAX_PAGE = 1000
IDEMPOTENT_WAIT = 30.0
"""Seconds a retried request waits for the first one with its key to finish."""

MigrationId = Annotated[
    str, Path(min_length=1, max_length=36, description="A migration id, or a unique prefix.")
]
Key = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)]


@router.post(
    "",
    status_code=201,
    response_model=models.Migration,
    responses={
        200: {"model": models.Migration, "description": "Queued before, with this key"},
        **responses(400, 401, 403, 409, 413, 422, 502, 503),
    },
)
def submit(
    request: Request, body: models.MigrationRequest, response: Response, key: Key = None,
    _auth: None = OPERATE,
) -> dict[str, Any]:  # fmt: skip
    """Queue a migration for a worker (as ``migrator submit``); with an ``Idempotency-Key``
    a retried request returns the migration the first one queued, never a second one."""
    svc = service(request)
    if key is None:
        queued = _queue(svc, body)
    else:
        queued, first = _once(svc, key, body)
        response.status_code = 201 if first else 200
    response.headers["Location"] = f"/v1/migrations/{queued.id}"
    return inspect.migration_dict(queued)


def _queue(svc: Service, body: models.MigrationRequest, migration_id: str | None = None) -> Record:
    try:
        flags = parse_flags(body.flags)
    except ValueError as exc:
        raise UsageError(f"flags: {exc}") from None
    if body.live:
        flags |= MigrateFlags.LIVE
    if body.tunnelled:
        flags |= MigrateFlags.TUNNELLED
    return svc.coordinator.submit(
        body.domain,
        src=svc.connect(body.src),
        dst=svc.connect(body.dst),
        flags=flags,
        dname=body.dname,
        bandwidth=body.bandwidth,
        protocol=body.protocol,
        migration_id=migration_id,
    )


def _once(svc: Service, key: str, body: models.MigrationRequest) -> tuple[Record, bool]:
    """The migration of ``key``'s request: queued now (True), or by an earlier request.

    The key is reserved with the id of the migration to queue before it is queued, and a
    migration id is journaled at most once: whichever requests race, or die, with one
    key, at most one migration is queued for it."""
    tokens = Tokens(svc.journal)
    wanted = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
    deadline = time.monotonic() + IDEMPOTENT_WAIT
    while True:
        held = tokens.reserve(key, wanted, str(uuid.uuid4()))
        if held.request_hash != wanted:
            raise UsageError("this Idempotency-Key was used for a different request")
        found = None if held.mine else _journaled(svc, held.migration_id)
        if found is not None:
            return found, False
        if held.mine or held.stale():
            return _queue_once(svc, tokens, key, body, held.migration_id)
        if time.monotonic() > deadline:
            raise HTTPException(409, "a request with this Idempotency-Key is still running")
        time.sleep(0.1)


def _queue_once(
    svc: Service, tokens: Tokens, key: str, body: models.MigrationRequest, migration_id: str
) -> tuple[Record, bool]:
    try:
        return _queue(svc, body, migration_id), True
    except JournalError:
        found = _journaled(svc, migration_id)  # another request with the key queued it
        if found is None:
            raise
        return found, False
    except MigratorError:
        tokens.free(key)  # refused: nothing queued, the corrected request may use the key
        raise


def _journaled(svc: Service, migration_id: str) -> Record | None:
    try:
        return svc.journal.get(migration_id)
    except MigrationNotFound:
        return None


@router.get("", response_model=models.MigrationPage, responses=responses(401, 403, 422, 503))
def list_(
    request: Request,
    state: Annotated[list[State], Query()] = [],  # noqa: B006 -- FastAPI copies defaults
    domain: Annotated[str | None, Query(max_length=255)] = None,
    host: Annotated[str | None, Query(max_length=2048)] = None,
    owner: Annotated[str | None, Query(max_length=255)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = PAGE,
    cursor: Annotated[str | None, Query(max_length=36)] = None,
    _auth: None = READ,
) -> JSONResponse:
    """Migrations, newest first, filtered as ``migrator list`` filters them, a page at a
    time: pass ``next_cursor`` back as ``cursor`` for the next page."""
    svc = service(request)
    after = _cursor(svc, cursor)
    chosen = svc.journal.list(
        states=state, domain=domain, host=host, owner=owner, since=_utc(since),
        until=_utc(until), limit=limit + 1, after=after,
    )  # fmt: skip
    page = chosen[:limit]
    more = len(chosen) > limit
    return JSONResponse(
        {
            "items": [inspect.migration_dict(m) for m in page],
            "next_cursor": page[-1].id if more else None,
        }
    )


def _cursor(svc: Service, cursor: str | None) -> Record | None:
    if cursor is None:
        return None
    try:
        return svc.journal.get(cursor)
    except MigrationNotFound:
        raise UsageError(f"cursor {cursor!r} names no migration") from None


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@router.get(
    "/{migration_id}",
    response_model=models.MigrationDetail,
    responses=responses(401, 403, 404, 409, 422, 503),
)
def get(request: Request, migration_id: MigrationId, _auth: None = READ) -> JSONResponse:
    """One migration: state, reason, owner, progress, the time each step began, the
    statistics of its steps and transfer."""
    return JSONResponse(_detail(inspect.show(service(request).journal, migration_id)))


def _detail(shown: dict[str, Any]) -> dict[str, Any]:
    phases: dict[str, str] = {}
    for event in shown["events"]:
        if event["kind"] == EventKind.INTENT and event["step"] not in phases:
            phases[event["step"]] = event["at"]
    detail = {k: v for k, v in shown.items() if k != "events"}
    return {**detail, "phases": phases}


@router.get(
    "/{migration_id}/events",
    response_model=models.Timeline,
    responses=responses(401, 403, 404, 409, 422, 503),
)
def events(request: Request, migration_id: MigrationId, _auth: None = READ) -> JSONResponse:
    """One migration's timeline, every event of it, as ``migrator show`` prints it."""
    shown = inspect.show(service(request).journal, migration_id)
    return JSONResponse({"migration": _detail(shown), "events": shown["events"]})


@router.post(
    "/{migration_id}/abort",
    status_code=202,
    response_model=models.Migration,
    responses=responses(401, 403, 404, 409, 422, 503),
)
def abort(request: Request, migration_id: MigrationId, _auth: None = OPERATE) -> dict[str, Any]:
    """Ask a migration to stop (as ``migrator abort``): a queued one fails at once, a
    running Perform fails and the migration rolls back."""
    return inspect.migration_dict(service(request).coordinator.abort(migration_id))


@router.post(
    "/{migration_id}/resolve",
    response_model=models.Migration,
    responses=responses(400, 401, 403, 404, 409, 413, 422, 502, 503),
)
def resolve(
    request: Request, migration_id: MigrationId, body: models.ResolveRequest,
    _auth: None = OPERATE,
) -> dict[str, Any]:  # fmt: skip
    """Settle an IN_DOUBT migration where an operator says the domain runs (as ``migrator
    resolve``)."""
    svc = service(request)
    return inspect.migration_dict(svc.coordinator.resolve(migration_id, running_on=body.running_on))


_REQUESTED = {
    "status_code": 202,
    "response_model": models.RuntimeRequest,
    "responses": responses(400, 401, 403, 404, 409, 413, 422, 503),
}


@router.post("/{migration_id}/downtime", **_REQUESTED)  # type: ignore[arg-type]
def set_downtime(
    request: Request, migration_id: MigrationId, body: models.DowntimeRequest,
    _auth: None = OPERATE,
) -> dict[str, Any]:  # fmt: skip
    """Journal a request to allow ``ms`` of downtime to a migration in Perform (as
    ``migrator set-downtime``); whoever drives it applies it (docs/convergence.md)."""
    svc = service(request)
    return inspect.request_dict(svc.coordinator.set_downtime(migration_id, body.ms))


@router.post("/{migration_id}/speed", **_REQUESTED)  # type: ignore[arg-type]
def set_speed(
    request: Request, migration_id: MigrationId, body: models.SpeedRequest,
    _auth: None = OPERATE,
) -> dict[str, Any]:  # fmt: skip
    """Journal a request to send a migration in Perform at ``mib`` MiB/s (as ``migrator
    set-speed``); after the switch to post-copy, its post-copy bandwidth."""
    svc = service(request)
    return inspect.request_dict(svc.coordinator.set_speed(migration_id, body.mib))


@router.post("/{migration_id}/postcopy", **_REQUESTED)  # type: ignore[arg-type]
def postcopy(request: Request, migration_id: MigrationId, _auth: None = OPERATE) -> dict[str, Any]:
    """Journal a request to switch a migration in Perform to post-copy now (as ``migrator
    postcopy``): refused in its outcome where the migration cannot switch."""
    return inspect.request_dict(service(request).coordinator.request_postcopy(migration_id))
