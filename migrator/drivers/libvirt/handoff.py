"""What the source's and the destination's libvirt driver of one post-copy migration pass
each other in this process, and the wait for the end of post-copy.

libvirt's Perform3 returns as soon as post-copy is active; the destination's Finish3 then
starts the guest's vCPUs there and returns once every page arrived (a resumption's Finish3
likewise). So a switched migration's Finish3 runs on a thread of the destination's driver
(``Handoff.finish``), started by the switch just before it tells the source (``early``) or
by ``run_postcopy``, with no cookie (a resumption's gets its Perform3's, ``hand``); the
source's ``perform`` returns only when that Finish3 returned: as for the other drivers,
Perform's end means every page was sent. While it waits, the source's job statistics are
progress; post-copy whose remaining bytes do not shrink for ``STALL_S`` (a cut link stalls
QEMU's stream without breaking it) is paused with VIR_DOMAIN_ABORT_JOB_POSTCOPY, and the
wait fails: the engine resumes it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from migrator.drivers.api import FinishResult
from migrator.drivers.libvirt.errors import LibvirtError, LibvirtUnreachable
from migrator.drivers.libvirt.remote import Remote
from migrator.drivers.libvirt.typed import stats_timeout
from migrator.drivers.libvirt.watch import postcopy_control, progress_of
from migrator.drivers.libvirt.xdr import DomainRef, ParamValue, XDRError
from migrator.errors import DriverError
from migrator.records import StepContext

log = logging.getLogger(__name__)
POLL_S = 0.5
"""Seconds between two looks at the source's job statistics during post-copy."""
STALL_S = 8.0
"""Seconds of post-copy without a byte less to send after which it is paused: the stream
hangs (a cut link), and only a paused post-copy can be resumed."""
COOKIE_WAIT_S = 120.0
"""Seconds the destination's Finish3 thread waits for Perform3's cookie."""
_FAILURES = (LibvirtError, LibvirtUnreachable, XDRError, OSError)


@dataclass
class Handoff:
    """One migration's post-copy, between its two drivers in this process."""

    switched: bool = False
    """The source was told to switch (VIR_DOMAIN_MIGRATE_START_POST_COPY)."""
    cookie: bytes | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    """Set once ``cookie`` (Perform3's, for Finish3) is there."""
    done: threading.Event = field(default_factory=threading.Event)
    """Set once Finish3 returned, with ``finished`` or ``error``."""
    started: threading.Event = field(default_factory=threading.Event)
    """Set once a Finish3 thread started."""
    finishing: bool = False
    stalled: bool = False
    """Its post-copy stalled and was paused: the Finish3 still waiting counts no more."""
    finished: FinishResult | None = None
    error: BaseException | None = None
    dst: Any = None
    restart: bool = False
    early: Callable[[], bool] | None = None
    """Starts the destination's Finish3 (``offer_finish``), for the switch to call first."""
    """The source runs the guest whole with no migration job: the journaled switch never
    reached it, so the resumption migrates it again (``postcopy_phase``)."""
    """The destination's driver, for a resumption (``recover_postcopy`` names it)."""

    def finish(self, call: Callable[[bytes], FinishResult]) -> None:
        """Run ``call(cookie)`` (Finish3) on a thread once the cookie is handed over."""
        self.finishing = True
        self.done.clear()
        self.started.set()
        threading.Thread(target=lambda: self._finish(call), daemon=True).start()

    def _finish(self, call: Callable[[bytes], FinishResult]) -> None:
        try:
            if not self.ready.wait(COOKIE_WAIT_S) or self.cookie is None:
                raise DriverError("Perform3 never handed its cookie to Finish3")
            self.finished, self.error = call(self.cookie), None
        except BaseException as exc:  # noqa: BLE001 -- the waiting Perform raises it
            self.finished, self.error = None, exc
        finally:
            self.finishing = False
            self.done.set()

    @property
    def in_flight(self) -> bool:
        """Its Finish3 runs and may still complete post-copy."""
        return self.finishing and not self.stalled

    def hand(self, cookie: bytes) -> None:
        self.cookie = cookie
        self.ready.set()


