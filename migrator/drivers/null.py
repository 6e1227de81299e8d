"""``null://NAME``: an in-process host with no latency and no I/O, for engine benchmarks.

Hosts with the same NAME share state within one process (a class-level registry), so a
migration between ``null://a`` and ``null://b`` moves the domain from one dict to another.
"""

from __future__ import annotations

import threading
from typing import ClassVar
from urllib.parse import urlsplit

from migrator.drivers.api import (
    BeginResult,
    ConfirmResult,
    DomainState,
    Feature,
    FinishResult,
    MigrationParams,
    PerformResult,
    PrepareResult,
    ProbeResult,
)
from migrator.errors import InvalidURI
from migrator.flags import MigrateFlags
from migrator.records import StepContext

_FEATURES = frozenset({Feature.MIGRATION_V3})
_HONOURED = MigrateFlags.LIVE | MigrateFlags.PAUSED
"""A transfer takes no time, so the source runs on throughout it (LIVE) either way."""


class NullDriver:
    blocking: ClassVar[bool] = False  # in-process, returns at once: called inline
    honoured_flags: ClassVar[MigrateFlags] = _HONOURED
    checks_fence: ClassVar[bool] = True  # acts on no host: nothing for a stale coordinator to harm
    _hosts: ClassVar[dict[str, dict[str, DomainState]]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, uri: str) -> None:
        name = urlsplit(uri).netloc
        if not name:
            raise InvalidURI(uri=uri, reason="expected null://NAME")
        self.uri = uri
        with self._lock:
            self.domains = self._hosts.setdefault(name, {})

    def define(self, domain: str, state: DomainState = DomainState.RUNNING) -> None:
        self.domains[domain] = state

    def features(self) -> frozenset[Feature]:
        return _FEATURES

    def begin(self, ctx: StepContext, params: MigrationParams) -> BeginResult:
        if not self.domains.get(params.domain, DomainState.ABSENT).active:
            raise LookupError(f"no active domain {params.domain!r}")
        return BeginResult(description=params.domain, cookie=b"null")

    def prepare(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, description: str
    ) -> PrepareResult:
        self.domains[params.dest_name] = DomainState.INCOMING
        return PrepareResult(uri=self.uri)

    def perform(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, uri: str
    ) -> PerformResult:
        self.domains[params.domain] = DomainState.PAUSED
        return PerformResult()

    def finish(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, cancelled: bool
    ) -> FinishResult:
        if cancelled:
            self.domains.pop(params.dest_name, None)
            return FinishResult(running=False)
        paused = params.flags & MigrateFlags.PAUSED
        self.domains[params.dest_name] = DomainState.PAUSED if paused else DomainState.RUNNING
        return FinishResult(running=True)

    def confirm(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, cancelled: bool
    ) -> ConfirmResult:
        if cancelled:
            self.domains[params.domain] = DomainState.RUNNING
        else:
            self.domains.pop(params.domain, None)
        return ConfirmResult()

    def probe(self, domain: str) -> ProbeResult:
        return ProbeResult(state=self.domains.get(domain, DomainState.ABSENT))

    def close(self) -> None:
        return None
