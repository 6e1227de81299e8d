"""The driver seam, as types: the ``Driver`` Protocols and the results of their hooks.

Only declarations live here; ``registry.py`` finds the drivers, ``uri.py`` reads and
redacts host URIs, ``flagcheck.py`` refuses flags a driver does not honour.

Contract of every hook (docs/drivers.md): idempotent per ``(ctx.migration_id, ctx.step)``,
and for Finish and Confirm per ``(ctx.migration_id, ctx.step, cancelled)``; cookies are
opaque bytes for the peer and at most ``COOKIE_MAX`` long, descriptions, URIs and stats
are bounded too (``DESCRIPTION_MAX``, ``URI_MAX``, ``DETAIL_MAX``); a hook reports failure by
raising (any exception: its type name and message become journal data).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from migrator.flags import MigrateFlags
from migrator.records import StepContext

COOKIE_MAX = 4 * 1024 * 1024
"""libvirt's REMOTE_MIGRATE_COOKIE_MAX: a larger cookie is refused."""
DESCRIPTION_MAX = 4 * 1024 * 1024
"""libvirt's REMOTE_STRING_MAX, the bound of a domain description (bytes of UTF-8): a
larger one is refused, as a cookie is."""
URI_MAX = 64 * 1024
"""The longest URI a Prepare may return (bytes of UTF-8)."""
DETAIL_MAX = 64 * 1024
"""The largest ``stats`` of a Perform and ``detail`` of a probe, as JSON: a larger
``stats`` is refused; a larger probe ``detail`` is journaled as its size alone."""


class Feature(enum.StrEnum):
    MIGRATION_V1 = "MIGRATION_V1"
    MIGRATION_V2 = "MIGRATION_V2"
    MIGRATION_V3 = "MIGRATION_V3"
    TUNNELLED = "TUNNELLED"
    POSTCOPY = "POSTCOPY"
    """The host can switch a running migration to post-copy and resume a paused one
    (``PostcopyDriver``); without it ``--flag postcopy`` is refused before Begin."""


