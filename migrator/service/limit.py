"""Request bodies bounded in size, refused with 413 before they are read whole: a declared
``Content-Length`` over the limit at once, a body that grows past it as it arrives."""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from migrator.service.problems import problem

MAX_BODY = 64 * 1024
"""Bytes a request body may have: a migration request is a few hundred."""


def _too_large(limit: int) -> HTTPException:
    """The body grew past the limit as it was read: FastAPI passes an HTTPException from
    the body's read on to the problem handler."""
    return HTTPException(413, f"the request body is over {limit} bytes")


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``limit`` bytes."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def bounded() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _too_large(self.limit)
            return message

        await self.app(scope, bounded, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response: Any = problem(413, f"the request body is over {self.limit} bytes")
        response.headers["Connection"] = "close"
        await response(scope, receive, send)
