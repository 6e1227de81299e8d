"""Perform's watch: progress from the source's job statistics, abort and deadline.

While Perform3 waits for its reply on the migration's connection, ``PerformWatch.tick``
runs every ``rpc.TICK`` s in that wait. It never calls the daemon itself, so nothing it does
can delay the reading of Perform3's reply:

- a poller thread (started by the first tick) reads DOMAIN_GET_JOB_STATS on a connection
  of its own, each call within ``STATS_TIMEOUT``; ``tick`` hands its latest sample to
  ``ctx.progress``. A poller that stalls or fails only leaves the progress where it was.
- once ``ctx.aborted()`` turns true or the deadline passes, ``tick`` starts a thread that
  sends DOMAIN_ABORT_JOB on a new connection (not the poller's, which may be stalled),
  after which libvirt fails Perform3 and resumes the source itself. It is sent even for a
  call the engine abandoned: it ends the job of this very Perform3, still waiting for its
  reply, which is what keeps an abandoned Perform from taking effect.
- the convergence controls waiting (``ctx.controls()``, docs/convergence.md) are made by
  a thread of their own, in order, on a new connection: DOMAIN_MIGRATE_SET_MAX_DOWNTIME,
  DOMAIN_MIGRATE_SET_MAX_SPEED (with the post-copy flag for post-copy's cap) and
  DOMAIN_SUSPEND for ``pause``; none once the engine abandoned the call (``ctx.stopped()``:
  the connection is guarded, ``Remote.guarded``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from migrator.convergence.policy import Setting
from migrator.drivers.libvirt.remote import Remote
from migrator.drivers.libvirt.rpc import TICK
from migrator.drivers.libvirt.typed import stats_timeout
from migrator.drivers.libvirt.xdr import DomainRef, ParamValue
from migrator.errors import DriverError, StepAbandoned
from migrator.records import Control, ControlKind, Progress, StepContext

log = logging.getLogger(__name__)
_FAILURES = (DriverError, OSError)
"""What a watch thread may meet (every libvirt error is a ``DriverError``): logged, so that
no thread of the watch ever ends in a traceback."""


def progress_of(stats: Mapping[str, ParamValue], *, final: bool = False) -> Progress | None:
    """A progress sample from libvirt's job statistics (``memory_*``), if they hold one."""
    if "memory_total" not in stats:
        return None
    total = int(stats.get("memory_total", 0))
    transferred = int(stats.get("memory_processed", 0))
    remaining = 0 if final else int(stats.get("memory_remaining", 0))
    passes = max(1, int(stats.get("memory_iteration", 1)))
    page = int(stats.get("memory_page_size", 4096)) or 4096
    return Progress(
        total,
        transferred,
        remaining,
        passes=passes,
        dirty_rate=_optional(stats, "memory_dirty_rate", page),
        throttle_pct=_optional(stats, "auto_converge_throttle"),
        postcopy_requests=_optional(stats, "memory_postcopy_requests"),
    )


def _optional(stats: Mapping[str, ParamValue], key: str, unit: int = 1) -> int | None:
    return int(stats[key]) * unit if key in stats else None


HONOURED: frozenset[Setting] = frozenset(
    {
        Setting.DOWNTIME,
        Setting.SPEED,
        Setting.POSTCOPY_BANDWIDTH,
        Setting.JOB_STATS,
        Setting.PAUSE,
        Setting.PARALLEL,
    }
)
"""The convergence settings the driver honours: the watch makes all but ``PARALLEL``,
which is Begin3/Prepare3/Perform3's ``VIR_MIGRATE_PARALLEL`` and ``parallel.connections``
(``typed.py``). Auto-converge as a policy setting is not offered: ``--flag
auto-converge`` asks libvirt for it."""