_HANDOFFS: dict[str, Handoff] = {}
_LOCK = threading.Lock()


def of(mid: str) -> Handoff:
    with _LOCK:
        return _HANDOFFS.setdefault(mid, Handoff())


def peek(mid: str) -> Handoff | None:
    with _LOCK:
        return _HANDOFFS.get(mid)


def renew(mid: str) -> Handoff:
    """A new handoff for a resumption of ``mid`` (a Finish3 of an earlier one may still
    end late: it must not count)."""
    with _LOCK:
        h = _HANDOFFS[mid] = Handoff(switched=True)
        return h


def drop(mid: str) -> None:
    with _LOCK:
        _HANDOFFS.pop(mid, None)


def await_finish(
    ctx: StepContext, h: Handoff, open_source: Callable[[], Remote], dom: DomainRef
) -> tuple[FinishResult, dict[str, ParamValue]]:
    """Wait for ``h``'s Finish3, reporting the source's job statistics as progress and
    making the controls asked for meanwhile (``postcopy_control``); the result, and the
    last statistics. Raises what Finish3 raised, or ``DriverError`` once a
    stalled post-copy was paused."""
    remote: Remote | None = None
    stats: dict[str, ParamValue] = {}
    best, since = None, time.monotonic()
    try:
        while not h.done.wait(POLL_S):
            try:
                if remote is None or remote.conn.broken:
                    remote = open_source()
                stats = remote.job_stats(dom, timeout=stats_timeout(None))
            except _FAILURES as exc:
                log.debug("post-copy of %s: no statistics: %s", dom.name, exc)
                continue
            for control in ctx.controls():  # the post-copy bandwidth, asked for meanwhile
                control.done(postcopy_control(remote.guarded(ctx), dom, control))
            sample = progress_of(stats)
            if sample is not None:
                ctx.progress(sample)
                if best is None or sample.remaining < best:
                    best, since = sample.remaining, time.monotonic()
            if best and time.monotonic() - since > STALL_S:  # bytes left, none going
                h.stalled = True
                pause(remote, dom)
                raise DriverError(
                    f"post-copy of {dom.name} stalled ({best} bytes left for {STALL_S:.0f} s):"
                    " paused with VIR_DOMAIN_ABORT_JOB_POSTCOPY to be resumed"
                )
    finally:
        if remote is not None:
            remote.conn.close()
    if h.error is not None:
        raise DriverError(f"post-copy of {dom.name} paused: {h.error}") from h.error
    assert h.finished is not None
    stats.pop("type", None)
    return h.finished, stats


def switch_soon(switch: Callable[[], None]) -> Callable[[], None]:
    """A Perform3 tick that switches to post-copy on a thread, retried until libvirt takes
    it (the job must have reached QEMU's transfer) or ``COOKIE_WAIT_S`` passed."""
    started: list[threading.Thread] = []

    def keep_trying() -> None:
        deadline = time.monotonic() + COOKIE_WAIT_S
        while True:
            try:
                switch()
                return
            except (DriverError, OSError) as exc:
                if time.monotonic() > deadline:
                    log.warning("the switch of a restarted post-copy failed: %s", exc)
                    return
            time.sleep(POLL_S)

    def tick() -> None:
        if not started:
            started.append(threading.Thread(target=keep_trying, daemon=True))
            started[0].start()

    return tick


def pause(remote: Remote | None, dom: DomainRef) -> str:
    """VIR_DOMAIN_ABORT_JOB_POSTCOPY (QEMU's ``migrate-pause``); what libvirt said."""
    if remote is None:
        return "no connection"
    try:
        remote.abort_job_postcopy(dom, timeout=stats_timeout(None))
    except _FAILURES as exc:
        return str(exc)  # paused already, or not in post-copy
    return "paused"
