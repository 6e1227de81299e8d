"""Errors as ``application/problem+json`` (RFC 9457), with the command line's one-line
messages: library errors are translated here, at the API's one edge, as ``cli/context``
translates them into exit codes."""

from __future__ import annotations

import logging
from typing import Any, get_origin

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from migrator.errors import (
    AmbiguousMigrationId,
    DriverError,
    JournalError,
    MigrationNotFound,
    MigratorError,
    StateConflict,
    UsageError,
)

log = logging.getLogger(__name__)
MEDIA_TYPE = "application/problem+json"
TITLES = {
    400: "Bad Request",  # a body that is not text at all
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    422: "Unprocessable Content",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"type": "about:blank", "title": TITLES.get(status, "Error"), "status": status}
    body["detail"] = detail
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def status_of(exc: MigratorError) -> int:
    """The HTTP status of a library error."""
    if isinstance(exc, MigrationNotFound):
        return 404
    if isinstance(exc, AmbiguousMigrationId | StateConflict):
        return 409
    if isinstance(exc, UsageError):
        return 422
    if isinstance(exc, JournalError):
        return 503
    if isinstance(exc, DriverError):
        return 502
    return 500


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI description of the problems an operation may answer with."""
    schema = {"$ref": "#/components/schemas/Problem"}
    return {
        status: {"description": TITLES[status], "content": {MEDIA_TYPE: {"schema": schema}}}
        for status in statuses
    }


def _library(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MigratorError)
    return problem(status_of(exc), str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def _http(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return problem(exc.status_code, str(exc.detail), getattr(exc, "headers", None))


def _invalid(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return problem(422, "; ".join(_one_line(e) for e in exc.errors()[:5]))


def _one_line(error: Any) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()))
    return f"{where}: {error.get('msg', 'invalid')}"


def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error answering a request", exc_info=exc)
    return problem(500, f"unexpected {type(exc).__name__} (the server's log has where)")


def install(app: FastAPI) -> None:
    """Every error the app answers with becomes a problem document."""
    app.add_exception_handler(Exception, _unexpected)
    app.add_exception_handler(MigratorError, _library)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(RequestValidationError, _invalid)


def known_query(request: Request) -> None:
    """Refuse a query parameter the operation does not declare (422), as bodies refuse
    unknown fields: a misspelt filter must not silently widen a listing."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None or not getattr(route, "include_in_schema", True):
        return  # the dashboard's pages and files
    declared = _declared(dependant)
    for name in request.query_params:
        if name not in declared:
            raise HTTPException(422, f"query.{name[:60]}: unknown query parameter")
        if not declared[name] and len(request.query_params.getlist(name)) > 1:
            raise HTTPException(422, f"query.{name[:60]}: given more than once")


def _declared(dependant: Any) -> dict[str, bool]:
    """The operation's query parameters, each with whether it may repeat (a list)."""
    names = {p.alias: get_origin(p.field_info.annotation) is list for p in dependant.query_params}
    for sub in dependant.dependencies:
        names.update(_declared(sub))
    return names
