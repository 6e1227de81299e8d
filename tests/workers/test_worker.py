"""The worker's poll loop on a real PostgreSQL journal: a journal error (here the worker's
heartbeat cancelled with ``pg_cancel_backend``, which the journal itself does not retry) is
logged and retried at the next poll; any other error stops the worker after one try."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import pytest

from migrator.engine.coordinator import Coordinator
from migrator.hostlimits import HostLimits
from migrator.journal.queue import Queue
from migrator.journal.store import Journal
from migrator.workers import Worker
from tests.conftest import Hosts
from tests.journal.blocker import WAIT, Blocker

WARNING = "journal unavailable, retrying in the next poll"


def _registered(journal: Journal, worker: Worker) -> None:
    deadline = time.monotonic() + WAIT
    while worker.id not in {w.id for w in Queue(journal).workers()}:
        assert time.monotonic() < deadline, "the worker never registered"
        time.sleep(0.01)


def test_a_journal_error_in_a_poll_is_logged_and_retried_at_the_next_poll(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="migrator.workers.worker")
    with Journal.open(pg_url, upgrade=True) as journal:
        worker = Worker(journal, poll=0.05).start()
        try:
            _registered(journal, worker)
            locked = Blocker(pg_url, "workers")
            try:
                locked.end(locked.next_waiter() or 0, "cancel")
                assert locked.next_waiter(lambda: worker.join(0)) is not None
            finally:
                locked.release()
            assert not worker.join(0), "the worker stopped on a journal error"
        finally:
            worker.stop()
            assert worker.join(WAIT)
    assert WARNING in caplog.text
    assert "canceling statement due to user request" in caplog.text


class _Failing(HostLimits):
    """Limits whose check fails: an error that is not the journal's."""

    calls: list[str] = []  # noqa: RUF012 -- the frozen dataclass keeps its calls here

    def admits(self, src: str, dst: str, out: Mapping[str, int], into: Mapping[str, int]) -> bool:
        self.calls.append(src)
        raise RuntimeError("a limits check that fails")


def test_an_error_that_is_not_the_journals_stops_the_worker_after_one_try(
    pg_url: str, hosts: Hosts, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="migrator.workers.worker")
    with Journal.open(pg_url, upgrade=True) as journal:
        submitter = Coordinator(journal)
        try:
            submitter.submit("vm1", src=hosts.src, dst=hosts.dst)
        finally:
            submitter.close()
        worker = Worker(journal, poll=0.05, limits=_Failing())
        with pytest.raises(RuntimeError, match="a limits check that fails"):
            worker.run()
        assert _Failing.calls == [hosts.src_uri]
        assert worker.id not in {w.id for w in Queue(journal).workers()}
    assert WARNING not in caplog.text
