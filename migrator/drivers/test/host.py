"""A test host: its domains, faults and fences (kept as ``shards.py`` keeps them)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from migrator.convergence.policy import Setting
from migrator.drivers.api import (
    DomainState,
    Feature,
)
from migrator.drivers.hoststate import Host
from migrator.drivers.test.faults import FaultMode, check_fault, hang
from migrator.drivers.test.shards import ShardedState
from migrator.drivers.test.transfer import incoming_image, partials, write_image
from migrator.errors import DomainExists, DomainNotFound, DriverError, HostUnreachable, InvalidURI
from migrator.flags import MigrateFlags
from migrator.records import StepContext
from migrator.states import Step

_PROTOCOL_FEATURES = {
    1: {Feature.MIGRATION_V1},
    2: {Feature.MIGRATION_V2},
    3: {Feature.MIGRATION_V3, Feature.TUNNELLED, Feature.POSTCOPY},
}


HONOURED = (
    MigrateFlags.LIVE
    | MigrateFlags.PERSIST_DEST
    | MigrateFlags.UNDEFINE_SOURCE
    | MigrateFlags.PAUSED
    | MigrateFlags.CHANGE_PROTECTION
    | MigrateFlags.ABORT_ON_ERROR
)
"""What the test driver's steps act on: LIVE (Perform pauses the source without it),
PERSIST_DEST and UNDEFINE_SOURCE (Finish and Confirm keep or drop definitions), PAUSED
(Finish), CHANGE_PROTECTION (``set_memory`` refused meanwhile), ABORT_ON_ERROR (an I/O
error fails Perform)."""


def _parse_protocols(uri: str) -> frozenset[Feature]:
    query = parse_qs(urlsplit(uri).query, keep_blank_values=True)
    unknown = sorted(set(query) - {"protocols"})
    if unknown:
        raise InvalidURI(uri=uri, reason=f"unknown test host parameter {unknown[0]!r}")
    texts = ",".join(query.get("protocols", ["1,2,3"])).split(",")
    try:
        versions = {int(t) for t in texts if t.strip()}
    except ValueError:
        versions = {0}
    if not versions or not versions <= set(_PROTOCOL_FEATURES):
        raise InvalidURI(uri=uri, reason="protocols must list versions among 1, 2 and 3")
    return frozenset(f for v in versions for f in _PROTOCOL_FEATURES[v])


def _parse_dir(uri: str) -> Path:
    parts = urlsplit(uri)
    if parts.scheme != "test" or parts.netloc or not parts.path.startswith("/"):
        raise InvalidURI(
            uri=uri, reason=f"test host path must be absolute: test:///ABS/DIR, not {uri}"
        )
    return Path(os.path.normpath(parts.path))


def canonical_uri(uri: str, directory: Path) -> str:
    """One spelling per host directory (``//``, ``/./``, ``..`` and a trailing ``/`` gone),
    so that two spellings of one host are seen as the same host."""
    query = urlsplit(uri).query
    return f"test://{directory}" + (f"?{query}" if query else "")


def domain_record(
    state: DomainState,
    memory_mib: int,
    image: str,
    checksum: str,
    lease: str | None,
    *,
    job: str | None,
) -> dict[str, Any]:
    """A domain record; one with a ``job`` is arriving (incoming) and holds no lease yet."""
    return {
        "state": str(state),
        "memory_mib": memory_mib,
        "image": image,
        "checksum": checksum,
        "lease": {"token": lease, "held": job is None},
        "job": job,
        "state_before_job": None,
        "outgoing": {},
        "arrived_with": job,
        "persistent": False,
        "protected": None,
    }


class TestHost(ShardedState):
    """One simulated host's storage, faults and fences, and the ``migrator test-host`` helpers."""

    __test__ = False  # the name starts with "Test": keep pytest from collecting it

    def __init__(self, uri: str) -> None:
        self.dir = _parse_dir(uri)
        self._features = _parse_protocols(uri)
        self.uri = canonical_uri(uri, self.dir)

    # -- storage: host.json and a file per domain, as ``shards.ShardedState`` keeps them --

    def _drop_incoming(self, host: Host, name: str) -> None:
        """Remove an incoming domain; a shut-off definition it was to replace comes back."""
        replaced = host["domains"][name].get("replaces")
        self._remove(host, name)
        if replaced is not None:
            host["domains"][name] = replaced

    def _remove(self, host: Host, name: str) -> None:
        dom = host["domains"].pop(name)
        (self.dir / dom["image"]).unlink(missing_ok=True)

    # -- public helpers (the ``migrator test-host`` CLI) ---------------------------------

    def define(
        self,
        name: str,
        memory_mib: int = 4,
        paused: bool = False,
        persistent: bool = False,
        dirty_mib_s: float = 0.0,
    ) -> dict[str, Any]:
        """Create domain ``name`` with a fresh image; raise DomainExists if it is here.

        A ``persistent`` domain keeps its definition (shut off) on a source it left, unless
        the migration has UNDEFINE_SOURCE; a transient one is gone from it. A domain that
        dirties ``dirty_mib_s`` MiB/s while it runs migrates in passes (``precopy.py``).
        """
        if not 0 <= dirty_mib_s <= 1_048_576:
            raise ValueError(f"dirty_mib_s must be in [0, 1048576], not {dirty_mib_s}")
        if not name:
            raise ValueError("a domain name must not be empty")
        if memory_mib < 1:
            raise ValueError(f"memory_mib must be >= 1, not {memory_mib}")
        if name in self._read(name)["domains"]:
            raise DomainExists(domain=name, host=self.uri)
        image = f"images/{uuid.uuid4().hex}.img"
        checksum = write_image(self.dir / image, name, memory_mib)
        state = DomainState.PAUSED if paused else DomainState.RUNNING
        dom = domain_record(state, memory_mib, image, checksum, uuid.uuid4().hex, job=None)
        dom["persistent"] = persistent
        if dirty_mib_s:
            dom["dirty_mib_s"] = dirty_mib_s
        try:
            with self._txn(name) as host:
                if name in host["domains"]:
                    raise DomainExists(domain=name, host=self.uri)
                host["domains"][name] = dom
        except DomainExists:
            (self.dir / image).unlink(missing_ok=True)
            raise
        return {"name": name, **dom}

    def domains(self) -> list[dict[str, Any]]:
        """Every domain, sorted by name: name, state, memory_mib, lease_held, job, checksum."""
        return [
            {
                "name": name,
                "state": dom["state"],
                "memory_mib": dom["memory_mib"],
                "lease_held": dom["lease"]["held"],
                "job": dom["job"],
                "checksum": dom["checksum"],
                "persistent": dom.get("persistent", False),
                "protected": bool(dom.get("protected")),
            }
            for shard in self._shards()
            for name, dom in sorted(shard["domains"].items())
        ]

    def set_memory(self, name: str, memory_mib: int) -> None:
        """A configuration change; refused while a migration with CHANGE_PROTECTION runs."""
        with self._txn(name) as host:
            dom = host["domains"].get(name)
            if dom is None:
                raise DomainNotFound(domain=name, host=self.uri)
            if dom.get("protected"):
                raise DriverError(
                    f"domain {name!r} is protected against configuration changes while"
                    f" migration {dom['protected']} runs (change-protection)"
                )
            dom["memory_mib"] = memory_mib

    def set_fault(
        self,
        step: str,
        mode: str,
        *,
        seconds: float | None = None,
        message: str | None = None,
        count: int | None = None,
    ) -> None:
        """Arm a fault for ``step``, replacing any; ValueError names what is wrong."""
        check_fault(step, mode, seconds, count)
        fault = {"mode": mode, "seconds": seconds, "message": message, "count": count}
        with self._txn() as host:
            host["faults"][step] = fault

    def clear_faults(self) -> None:
        with self._txn() as host:
            host["faults"].clear()

    def faults(self) -> dict[str, dict[str, Any]]:
        faults: dict[str, dict[str, Any]] = self._read()["faults"]
        return faults

    # -- faults and fences ---------------------------------------------------------------

    @staticmethod
    def _consume(host: Host, step: Step, skip: FaultMode | None) -> dict[str, Any] | None:
        fault: dict[str, Any] | None = host["faults"].get(step)
        if fault is None or fault["mode"] == skip:
            return None
        if fault["count"] is not None:
            fault["count"] -= 1
            if fault["count"] <= 0:
                del host["faults"][step]
        return dict(fault)

    def _admit(
        self, ctx: StepContext, step: Step, name: str, skip: FaultMode | None = None
    ) -> dict[str, Any] | None:
        """Refuse a stale fence, record a higher one (in domain ``name``'s file), and take
        this step's fault if any."""
        with self._txn(name) as host:
            self._fence(host, ctx)
        if step not in self._read()["faults"]:
            return None
        with self._txn() as host:
            return self._consume(host, step, skip)

    @staticmethod
    def _before(fault: dict[str, Any] | None, step: Step, deadline: float | None) -> None:
        if fault is None:
            return
        if fault["mode"] == FaultMode.ERROR:
            raise DriverError(fault["message"] or f"injected error in {step}")
        if fault["mode"] == FaultMode.UNREACHABLE:
            raise HostUnreachable(fault["message"] or f"injected: {step}'s host cannot be reached")
        if fault["mode"] == FaultMode.HANG:
            hang(step, deadline)
        if fault["mode"] == FaultMode.SLOW:
            time.sleep(1.0 if fault["seconds"] is None else fault["seconds"])

    @contextmanager
    def _guarded(
        self, ctx: StepContext, step: Step, name: str, skip: FaultMode | None = None
    ) -> Iterator[dict[str, Any] | None]:
        """Admit the call on domain ``name`` and play its fault around the body (lost-reply
        after it)."""
        fault = self._admit(ctx, step, name, skip)
        self._before(fault, step, ctx.deadline)
        if fault is not None:  # a delayed call is admitted again: the fence may have moved
            with self._txn(name) as host:
                self._fence(host, ctx)
        yield fault
        if fault is not None and fault["mode"] == FaultMode.LOST_REPLY:
            raise DriverError(
                fault["message"] or f"reply lost: {step} took effect but its answer never came"
            )

    @contextmanager
    def landing(self, ctx: StepContext, name: str) -> Iterator[None]:
        """Hold this host's lock while a file of ``ctx``'s incoming copy of ``name`` is
        created or put in place; refuse (``DriverError``) a stale or abandoned call, or one
        whose incoming domain is gone (cancelled, landed)."""
        with self._txn(name) as host:
            self._fence(host, ctx)
            self._job_domain(host, name, ctx.migration_id)
            yield

    def _fenced_or_none(self, host: Host, ctx: StepContext) -> bool:
        """``_fence``, as a yes or no: False for a call that may change nothing more here."""
        try:
            self._fence(host, ctx)
        except DriverError:
            return False
        return True

    def _drop_partials(self, mid: str) -> None:
        """Remove the temporary files of copies of ``mid`` that never landed (killed or
        refused mid-way): a cancelled or landed migration leaves none behind."""
        for path in partials(self.dir / incoming_image(mid)):
            path.unlink(missing_ok=True)

    def _job_domain(self, host: Host, name: str, mid: str) -> dict[str, Any]:
        dom: dict[str, Any] | None = host["domains"].get(name)
        if dom is None or dom["job"] != mid:
            raise DriverError(f"domain {name!r} on {self.uri} has no job for migration {mid}")
        return dom

    # -- the declared interface -----------------------------------------------------------

    blocking: ClassVar[bool] = True  # file I/O, copies, injected hangs: watched
    honoured_settings: ClassVar[frozenset[Setting]] = frozenset(Setting)
    """What the simulated passes act on (``precopy.py``), and a post-copy resumption
    (its bandwidth: ``postcopy.py``)."""

    def features(self) -> frozenset[Feature]:
        return self._features

    @property
    def honoured_flags(self) -> MigrateFlags:
        """The flags the steps act on (docs/drivers.md); TUNNELLED and POSTCOPY where v3
        is spoken."""
        if Feature.TUNNELLED in self._features:
            return HONOURED | MigrateFlags.TUNNELLED | MigrateFlags.POSTCOPY
        return HONOURED
