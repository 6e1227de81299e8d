"""``test:///ABS/DIR``: a simulated host whose whole state lives in DIR, with fault injection.

Like libvirt's test driver, but persistent: the state outlives every process, so a
coordinator can be killed and restarted against the same hosts, and ``migrator test-host``
can inspect them meanwhile. ``DIR/host.json`` holds::

    {"host_id": uuid, "domains": {name: {state, memory_mib, image, checksum,
                                         lease: {token, held}, job, state_before_job,
                                         outgoing: {migration id: "completed"}, ...}},
     "faults": {step: {mode, seconds, message, count}},
     "calls": {memo key: recorded result}, "fences": {migration id: highest fence}}

Every read-modify-write holds an exclusive ``flock`` on ``DIR/.lock`` and replaces
``host.json`` atomically; long work (the copy in Perform, the sleeps of faults) runs
without the lock. A domain's memory is an image file under ``DIR/images/``; Perform copies
it to the destination's ``images/incoming-<migration id>.img`` and Finish checks its sha256.

The URI may restrict the protocols the host speaks: ``test:///ABS/DIR?protocols=1,2``
(default ``1,2,3``; v3 comes with tunnelling). The v2 and v1 hooks share the v3 machinery:
their Perform ends (removes) the source domain once it sent it, remembering the transfer
as ``"completed"`` for ``probe``, and resumes it on failure.

Fault modes, per step (``begin``... ``confirm``, ``probe``): ``error`` raises having done
nothing; ``lost-reply`` does the work, then raises; ``no-domain`` (Finish only) makes
Finish(cancelled=0) drop the incoming copy and report no domain; ``hang`` never returns
before ``ctx.deadline`` + 1 s; ``slow`` sleeps ``seconds`` first. A fault with a ``count``
fires that many times, else until cleared.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from migrator.drivers.base import (
    BeginResult,
    ConfirmResult,
    DomainState,
    Feature,
    FinishResult,
    MigrationParams,
    PerformResult,
    PrepareResult,
    ProbeResult,
    TunnelResult,
)
from migrator.drivers.hoststate import Host, HostState, Memo, dec, enc, json_bytes, memo_key
from migrator.errors import DomainExists, DomainNotFound, DriverError, InvalidURI
from migrator.flags import MigrateFlags
from migrator.records import Progress, StepContext
from migrator.states import Step

MIB = 1024 * 1024
CHUNK = 256 * 1024
PROGRESS_EVERY = 0.1
NAP = 0.02
HANG_GRACE = 1.0
"""A hung hook outlives its deadline by this much, so the engine's timeout fires first."""

_PROTOCOL_FEATURES = {
    1: {Feature.MIGRATION_V1},
    2: {Feature.MIGRATION_V2},
    3: {Feature.MIGRATION_V3, Feature.TUNNELLED},
}
_FINISH_STEPS = (Step.FINISH, Step.FINISH2, Step.FINISH1)
_PERFORM_STEPS = (Step.PERFORM, Step.PERFORM2, Step.PERFORM1)
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class FaultMode(enum.StrEnum):
    ERROR = "error"
    LOST_REPLY = "lost-reply"
    NO_DOMAIN = "no-domain"
    IO_ERROR = "io-error"
    HANG = "hang"
    SLOW = "slow"


def _incoming_image(mid: str) -> str:
    """The image path (relative to DIR) a migration's copy arrives at."""
    if not _SAFE_ID.fullmatch(mid):
        raise DriverError(f"migration id {mid!r} cannot name a file on a test host")
    return f"images/incoming-{mid}.img"


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
    return Path(parts.path)


def _parse_incoming(uri: str, mid: str) -> Path:
    """The destination DIR of a Prepare URI, checked to be for migration ``mid``."""
    parts = urlsplit(uri)
    wanted = parse_qs(parts.query).get("incoming", [""])[0]
    if parts.scheme != "test" or parts.netloc or not parts.path.startswith("/"):
        raise DriverError(f"not a test host migration URI: {uri}")
    if wanted != mid:
        raise DriverError(f"URI {uri} is for migration {wanted!r}, not {mid!r}")
    return Path(parts.path)


