"""Run driver hooks with a timeout, on a daemon worker thread.

A hung hook cannot be killed from Python; the runner abandons its worker (a daemon thread,
so it never keeps the process alive) and starts a new one for the next call. A hook that
timed out must not take effect later: ``StepContext.deadline`` tells it when to give up,
and the caller (``Steps.call``) turns ``StepContext.stopped`` true for an abandoned call,
so that its host writes are refused.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from migrator.errors import StepTimeout

R = TypeVar("R")

_Job = tuple[Callable[[], Any], "queue.SimpleQueue[tuple[bool, Any]]"]


def _work(jobs: queue.SimpleQueue[_Job | None]) -> None:
    while (job := jobs.get()) is not None:
        fn, reply = job
        try:
            reply.put((True, fn()))
        except BaseException as exc:  # noqa: BLE001 -- handed to the caller, who re-raises it
            reply.put((False, exc))


class HookRunner:
    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] | None = None
        self._lock = threading.Lock()

    def call(
        self,
        fn: Callable[[], R],
        *,
        step: str,
        timeout: float | None,
        tick: Callable[[], None] | None = None,
        tick_every: float = 10.0,
    ) -> R:
        """Return ``fn()`` or raise what it raised; raise StepTimeout after ``timeout`` s.

        While waiting, ``tick()`` runs every ``tick_every`` s (the lease heartbeat); what it
        raises propagates at once, leaving the hook to finish on its abandoned worker.
        """
        if timeout is None and tick is None:
            return fn()
        reply: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        with self._lock:
            jobs = self._worker()
            jobs.put((fn, reply))
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = tick_every if deadline is None else min(tick_every, deadline - time.monotonic())
            try:
                ok, value = reply.get(timeout=max(0.0, wait))
                break
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    self._abandon(jobs)
                    raise StepTimeout(step=step, seconds=timeout or 0.0) from None
            if tick is not None:
                try:
                    tick()
                except BaseException:
                    self._abandon(jobs)
                    raise
        if ok:
            result: R = value
            return result
        raise value

    def _worker(self) -> queue.SimpleQueue[_Job | None]:
        if self._jobs is None:
            self._jobs = queue.SimpleQueue()
            threading.Thread(
                target=_work, args=(self._jobs,), name="migrator-hook", daemon=True
            ).start()
        return self._jobs

    def _abandon(self, jobs: queue.SimpleQueue[_Job | None]) -> None:
        with self._lock:
            if self._jobs is jobs:
                self._jobs = None
        jobs.put(None)  # the worker exits if its hook ever returns

    def close(self) -> None:
        with self._lock:
            if self._jobs is not None:
                self._jobs.put(None)
                self._jobs = None
