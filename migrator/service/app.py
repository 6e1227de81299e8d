"""``create_app``: the ASGI application of ``migrator serve`` on an open journal."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from importlib.metadata import version
from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from migrator.engine.coordinator import Coordinator
from migrator.journal.tokens import Tokens
from migrator.service import dashboard, fleet, migrations, problems, stream
from migrator.service.auth import Auth
from migrator.service.hub import Hub
from migrator.service.limit import MAX_BODY, BodyLimit
from migrator.service.state import Service

if TYPE_CHECKING:
    from migrator.drivers.api import Driver
    from migrator.journal.store import Journal

TITLE = "migrator"
DESCRIPTION = (
    "Queue, follow and act on live migrations of VMs; every change is a journaled request,"
    " as the command line makes it (docs/api.md)."
)


def create_app(
    journal: Journal,
    *,
    connect: Callable[[str], Driver] | None = None,
    step_timeout: float = 600.0,
    max_body: int = MAX_BODY,
    cors_origins: Sequence[str] = (),
    poll: float = 0.2,
    heartbeat: float = 15.0,
    lease: float = 30.0,
) -> FastAPI:
    """The API, the stream and the dashboard on ``journal`` (left open: the caller owns it).

    ``connect`` opens a host's driver (``drivers.registry.connect`` unless given);
    ``step_timeout`` bounds each pre-flight call of a host when a migration is queued;
    CORS is off unless ``cors_origins`` names origins."""
    if connect is None:
        from migrator.drivers.registry import connect as registry_connect

        connect = registry_connect
    coordinator = Coordinator(journal, step_timeout=step_timeout)
    hub = Hub(journal, poll=poll)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            hub.stop()
            coordinator.close()

    app = FastAPI(
        title=TITLE,
        version=version("migrator"),
        description=DESCRIPTION,
        lifespan=lifespan,
        dependencies=[Depends(problems.known_query)],
    )
    app.state.service = Service(journal, coordinator, connect, hub, poll, heartbeat, lease)
    app.state.auth = Auth(Tokens(journal))
    problems.install(app)
    for router in (migrations.router, stream.router, fleet.router):
        app.include_router(router)
    dashboard.install(app)
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["*"],
                           allow_headers=["Authorization", "Content-Type", "Idempotency-Key",
                                          "Last-Event-ID"])  # fmt: skip
    app.add_middleware(BodyLimit, limit=max_body)
    return app
