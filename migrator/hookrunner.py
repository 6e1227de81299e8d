"""Run driver hooks with a timeout, on a daemon worker thread.

A hung hook cannot be killed from Python; the runner abandons its worker (a daemon thread,
so it never keeps the process alive) and starts a new one for the next call. A hook that
timed out must not take effect later: ``StepContext.deadline`` tells it when to give up.
"""

from __future__ import annotations

import queue
import threading
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

    def call(self, fn: Callable[[], R], *, step: str, timeout: float | None) -> R:
        """Return ``fn()`` or raise what it raised; raise StepTimeout after ``timeout`` s."""
        if timeout is None:
            return fn()
        reply: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        with self._lock:
            jobs = self._worker()
            jobs.put((fn, reply))
        try:
            ok, value = reply.get(timeout=timeout)
        except queue.Empty:
            self._abandon(jobs)
            raise StepTimeout(step=step, seconds=timeout) from None
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
