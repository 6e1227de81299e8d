"""The driver seam: one host's side of the migration protocol.

A driver is chosen by the scheme of a host URI (``test:///ABS/DIR``, ``null://NAME``, ...).
Third-party drivers register a factory ``(uri: str) -> Driver`` under the entry-point group
``migrator.drivers``, named after the scheme.

Contract of every hook (DESIGN §5): idempotent per ``(ctx.migration_id, ctx.step)``, and for
Finish and Confirm per ``(ctx.migration_id, ctx.step, cancelled)``;
cookies are opaque bytes for the peer and at most ``COOKIE_MAX`` long; a hook reports
failure by raising (any exception: its type name and message become journal data).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

from migrator.errors import InvalidURI
from migrator.flags import MigrateFlags
from migrator.records import StepContext

COOKIE_MAX = 4 * 1024 * 1024
"""libvirt's REMOTE_MIGRATE_COOKIE_MAX: a larger cookie is refused."""

ENTRY_POINT_GROUP = "migrator.drivers"


class Feature(enum.StrEnum):
    MIGRATION_V1 = "MIGRATION_V1"
    MIGRATION_V2 = "MIGRATION_V2"
    MIGRATION_V3 = "MIGRATION_V3"
    TUNNELLED = "TUNNELLED"


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

    @property
    def dest_name(self) -> str:
        return self.dname or self.domain


@runtime_checkable
class Driver(Protocol):
    """One host's side of protocol v3. Steps run on src (begin, perform, confirm) or dst."""

    uri: str

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


def is_blocking(driver: Driver) -> bool:
    """Whether the coordinator must watch this driver's hooks (timeout, lease heartbeat).

    A driver may set the class attribute ``blocking = False`` when it is in-process and its
    hooks return at once (``null://``, replay): the coordinator then calls them inline,
    saving a thread hand-off per step. Every other driver is watched from a worker thread.
    """
    return bool(getattr(driver, "blocking", True))


DriverFactory = Callable[[str], Driver]


def _builtin(scheme: str) -> DriverFactory | None:
    if scheme == "test":
        from migrator.drivers.test import TestDriver

        return TestDriver
    if scheme == "qemu":
        from migrator.drivers.qemu import QemuDriver

        return QemuDriver
    if scheme == "null":
        from migrator.drivers.null import NullDriver

        return NullDriver
    return None


def _libvirt(uri: str) -> DriverFactory | None:
    """libvirt's hosts: ``qemu:///system``, ``qemu:///session``, ``qemu+TRANSPORT://``."""
    from migrator.drivers.libvirt.uri import is_libvirt_uri

    if not is_libvirt_uri(uri):
        return None
    from migrator.drivers.libvirt.driver import LibvirtDriver

    return LibvirtDriver


def _registered(scheme: str) -> DriverFactory | None:
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=scheme):
        factory: DriverFactory = ep.load()
        return factory
    return None


def redact_uri(uri: str) -> str:
    """``uri`` with any password replaced by ``***``: what the journal and logs keep.

    A driver that needs credentials should read them from its own configuration, since
    recovery reconnects to hosts from the journaled (redacted) URIs.
    """
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))


def connect(uri: str) -> Driver:
    """Open the driver for a host URI; raise InvalidURI for an unknown scheme or bad URI."""
    scheme = urlsplit(uri).scheme
    if not scheme:
        raise InvalidURI(uri=uri, reason="no scheme (expected e.g. test:///ABS/DIR)")
    factory = _libvirt(uri) or _builtin(scheme) or _registered(scheme)
    if factory is None:
        raise InvalidURI(uri=uri, reason=f"unknown scheme {scheme!r}")
    return factory(uri)