def _write_image(path: Path, name: str, memory_mib: int) -> str:
    """Write ``memory_mib`` MiB of bytes that depend only on ``name``; return their sha256.

    One MiB of SHAKE output, each copy stamped with its index, is fast at any size and
    still makes every MiB (and every domain) different.
    """
    base = hashlib.shake_256(name.encode()).digest(MIB)
    digest = hashlib.sha256()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        for i in range(memory_mib):
            block = i.to_bytes(8, "big") + base[8:]
            digest.update(block)
            out.write(block)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


def _domain(
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


def _handed_over(dom: dict[str, Any]) -> bool:
    """True once the job's migration changed the domain (paused it, sent it)."""
    return bool(dom.get("outgoing")) or dom["state"] != dom.get("state_before_job", dom["state"])


def _sha256(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except FileNotFoundError:
        return None


def _check_fault(step: str, mode: str, seconds: float | None, count: int | None) -> None:
    steps = [str(s) for s in Step]
    modes = [str(m) for m in FaultMode]
    if step not in steps:
        raise ValueError(f"unknown step {step!r}; valid steps: {', '.join(steps)}")
    if mode not in modes:
        raise ValueError(f"unknown fault mode {mode!r}; valid modes: {', '.join(modes)}")
    if mode == FaultMode.NO_DOMAIN and step not in _FINISH_STEPS:
        raise ValueError(f"fault mode no-domain applies only to finish steps, not {step}")
    if mode == FaultMode.IO_ERROR and step not in _PERFORM_STEPS:
        raise ValueError(f"fault mode io-error applies only to perform steps, not {step}")
    if seconds is not None and seconds < 0:
        raise ValueError(f"fault seconds must be >= 0, not {seconds}")
    if count is not None and count < 1:
        raise ValueError(f"fault count must be >= 1, not {count}")


def _hang(step: str, deadline: float | None) -> None:
    while deadline is None or time.monotonic() < deadline + HANG_GRACE:
        time.sleep(NAP)
    raise DriverError(f"hung: injected hang in {step} gave up after its deadline")


def _io_errors(fault: dict[str, Any] | None, params: MigrationParams) -> int:
    """An injected I/O error during Perform: fatal with ABORT_ON_ERROR, else counted."""
    if fault is None or fault["mode"] != FaultMode.IO_ERROR:
        return 0
    if params.flags & MigrateFlags.ABORT_ON_ERROR:
        raise DriverError(
            fault["message"] or "I/O error during migration: aborted (abort-on-error)"
        )
    return 1


def _check_stop(ctx: StepContext, done: int, total: int) -> None:
    if ctx.aborted():
        raise DriverError(f"perform aborted after {done} of {total} bytes")
    if ctx.deadline is not None and time.monotonic() > ctx.deadline:
        raise DriverError(f"perform passed its deadline after {done} of {total} bytes")


def _pace(ctx: StepContext, start: float, done: int, total: int, bandwidth: int) -> None:
    """Sleep until ``done`` bytes fit ``bandwidth`` MiB/s, still heeding abort and deadline."""
    if bandwidth <= 0:
        return
    due = start + done / (bandwidth * MIB)
    while (left := due - time.monotonic()) > 0:
        _check_stop(ctx, done, total)
        time.sleep(min(NAP, left))


def _stream(ctx: StepContext, src: Path, write: Callable[[bytes], Any], bandwidth: int) -> int:
    """Send ``src`` through ``write`` in chunks, paced, reporting progress; return bytes."""
    total = src.stat().st_size
    done, start, reported = 0, time.monotonic(), time.monotonic()
    with open(src, "rb") as fin:
        while chunk := fin.read(CHUNK):
            _check_stop(ctx, done, total)
            write(chunk)
            done += len(chunk)
            _pace(ctx, start, done, total, bandwidth)
            if time.monotonic() - reported >= PROGRESS_EVERY:
                reported = time.monotonic()
                ctx.progress(Progress(total, done, total - done, passes=1))
        _check_stop(ctx, done, total)
    ctx.progress(Progress(total, done, 0, passes=1))
    return done


def _send(ctx: StepContext, src: Path, dst: Path, bandwidth: int) -> int:
    """Copy ``src`` to ``dst`` (made durable); return the bytes sent."""
    with open(dst, "wb") as fout:
        done = _stream(ctx, src, fout.write, bandwidth)
        fout.flush()
        os.fsync(fout.fileno())
    return done


def _incoming_path(uri: str, mid: str) -> Path:
    """Where a Prepare URI says migration ``mid``'s image goes; it must be expected there."""
    final = _parse_incoming(uri, mid) / _incoming_image(mid)
    if not final.exists():
        raise DriverError(f"{uri} is not expecting migration {mid}: no incoming image")
    return final


def _copy_to(
    ctx: StepContext,
    source: Path,
    final: Path,
    bandwidth: int,
    sidecar: dict[str, Any] | None = None,
) -> int:
    """Send ``source`` to a temporary file beside ``final``, then put it in place (with the
    sender's ``sidecar`` JSON first, for v1); nothing is left behind on failure."""
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        sent = _send(ctx, source, tmp, bandwidth)
        if sidecar is not None:
            final.with_suffix(".json").write_text(json.dumps(sidecar))
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return sent


def _stats(start: float, sent: int, io_errors: int) -> dict[str, Any]:
    stats: dict[str, Any] = {"bytes": sent, "seconds": round(time.monotonic() - start, 3)}
    if io_errors:
        stats["io_errors"] = io_errors
    return stats


class _FileSink:
    """The destination's end of a tunnel: a temporary file that ``close`` puts in place."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tunnel")
        self.file: Any = None

    def write(self, data: bytes) -> None:
        if self.file is None:
            self.file = open(self.tmp, "wb")  # noqa: SIM115 -- closed by close or abort
        self.file.write(data)

    def close(self) -> None:
        if self.file is None:
            self.file = open(self.tmp, "wb")  # noqa: SIM115 -- an empty domain image
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.final)

    def abort(self) -> None:
        if self.file is not None:
            self.file.close()
        self.tmp.unlink(missing_ok=True)


class TestDriver(HostState):
    """One simulated host; every hook is idempotent per migration id and step (DESIGN §5)."""

    __test__ = False  # the name starts with "Test": keep pytest from collecting it
    PARTS = ("domains", "faults", "calls", "fences", "departed")

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.dir = _parse_dir(uri)
        self._features = _parse_protocols(uri)

    # -- storage: host.json, as ``hoststate.HostState`` keeps it -------------------------

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

    @property
    def host_id(self) -> str:
        """This host's identity, created with the host."""
        with self._txn() as host:
            host_id: str = host["host_id"]
            return host_id

    def define(
        self, name: str, memory_mib: int = 4, paused: bool = False, persistent: bool = False
    ) -> dict[str, Any]:
        """Create domain ``name`` with a fresh image; raise DomainExists if it is here.

        A ``persistent`` domain keeps its definition (shut off) on a source it left, unless
        the migration has UNDEFINE_SOURCE; a transient one is gone from it.
        """
        if not name:
            raise ValueError("a domain name must not be empty")
        if memory_mib < 1:
            raise ValueError(f"memory_mib must be >= 1, not {memory_mib}")
        if name in self._read()["domains"]:
            raise DomainExists(domain=name, host=self.uri)
        image = f"images/{uuid.uuid4().hex}.img"
        checksum = _write_image(self.dir / image, name, memory_mib)
        state = DomainState.PAUSED if paused else DomainState.RUNNING
        dom = _domain(state, memory_mib, image, checksum, uuid.uuid4().hex, job=None)
        dom["persistent"] = persistent
        try:
            with self._txn() as host:
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
            for name, dom in sorted(self._read()["domains"].items())
        ]

    def set_memory(self, name: str, memory_mib: int) -> None:
        """A configuration change; refused while a migration with CHANGE_PROTECTION runs."""
        with self._txn() as host:
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
        _check_fault(step, mode, seconds, count)
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
        self, ctx: StepContext, step: Step, skip: FaultMode | None = None
    ) -> dict[str, Any] | None:
        """Refuse a stale fence, record a higher one, and take this step's fault if any."""
        with self._txn() as host:
            seen: int = host["fences"].get(ctx.migration_id, ctx.fence)
            if ctx.fence < seen:
                raise DriverError(
                    f"stale fence {ctx.fence} for migration {ctx.migration_id}:"
                    f" this host has seen {seen}"
                )
            host["fences"][ctx.migration_id] = ctx.fence
            return self._consume(host, step, skip)

    @staticmethod
    def _before(fault: dict[str, Any] | None, step: Step, deadline: float | None) -> None:
        if fault is None:
            return
        if fault["mode"] == FaultMode.ERROR:
            raise DriverError(fault["message"] or f"injected error in {step}")
        if fault["mode"] == FaultMode.HANG:
            _hang(step, deadline)
        if fault["mode"] == FaultMode.SLOW:
            time.sleep(1.0 if fault["seconds"] is None else fault["seconds"])

    @contextmanager
    def _guarded(
        self, ctx: StepContext, step: Step, skip: FaultMode | None = None
    ) -> Iterator[dict[str, Any] | None]:
        """Admit the call and play its fault around the body (lost-reply after it)."""
        fault = self._admit(ctx, step, skip)
        self._before(fault, step, ctx.deadline)
        yield fault
        if fault is not None and fault["mode"] == FaultMode.LOST_REPLY:
            raise DriverError(
                fault["message"] or f"reply lost: {step} took effect but its answer never came"
            )

    def _job_domain(self, host: Host, name: str, mid: str) -> dict[str, Any]:
        dom: dict[str, Any] | None = host["domains"].get(name)
        if dom is None or dom["job"] != mid:
            raise DriverError(f"domain {name!r} on {self.uri} has no job for migration {mid}")
        return dom

    # -- the protocol --------------------------------------------------------------------

    def features(self) -> frozenset[Feature]:
        return self._features

    def begin(self, ctx: StepContext, params: MigrationParams) -> BeginResult:
        """Start the migration job on the source domain; nothing else visible changes."""
        with self._guarded(ctx, Step.BEGIN):
            memo = self._once(
                memo_key(ctx.migration_id, Step.BEGIN), lambda h: self._begin(h, ctx, params)
            )
        return BeginResult(description=memo["description"], cookie=dec(memo["cookie"]))

    def _begin(self, host: Host, ctx: StepContext, params: MigrationParams) -> Memo:
        dom = host["domains"].get(params.domain)
        if dom is None or not DomainState(dom["state"]).active:
            raise DomainNotFound(domain=params.domain, host=self.uri)
        if dom["job"] not in (None, ctx.migration_id) and _handed_over(dom):
            raise DriverError(f"domain {params.domain!r} is being migrated by {dom['job']}")
        # A job that never handed the domain over (e.g. its Begin reply was lost and the
        # migration failed) is superseded: Begin changes nothing visible, so the older
        # migration's Perform or Confirm finds the job gone and refuses to act.
        dom["job"], dom["state_before_job"] = ctx.migration_id, dom["state"]
        if params.flags & MigrateFlags.CHANGE_PROTECTION:
            dom["protected"] = ctx.migration_id
        description = {
            "name": params.domain,
            "memory_mib": dom["memory_mib"],
            "checksum": dom["checksum"],
        }
        cookie = {
            "host": host["host_id"],
            "lease": dom["lease"]["token"],
            "checksum": dom["checksum"],
        }
        return {
            "description": json.dumps(description, sort_keys=True),
            "cookie": enc(json_bytes(cookie)),
        }

    def prepare(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, description: str
    ) -> PrepareResult:
        """Create ``dest_name`` as an incoming domain and an image path for the copy."""
        step = Step.PREPARE_TUNNEL if ctx.step is Step.PREPARE_TUNNEL else Step.PREPARE
        with self._guarded(ctx, step):
            try:
                desc, peer = json.loads(description), json.loads(cookie)
            except ValueError as exc:
                raise DriverError(f"prepare got a bad description or cookie: {exc}") from exc
            memo = self._once(
                memo_key(ctx.migration_id, step),
                lambda h: self._prepare(h, ctx, params, desc, peer),
            )
        return PrepareResult(uri=memo["uri"], cookie=dec(memo["cookie"]))

    def _prepare(
        self,
        host: Host,
        ctx: StepContext,
        params: MigrationParams,
        desc: dict[str, Any],
        peer: dict[str, Any],
    ) -> Memo:
        name, mid = params.dest_name, ctx.migration_id
        inactive = host["domains"].get(name)
        if inactive is not None and (inactive["state"] != DomainState.SHUTOFF or inactive["job"]):
            raise DomainExists(domain=name, host=self.uri)
        image = _incoming_image(mid)
        (self.dir / image).parent.mkdir(parents=True, exist_ok=True)
        (self.dir / image).touch()  # the "listening socket": Perform refuses without it
        host["domains"][name] = _domain(
            DomainState.INCOMING,
            desc["memory_mib"],
            image,
            desc["checksum"],
            peer.get("lease"),
            job=mid,
        )
        if inactive is not None:  # a shut-off definition: put back if the migration fails
            host["domains"][name]["replaces"] = inactive
        uri = f"test://{self.dir}?incoming={quote(mid)}"
        return {"uri": uri, "cookie": enc(json_bytes({"host": host["host_id"]}))}

    def perform(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, uri: str
    ) -> PerformResult:
        """Copy the image to ``uri``; on success the source is paused, its lease released.

        Gives up (raising, the source as it was) when ``ctx.aborted()`` or the deadline trips.
        """
        with self._guarded(ctx, Step.PERFORM) as fault:
            key = memo_key(ctx.migration_id, Step.PERFORM)
            memo = self._read()["calls"].get(key)
            if memo is None:
                final = _incoming_path(uri, ctx.migration_id)
                memo = self._perform(
                    ctx, params, key, io_errors=_io_errors(fault, params),
                    transfer=lambda source: _copy_to(ctx, source, final, params.bandwidth),
                )  # fmt: skip
        return PerformResult(cookie=dec(memo["cookie"]), stats=memo["stats"])

    def _perform(
        self,
        ctx: StepContext,
        params: MigrationParams,
        key: str,
        *,
        io_errors: int,
        transfer: Callable[[Path], int],
    ) -> Memo:
        """v3's Perform: pause unless LIVE, ``transfer`` the image, restore on failure."""
        mid = ctx.migration_id
        with self._txn() as host:
            dom = self._job_domain(host, params.domain, mid)
            before, source = dom["state"], self.dir / dom["image"]
            if not params.flags & MigrateFlags.LIVE:
                dom["state"] = str(DomainState.PAUSED)
        start = time.monotonic()
        try:
            sent = transfer(source)
        except BaseException:
            self._restore(params.domain, mid, before)
            raise
        stats = _stats(start, sent, io_errors)
        return self._once(key, lambda h: self._performed(h, params.domain, mid, stats))

    def _restore(self, name: str, mid: str, state: str) -> None:
        with self._txn() as host:
            dom = host["domains"].get(name)
            if dom is not None and dom["job"] == mid:
                dom["state"] = state

    def _performed(self, host: Host, name: str, mid: str, stats: dict[str, Any]) -> Memo:
        dom = self._job_domain(host, name, mid)
        dom["state"] = str(DomainState.PAUSED)
        dom["lease"]["held"] = False  # the destination takes it over at Finish
        dom["outgoing"][mid] = "completed"
        cookie = {"host": host["host_id"], "sent": stats["bytes"]}
        return {"cookie": enc(json_bytes(cookie)), "stats": stats}

    def finish(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, cancelled: bool
    ) -> FinishResult:
        """Run the received domain if its image is whole; if ``cancelled``, remove it."""
        step = ctx.step if ctx.step in _FINISH_STEPS else Step.FINISH
        key = memo_key(ctx.migration_id, step, cancelled)
        skip = FaultMode.NO_DOMAIN if cancelled else None
        with self._guarded(ctx, step, skip) as fault:
            if cancelled:
                memo = self._once(key, lambda h: self._cancel_incoming(h, params, ctx))
            else:
                whole = fault is None or fault["mode"] != FaultMode.NO_DOMAIN
                whole = whole and self._image_whole(params.dest_name, ctx.migration_id)
                memo = self._once(key, lambda h: self._land(h, params, ctx, whole))
        return FinishResult(running=memo["running"], cookie=dec(memo["cookie"]))

    def _image_whole(self, name: str, mid: str) -> bool:
        """True if ``name``'s incoming image matches the checksum Begin sent, or for v1
        (no description) the one the sender wrote beside it (no lock held)."""
        dom = self._read()["domains"].get(name)
        if dom is None or dom["job"] != mid:
            return False
        expected = dom["checksum"] or self._sent_with(mid).get("checksum")
        return bool(_sha256(self.dir / dom["image"]) == expected)

    def _sent_with(self, mid: str) -> dict[str, Any]:
        """What a v1/v2 sender wrote beside the image: its checksum and size."""
        try:
            sent: dict[str, Any] = json.loads(
                (self.dir / _incoming_image(mid)).with_suffix(".json").read_text()
            )
        except (FileNotFoundError, ValueError):
            return {}
        return sent

    def _finished(self, host: Host, running: bool) -> Memo:
        cookie = {"host": host["host_id"], "running": running}
        return {"running": running, "cookie": enc(json_bytes(cookie))}

    def _land(self, host: Host, params: MigrationParams, ctx: StepContext, whole: bool) -> Memo:
        dom = host["domains"].get(params.dest_name)
        if dom is None or dom["job"] != ctx.migration_id:
            return self._finished(host, running=False)
        if not whole:
            self._drop_incoming(host, params.dest_name)
            return self._finished(host, running=False)
        paused = bool(params.flags & MigrateFlags.PAUSED)
        dom["state"] = str(DomainState.PAUSED if paused else DomainState.RUNNING)
        dom["lease"]["held"], dom["job"] = True, None
        dom["persistent"] = bool(params.flags & MigrateFlags.PERSIST_DEST)
        replaced = dom.pop("replaces", None)
        if replaced is not None:  # the incoming domain takes the inactive definition's place
            (self.dir / replaced["image"]).unlink(missing_ok=True)
        sent = self._sent_with(ctx.migration_id)
        dom["checksum"] = dom["checksum"] or sent.get("checksum")
        dom["memory_mib"] = dom["memory_mib"] or sent.get("memory_mib")
        (self.dir / _incoming_image(ctx.migration_id)).with_suffix(".json").unlink(missing_ok=True)
        return self._finished(host, running=True)

    def _cancel_incoming(self, host: Host, params: MigrationParams, ctx: StepContext) -> Memo:
        mid = ctx.migration_id
        dom = host["domains"].get(params.dest_name)
        if dom is not None and dom.get("arrived_with") == mid and dom["job"] is None:
            # A Finish(0) already ran it: say so honestly; the engine calls that in doubt.
            return self._finished(host, running=True)
        if dom is not None and dom["job"] == mid:
            self._drop_incoming(host, params.dest_name)
        (self.dir / _incoming_image(mid)).unlink(missing_ok=True)
        (self.dir / _incoming_image(mid)).with_suffix(".json").unlink(missing_ok=True)
        return self._finished(host, running=False)

    def confirm(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, cancelled: bool
    ) -> ConfirmResult:
        """Remove the source copy, or if ``cancelled`` resume it as it was at Begin.

        Either is a no-op for a domain that is absent or has no job for this migration.
        """
        with self._guarded(ctx, Step.CONFIRM):
            if cancelled:
                self._once(
                    memo_key(ctx.migration_id, Step.CONFIRM, cancelled),
                    lambda h: self._resume(h, params.domain, ctx.migration_id),
                )
            else:
                self._once(
                    memo_key(ctx.migration_id, Step.CONFIRM, cancelled),
                    lambda h: self._kill(h, params.domain, ctx.migration_id, params.flags),
                )
        return ConfirmResult(cookie=b"")

    def _kill(self, host: Host, name: str, mid: str, flags: int) -> Memo:
        dom = host["domains"].get(name)
        if dom is not None and not (dom["state"] == DomainState.SHUTOFF and dom["job"] is None):
            self._job_domain(host, name, mid)  # never kill a copy this migration never began
            self._end_source(host, name, flags)
        return {}

    def _end_source(self, host: Host, name: str, flags: int) -> None:
        """The source copy stops; a persistent definition stays (shut off) unless
        UNDEFINE_SOURCE, as libvirt leaves it."""
        dom = host["domains"][name]
        if dom.get("persistent") and not flags & MigrateFlags.UNDEFINE_SOURCE:
            dom["state"], dom["job"], dom["state_before_job"] = str(DomainState.SHUTOFF), None, None
            dom["lease"]["held"], dom["protected"] = False, None
        else:
            self._remove(host, name)

    def _resume(self, host: Host, name: str, mid: str) -> Memo:
        dom = host["domains"].get(name)
        if dom is not None and dom["job"] == mid:
            dom["state"] = dom["state_before_job"] or str(DomainState.RUNNING)
            dom["lease"]["held"], dom["job"], dom["state_before_job"] = True, None, None
            dom["protected"] = None
            dom["outgoing"].pop(mid, None)
        return {}

    # -- tunnelled v3 ---------------------------------------------------------------------

    def prepare_tunnel(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, description: str
    ) -> TunnelResult:
        """As ``prepare``; the image then arrives through the returned stream."""
        prepared = self.prepare(ctx, params, cookie, description)
        final = self.dir / _incoming_image(ctx.migration_id)
        return TunnelResult(stream=_FileSink(final), cookie=prepared.cookie)

    def perform_tunnel(
        self,
        ctx: StepContext,
        params: MigrationParams,
        cookie: bytes,
        send: Callable[[bytes], None],
    ) -> PerformResult:
        """As ``perform``, sending the image through ``send`` instead of to a URI."""
        with self._guarded(ctx, Step.PERFORM) as fault:
            key = memo_key(ctx.migration_id, Step.PERFORM)
            memo = self._read()["calls"].get(key) or self._perform(
                ctx, params, key, io_errors=_io_errors(fault, params),
                transfer=lambda source: _stream(ctx, source, send, params.bandwidth),
            )  # fmt: skip
        return PerformResult(cookie=dec(memo["cookie"]), stats=memo["stats"])

    # -- protocols v2 and v1 ---------------------------------------------------------------

    def dump_xml(self, ctx: StepContext, params: MigrationParams) -> BeginResult:
        """The domain's description; nothing changes (no job starts, unlike Begin)."""
        with self._guarded(ctx, Step.DUMP_XML):
            dom = self._read()["domains"].get(params.domain)
            if dom is None or not DomainState(dom["state"]).active:
                raise DomainNotFound(domain=params.domain, host=self.uri)
            description = {
                "name": params.domain,
                "memory_mib": dom["memory_mib"],
                "checksum": dom["checksum"],
            }
        return BeginResult(description=json.dumps(description, sort_keys=True))

    def prepare2(
        self, ctx: StepContext, params: MigrationParams, description: str | None
    ) -> PrepareResult:
        """As ``prepare``; v1 sends no description, so Finish checks what Perform sent."""
        step = ctx.step if ctx.step in (Step.PREPARE1, Step.PREPARE2) else Step.PREPARE2
        with self._guarded(ctx, step):
            try:
                desc = json.loads(description) if description is not None else {}
            except ValueError as exc:
                raise DriverError(f"{step} got a bad description: {exc}") from exc
            desc.setdefault("memory_mib", None)
            desc.setdefault("checksum", None)
            memo = self._once(
                memo_key(ctx.migration_id, step),
                lambda h: self._prepare(h, ctx, params, desc, {}),
            )
        return PrepareResult(uri=memo["uri"], cookie=dec(memo["cookie"]))

    def perform2(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, uri: str
    ) -> PerformResult:
        """Send the domain; on success end the source copy, on failure resume it."""
        step = ctx.step if ctx.step in (Step.PERFORM1, Step.PERFORM2) else Step.PERFORM2
        with self._guarded(ctx, step) as fault:
            key = memo_key(ctx.migration_id, step)
            memo = self._read()["calls"].get(key) or self._perform2(
                ctx, params, uri, key, io_errors=_io_errors(fault, params)
            )
        return PerformResult(cookie=dec(memo["cookie"]), stats=memo["stats"])

    def _perform2(
        self, ctx: StepContext, params: MigrationParams, uri: str, key: str, *, io_errors: int
    ) -> Memo:
        mid = ctx.migration_id
        final = _incoming_path(uri, mid)
        with self._txn() as host:
            dom = host["domains"].get(params.domain)
            if dom is None or not DomainState(dom["state"]).active:
                raise DomainNotFound(domain=params.domain, host=self.uri)
            if dom["job"] not in (None, mid):
                raise DriverError(f"domain {params.domain!r} is being migrated by {dom['job']}")
            if dom["job"] is None:  # not when a crashed attempt left its job
                dom["job"], dom["state_before_job"] = mid, dom["state"]
            if params.flags & MigrateFlags.CHANGE_PROTECTION:
                dom["protected"] = mid
            if not params.flags & MigrateFlags.LIVE:
                dom["state"] = str(DomainState.PAUSED)
            source = self.dir / dom["image"]
            sent_with = {"checksum": dom["checksum"], "memory_mib": dom["memory_mib"]}
        start = time.monotonic()
        try:
            sent = _copy_to(ctx, source, final, params.bandwidth, sidecar=sent_with)
        except BaseException:
            with self._txn() as host:  # Perform failed: the source resumes, as in libvirt
                self._resume(host, params.domain, mid)
            raise
        stats = _stats(start, sent, io_errors)
        return self._once(key, lambda h: self._departed(h, params.domain, mid, stats, params.flags))

    def finish2(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, cancelled: bool
    ) -> FinishResult:
        """v2's Finish2 and v1's Finish: as ``finish``."""
        return self.finish(ctx, params, cookie, cancelled)

    def _departed(self, host: Host, name: str, mid: str, stats: dict[str, Any], flags: int) -> Memo:
        """The source copy ends once sent (v1, v2); the transfer is remembered for probe."""
        dom = self._job_domain(host, name, mid)
        self._end_source(host, name, flags)
        host["departed"][mid] = name
        cookie = {"host": host["host_id"], "sent": stats["bytes"], "lease": dom["lease"]["token"]}
        return {"cookie": enc(json_bytes(cookie)), "stats": stats}

    def probe(self, domain: str) -> ProbeResult:
        """The state of ``domain`` here, with lease_held, job and outgoing transfers."""
        fault = None
        if Step.PROBE in self._read()["faults"]:
            with self._txn() as host:
                fault = self._consume(host, Step.PROBE, None)
        if fault is not None and fault["mode"] == FaultMode.HANG:
            raise DriverError(fault["message"] or "hung: injected hang in probe")
        self._before(fault, Step.PROBE, None)
        host = self._read()
        dom = host["domains"].get(domain)
        if fault is not None and fault["mode"] == FaultMode.LOST_REPLY:
            raise DriverError(fault["message"] or "reply lost: the probe's answer never came")
        departed = {mid: "completed" for mid, name in host["departed"].items() if name == domain}
        if dom is None:
            absent: dict[str, Any] = {"lease_held": False, "job": None, "outgoing": departed}
            return ProbeResult(state=DomainState.ABSENT, detail=absent, transfers=departed)
        outgoing = {**departed, **dom["outgoing"]}
        detail = {"lease_held": dom["lease"]["held"], "job": dom["job"], "outgoing": outgoing}
        return ProbeResult(state=DomainState(dom["state"]), detail=detail, transfers=outgoing)

    def close(self) -> None:
        return None