class PerformWatch:
    """Watches one Perform3 of ``dom``; ``open_remote`` opens a new connection to the source."""

    def __init__(self, ctx: StepContext, dom: DomainRef, open_remote: Callable[[], Remote]) -> None:
        self.ctx = ctx
        self.dom = dom
        self._open = open_remote
        self.gave_up: str | None = None
        """Why the job was aborted ("aborted by an operator", "deadline"), or None."""
        self.abort_note = ""
        """What became of DOMAIN_ABORT_JOB, once it was sent."""
        self._latest: Progress | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._controlling = threading.Lock()
        self.paused_at: float | None = None
        """``time.monotonic()`` when ``PAUSE`` suspended the source, if it did."""

    def tick(self) -> None:
        """Report the latest sample; give up when it is time. Returns at once."""
        if self._poller is None:
            self._poller = _thread(self._poll, f"perform watch {self.dom.name}")
        with self._lock:
            sample, self._latest = self._latest, None
        if sample is not None:
            self.ctx.progress(sample)
        controls = self.ctx.controls()
        if controls:
            _thread(lambda: self._control(controls), f"perform controls {self.dom.name}")
        if self.gave_up is None:
            why = self._why_give_up()
            if why is not None:
                self.gave_up = why
                self.abort_note = "DOMAIN_ABORT_JOB sent"
                _thread(self._abort, f"perform abort {self.dom.name}")

    def _why_give_up(self) -> str | None:
        if self.ctx.aborted():
            return "aborted by an operator"
        if self.ctx.deadline is not None and time.monotonic() >= self.ctx.deadline:
            return "Perform passed its deadline"
        return None

    def _poll(self) -> None:
        remote: Remote | None = None
        while not self._stop.is_set():
            try:
                if remote is None or remote.conn.broken:
                    remote = self._open()
                stats = remote.job_stats(self.dom, timeout=stats_timeout(self.ctx.time_left()))
            except _FAILURES as exc:  # the reply of Perform3 decides, never its statistics
                log.debug("perform watch of %s: %s", self.dom.name, exc)
            else:
                sample = progress_of(stats)
                if sample is not None:
                    with self._lock:
                        self._latest = sample
            self._stop.wait(TICK)
        if remote is not None:
            remote.conn.close()

    def _abort(self) -> None:
        try:
            remote = self._open()
            try:
                remote.abort_job(self.dom)
            finally:
                remote.conn.close()
        except _FAILURES as exc:
            self.abort_note = f"DOMAIN_ABORT_JOB failed ({exc})"
            log.warning("perform watch of %s: %s", self.dom.name, self.abort_note)

    def _control(self, controls: list[Control]) -> None:
        """Make each control on a connection of its own; each is done with its outcome."""
        try:
            remote = self._open().guarded(self.ctx)
        except _FAILURES as exc:
            for control in controls:
                control.done(f"the source cannot be reached: {exc}")
            return
        try:
            with self._controlling:  # in the order they were asked for
                for control in controls:
                    control.done(self._make(remote, control))
        finally:
            remote.conn.close()

    def _make(self, remote: Remote, control: Control) -> str | None:
        timeout = stats_timeout(self.ctx.time_left())
        try:
            if control.kind is ControlKind.DOWNTIME:
                remote.set_max_downtime(self.dom, control.value, timeout=timeout)
            elif control.kind in (ControlKind.SPEED, ControlKind.POSTCOPY_SPEED):
                postcopy = control.kind is ControlKind.POSTCOPY_SPEED
                remote.set_max_speed(self.dom, control.value, postcopy=postcopy, timeout=timeout)
            elif control.kind is ControlKind.PAUSE:
                remote.suspend(self.dom, timeout=timeout)
                self.paused_at = time.monotonic()
            elif control.kind is ControlKind.PARALLEL:
                return None  # Perform3's parallel.connections: made as the data began
            else:
                return f"libvirt hosts do not honour {control.kind}"
        except StepAbandoned as exc:
            return str(exc)
        except _FAILURES as exc:
            return f"refused by libvirt: {exc}"
        return None

    def close(self) -> None:
        """Stop the poller; it closes its connection once its call in flight returns."""
        self._stop.set()


def postcopy_control(remote: Remote, dom: DomainRef, control: Control) -> str | None:
    """Make ``control`` on a source in post-copy (Perform3 returned at the switch): the
    bandwidth is the post-copy one; nothing else applies any more. None once made."""
    if control.kind not in (ControlKind.SPEED, ControlKind.POSTCOPY_SPEED):
        return f"{control.kind} does not apply after the switch to post-copy"
    try:
        remote.set_max_speed(dom, control.value, postcopy=True, timeout=stats_timeout(None))
    except StepAbandoned as exc:
        return str(exc)
    except _FAILURES as exc:
        return f"refused by libvirt: {exc}"
    return None


def _thread(target: Callable[[], None], name: str) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread
