"""The journal's retry (``journal/resilience.py``) on a real PostgreSQL server: a write or a
read whose connection is killed (``pg_terminate_backend``) is tried again on a new one; one
whose statement is cancelled (``pg_cancel_backend``, not a transient error) is not."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from migrator.errors import JournalUnavailable
from migrator.journal.store import Journal
from migrator.records import Migration
from tests.journal.blocker import Blocker, Call

pytestmark = pytest.mark.no_replay  # no migration is run


@pytest.fixture
def journal(pg_url: str) -> Iterator[Journal]:
    with Journal.open(pg_url, upgrade=True) as opened:
        yield opened


@pytest.fixture
def blocker(pg_url: str) -> Iterator[Callable[[], Blocker]]:
    """Locks the journal's ``migrations`` table when called."""
    made: list[Blocker] = []

    def lock() -> Blocker:
        made.append(Blocker(pg_url, "migrations"))
        return made[-1]

    yield lock
    for one in made:
        one.release()


def _create(journal: Journal) -> Callable[[], Migration]:
    return lambda: journal.create(
        domain="vm1", src="test:///a", dst="test:///b", protocol=3, flags=0, bandwidth=0,
        owner="c1",
    )  # fmt: skip


def _killed_then_retried(locked: Blocker, fn: Callable[[], Any]) -> Any:
    call = Call(fn)
    locked.end(locked.next_waiter() or 0, "terminate")
    assert locked.next_waiter(call.done) is not None, call.error  # the retry waits again
    locked.release()
    result = call.join()
    assert call.error is None, call.error
    return result


def _cancelled_not_retried(locked: Blocker, fn: Callable[[], Any]) -> JournalUnavailable:
    call = Call(fn)
    locked.end(locked.next_waiter() or 0, "cancel")
    assert locked.next_waiter(call.done) is None, "retried a cancelled statement"
    call.join()
    locked.release()
    assert isinstance(call.error, JournalUnavailable), call.error
    return call.error


def test_a_write_whose_connection_is_killed_is_retried(
    journal: Journal, blocker: Callable[[], Blocker]
) -> None:
    created = _killed_then_retried(blocker(), _create(journal))
    assert [m.id for m in journal.list()] == [created.id]


def test_a_write_whose_statement_is_cancelled_is_not_retried(
    journal: Journal, blocker: Callable[[], Blocker]
) -> None:
    error = _cancelled_not_retried(blocker(), _create(journal))
    assert "canceling statement due to user request" in str(error)
    assert journal.list() == []


def test_a_read_whose_connection_is_killed_is_retried(
    journal: Journal, blocker: Callable[[], Blocker]
) -> None:
    created = _create(journal)()
    got = _killed_then_retried(blocker(), lambda: journal.get(created.id))
    assert (got.id, got.state, got.fence) == (created.id, created.state, created.fence)


def test_a_read_whose_statement_is_cancelled_is_not_retried(
    journal: Journal, blocker: Callable[[], Blocker]
) -> None:
    created = _create(journal)()
    error = _cancelled_not_retried(blocker(), lambda: journal.get(created.id))
    assert "canceling statement due to user request" in str(error)
