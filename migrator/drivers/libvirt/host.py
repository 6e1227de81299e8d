"""A libvirt host's connections: one per migration, a shared control one, and which
driver in this process is the source of each migration.

libvirt binds its half of a migration to the connection that began it (Begin3 on the
source, Prepare3 on the destination), so each migration gets its own connections, held
until its last step there. Probes, features and the settling of Finish and Confirm use the
control connection, reopened (once per use) when a daemon restart cut it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

from migrator.drivers.libvirt.errors import LibvirtError, LibvirtTimeout, LibvirtUnreachable
from migrator.drivers.libvirt.remote import Remote
from migrator.drivers.libvirt.rpc import Connection
from migrator.drivers.libvirt.uri import KeepAliveSettings, parse
from migrator.drivers.libvirt.xdr import DomainRef
from migrator.drivers.uri import redact_uri
from migrator.states import Step

R = TypeVar("R")


@dataclass
class Session:
    """One migration's connection to this host, and what ran on it."""

    remote: Remote
    dom: DomainRef | None = None
    uri: str = ""
    prepared: bool = False
    performed: bool = False
    spent: set[Step] = field(default_factory=set)
    """Finish or Confirm tried on this connection: a second try is settled instead."""


class Host:
    """The connections of one libvirt host (``uri``, see ``uri.py``)."""

    _sources: ClassVar[dict[str, Host]] = {}
    """By migration id, the host that began it in this process (see ``source_holds``)."""
    _sources_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        uri: str,
        *,
        connect_timeout: float = 10.0,
        call_timeout: float | None = 60.0,
        keepalive: KeepAliveSettings | None = None,
    ) -> None:
        self.uri = uri
        self.target = parse(uri)
        self.keepalive = keepalive or self.target.keepalive
        self.connect_timeout = connect_timeout
        self.call_timeout = call_timeout
        self.host = redact_uri(uri)
        self._control: Remote | None = None
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def bound_calls(self, seconds: float | None) -> None:
        """Make every call and connect of this host take at most ``seconds``: a migration's
        step timeout, so that no call before or during its steps outlasts it."""
        if seconds is None:
            return
        self.connect_timeout = min(self.connect_timeout, seconds)
        self.call_timeout = _least(self.call_timeout, seconds)

    def connect(self, *, timeout: float | None = None) -> Remote:
        """A new connection to this host (the caller closes ``remote.conn``); ``timeout``
        bounds its opening (each call gives its own, else the host's ``call_timeout``)."""
        conn = Connection.open(
            self.target,
            host=self.host,
            connect_timeout=min(self.connect_timeout, timeout or self.connect_timeout),
            call_timeout=self.call_timeout,
            keepalive=self.keepalive,
        )
        return Remote(conn)

    def control(self, timeout: float | None = None) -> Remote:
        """The shared connection for probes, features and settling; reopened if lost. Each
        call through it takes at most ``timeout`` s (else the host's ``call_timeout``)."""
        with self._lock:
            if self._control is None or self._control.conn.broken:
                self._control = self.connect(timeout=timeout)
            return self._control.bounded(timeout)

    def on_control(self, use: Callable[[Remote], R], timeout: float | None = None) -> R:
        """``use(control(timeout))``, once more on a new connection if the old one was lost
        (a daemon restarted since it was opened). A call that timed out is not retried: the
        daemon is there but silent, and a second wait would double the first."""
        remote = self.control(timeout)
        try:
            return use(remote)
        except LibvirtTimeout:
            raise
        except LibvirtUnreachable:
            if not remote.conn.broken:
                raise
        return use(self.control(timeout))

    def session(
        self, mid: str, *, create: bool = False, timeout: float | None = None
    ) -> Session | None:
        with self._lock:
            session = self._sessions.get(mid)
        if session is None and create:
            session = Session(self.connect(timeout=timeout))
            with self._lock:
                self._sessions[mid] = session
        return session

    def end_session(self, mid: str) -> None:
        with self._lock:
            session = self._sessions.pop(mid, None)
        if session is not None:
            session.remote.conn.close()

    def close(self) -> None:
        with self._sources_lock:
            for mid in [m for m, host in self._sources.items() if host is self]:
                del self._sources[mid]
        with self._lock:
            remotes = [s.remote for s in self._sessions.values()]
            if self._control is not None:
                remotes.append(self._control)
            self._sessions.clear()
            self._control = None
        for remote in remotes:
            remote.conn.close()

    def begun(self, mid: str) -> None:
        """Note that this host began migration ``mid`` here (its Begin3 succeeded)."""
        with self._sources_lock:
            self._sources[mid] = self

    def source_holds(self, mid: str, timeout: float | None = None) -> bool:
        """Whether the source of ``mid`` still holds its migration job on Begin's connection.

        True when no host of this process began ``mid`` (nothing to ask). Otherwise one
        call on that connection: if it is lost or the job is gone (a daemon restart, say),
        libvirt may have resumed the source, so the destination must not start its copy.
        """
        with self._sources_lock:
            source = self._sources.get(mid)
        if source is None:
            return True
        session = source.session(mid)
        if session is None or session.dom is None:
            return False
        try:
            return session.remote.job_info(session.dom, timeout).active
        except (LibvirtError, LibvirtUnreachable):
            return False

    def forget(self, mid: str) -> None:
        with self._sources_lock:
            if self._sources.get(mid) is self:
                del self._sources[mid]
        self.end_session(mid)


def _least(default: float | None, bound: float | None) -> float | None:
    if bound is None:
        return default
    return bound if default is None else min(default, bound)