class DomainState(enum.StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    SHUTOFF = "shutoff"
    INCOMING = "incoming"
    ABSENT = "absent"

    @property
    def active(self) -> bool:
        """True if the host runs (or holds paused, ready to run) this copy of the domain."""
        return self in (DomainState.RUNNING, DomainState.PAUSED)


@dataclass(frozen=True, slots=True)
class BeginResult:
    description: str
    cookie: bytes = b""


@dataclass(frozen=True, slots=True)
class PrepareResult:
    uri: str
    cookie: bytes = b""


class TunnelStream(Protocol):
    """The destination's end of a tunnelled migration (PrepareTunnel3).

    The coordinator relays what the source's ``perform_tunnel`` sends into ``write``, then
    calls ``close`` once the source sent everything, or ``abort`` if it failed.
    """

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


@dataclass(frozen=True, slots=True)
class TunnelResult:
    stream: TunnelStream
    cookie: bytes = b""


@dataclass(frozen=True, slots=True)
class PerformResult:
    cookie: bytes = b""
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FinishResult:
    running: bool
    """True if the destination now runs the domain (or holds it paused, under PAUSED)."""
    cookie: bytes = b""


@dataclass(frozen=True, slots=True)
class ConfirmResult:
    cookie: bytes = b""
    detail: dict[str, Any] = field(default_factory=dict)
    """What the host did besides, for the timeline (journaled with Confirm's outcome)."""


@dataclass(frozen=True, slots=True)
class ProbeResult:
    state: DomainState
    detail: dict[str, Any] = field(default_factory=dict)
    transfers: dict[str, str] = field(default_factory=dict)
    """Outgoing transfers of this domain that the host remembers, by migration id:
    ``"completed"`` once Perform sent everything. Recovery of a crash in PERFORMING asks it."""


@dataclass(frozen=True, slots=True)
class MigrationParams:
    """What the caller asked for; the same for every step of one migration."""

    domain: str
    flags: MigrateFlags = MigrateFlags.NONE
    dname: str | None = None
    bandwidth: int = 0
    """MiB/s; 0 means unlimited."""
    connections: int = 0
    """Parallel connections (multifd) both hosts set up before the data goes, from the
    migration's policy (``parallel_connections``); 0: one connection, as without."""
    postcopy_bandwidth: int = 0
    """MiB/s post-copy may use once switched, from the migration's policy
    (``postcopy_bandwidth_mib``); 0: not set (the driver's default)."""

    @property
    def dest_name(self) -> str:
        return self.dname or self.domain


@runtime_checkable
class Driver(Protocol):
    """One host's side of protocol v3. Steps run on src (begin, perform, confirm) or dst."""

    uri: str
    """The host URI, journaled as ``src`` or ``dst`` (password redacted); recovery
    reconnects from it."""

    @property
    def blocking(self) -> bool:
        """False only for an in-process driver whose hooks return at once (``null://``,
        replay): the coordinator then calls them inline, without a worker thread, a
        timeout or a lease heartbeat. True for every driver that does I/O."""
        ...

    @property
    def honoured_flags(self) -> MigrateFlags:
        """Every ``MigrateFlags`` bit this host acts on; ``migrate`` refuses any other flag
        before Begin (``refuse_unhonoured``), so none is journaled and silently ignored."""
        ...

    def features(self) -> frozenset[Feature]: ...

    def begin(self, ctx: StepContext, params: MigrationParams) -> BeginResult:
        """Src: describe the domain and start the migration job; change nothing visible."""
        ...

    def prepare(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, description: str
    ) -> PrepareResult:
        """Dst: create the incoming domain ``params.dest_name`` and return the URI to send to."""
        ...

    def perform(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, uri: str
    ) -> PerformResult:
        """Src: send the domain to ``uri``; on success the source is left paused, not killed."""
        ...

    def finish(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, cancelled: bool
    ) -> FinishResult:
        """Dst: run the received domain; if ``cancelled``, remove any incoming copy instead."""
        ...

    def confirm(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, cancelled: bool
    ) -> ConfirmResult:
        """Src: kill the source copy, or, if ``cancelled``, resume it as it was before Begin."""
        ...

    def probe(self, domain: str) -> ProbeResult:
        """What this host really holds of ``domain``; raise if it cannot tell."""
        ...

    def close(self) -> None: ...


class TunnelledDriver(Protocol):
    """The hooks of tunnelled v3 (feature TUNNELLED), besides those of ``Driver``."""

    def prepare_tunnel(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, description: str
    ) -> TunnelResult:
        """Dst: as ``prepare``, but the data will arrive through the returned stream."""
        ...

    def perform_tunnel(
        self,
        ctx: StepContext,
        params: MigrationParams,
        cookie: bytes,
        send: Callable[[bytes], None],
    ) -> PerformResult:
        """Src: as ``perform``, sending the data through ``send`` (the coordinator's relay)."""
        ...


class PostcopyPhase(enum.StrEnum):
    """Where a source's post-copy migration is, as ``postcopy_phase`` reports it."""

    PRECOPY = "precopy"
    """Still copying before any switch (or nothing was switched)."""
    ACTIVE = "active"
    """Switched: the destination runs the guest, the source sends what is left."""
    PAUSED = "paused"
    """Switched, and the stream broke (or nobody drives it): needs a resumption."""
    COMPLETED = "completed"
    """Every page reached the destination."""
    LOST = "lost"
    """The source's side is gone (its process died): nothing can be resumed from it."""


class PostcopyDriver(Protocol):
    """The hooks of post-copy (feature POSTCOPY), besides those of ``Driver``
    (docs/postcopy.md). Every one is idempotent per migration."""

    def start_postcopy(self, ctx: StepContext, params: MigrationParams) -> None:
        """Src: switch the running Perform to post-copy; return once switched (a switch
        already made is no error). Raise if the migration cannot switch."""
        ...

    def run_postcopy(self, ctx: StepContext, params: MigrationParams) -> None:
        """Dst: once switched, let the guest run while its pages still arrive (unless
        PAUSED); ``PostcopyLost`` if the incoming copy is gone."""
        ...

    def postcopy_phase(self, params: MigrationParams, migration_id: str) -> PostcopyPhase:
        """Src: where this migration's post-copy is (a read; raise if it cannot tell)."""
        ...

    def recover_postcopy(self, ctx: StepContext, params: MigrationParams) -> str:
        """Dst: make a paused post-copy listen again; return the URI to resume to.
        ``PostcopyLost`` if the destination's copy is gone."""
        ...

    def resume_postcopy(self, ctx: StepContext, params: MigrationParams, uri: str) -> PerformResult:
        """Src: resume a paused post-copy to ``uri`` (empty: it is not paused), and return
        once every page was sent, as Perform does; raise if it paused again."""
        ...


class OlderDriver(Protocol):
    """The hooks of protocols v2 (feature MIGRATION_V2) and v1 (MIGRATION_V1).

    v2 is DumpXML, Prepare2, Perform, Finish2; v1 is Prepare (``prepare2`` without a
    description), Perform, Finish (``finish2``, never cancelled). Unlike v3's, their
    Perform ends the source itself when the domain was sent, and resumes it on failure.
    """

    def dump_xml(self, ctx: StepContext, params: MigrationParams) -> BeginResult:
        """Src: describe the domain; change nothing (no job starts, unlike v3's Begin)."""
        ...

    def prepare2(
        self, ctx: StepContext, params: MigrationParams, description: str | None
    ) -> PrepareResult:
        """Dst: create the incoming domain (v1 gives no description) and return its URI."""
        ...

    def perform2(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, uri: str
    ) -> PerformResult:
        """Src: send the domain to ``uri``; on success end the source copy, on failure
        resume it. ``probe`` then reports the transfer ``"completed"``."""
        ...

    def finish2(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, cancelled: bool
    ) -> FinishResult:
        """Dst: run the received domain, or remove the incoming copy if ``cancelled`` (or if
        it cannot run it: Finish2 kills the domain if unsuccessful)."""
        ...


class ForgettingDriver(Protocol):
    """An optional hook: ``forget``, for a driver that keeps records to answer replays."""

    def forget(self, migration_id: str, params: MigrationParams) -> None:
        """The migration ended (its end state is journaled): no hook of it will be called
        again by a coordinator that owns it, so the host may drop what it kept to answer
        replays. Called once per host after the end state is committed; a process that dies
        first never calls it. Must be idempotent; what it raises is logged, never fatal."""
        ...


def forget(driver: Driver, migration_id: str, params: MigrationParams) -> None:
    """Tell ``driver`` that a migration ended, if it has the optional ``forget`` hook."""
    hook = getattr(driver, "forget", None)
    if hook is not None:
        hook(migration_id, params)


DriverFactory = Callable[[str], Driver]
"""What a ``migrator.drivers`` entry point names: opens the driver of a host URI."""


def is_blocking(driver: Driver) -> bool:
    """Whether the coordinator must watch this driver's hooks (timeout, lease heartbeat)."""
    return driver.blocking
