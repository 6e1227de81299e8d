"""What every route shares: the journal, the coordinator its actions run on, how hosts are
reached, and the stream's timing; kept on the application's state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request

if TYPE_CHECKING:
    from migrator.drivers.api import Driver
    from migrator.engine.coordinator import Coordinator
    from migrator.journal.store import Journal
    from migrator.service.hub import Hub


@dataclass(frozen=True)
class Service:
    journal: Journal
    coordinator: Coordinator
    connect: Callable[[str], Driver]
    hub: Hub
    poll: float = 0.2
    """Seconds between two reads of the journal by a stream with nothing new."""
    heartbeat: float = 15.0
    """Seconds of silence after which a stream sends a comment, so proxies keep it open."""
    lease: float = 30.0
    """The workers' lease: a worker silent this long is dead (``GET /v1/workers``)."""


def service(request: Request) -> Service:
    found: Service = request.app.state.service
    return found
