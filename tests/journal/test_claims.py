"""Claims on PostgreSQL: concurrent, exact per-host limits across processes, claims of
other hosts never waiting, and the claim's writes on the journal's write path
(docs/workers.md, "The claim")."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from migrator.hostlimits import UNLIMITED, HostLimits
from migrator.journal.claims import Claim, ClaimSql
from migrator.journal.queue import Queue
from migrator.journal.store import Journal
from migrator.records import EventKind, Migration
from migrator.states import State
from tests.journal.proxy import Proxy

pytestmark = pytest.mark.no_replay  # no migration here is driven: nothing to replay
ONE_OUT = HostLimits(max_outgoing=1)


@pytest.fixture
def pg(pg_url: str) -> Iterator[Journal]:
    journal = Journal.open(pg_url, upgrade=True)
    yield journal
    journal.close()


def _submit(queue: Queue, domain: str, src: str, dst: str) -> Migration:
    return queue.submit(domain=domain, src=src, dst=dst, protocol=3, flags=0, bandwidth=0)


@contextmanager
def _claim_held_open(journal: Journal, limits: HostLimits) -> Iterator[Migration | None]:
    """A claim by ``w1`` whose transaction stays open (locks held, nothing committed)
    until the block ends, then commits."""
    with journal.engine.connect() as conn:
        raw: Any = conn.connection.driver_connection
        claim = Claim(ClaimSql(journal.engine.dialect), "w1", limits, journal.lease_seconds)
        taken = claim(raw.cursor())
        yield taken
        raw.commit()


def _outgoing(journal: Journal) -> Counter[str]:
    return Counter(m.src for m in journal.list(states=[State.NEW]))


def test_claimer_processes_never_exceed_a_hosts_limit(
    pg_url: str, pg: Journal, tmp_path: Path
) -> None:
    queue = Queue(pg)
    for i in range(36):
        _submit(queue, f"vm{i}", f"test:///s{i % 3}", f"test:///d{i}")
    go = tmp_path / "go"
    cmd = [sys.executable, "-m", "tests.journal.claimer", pg_url]
    procs = [
        subprocess.Popen([*cmd, f"w{k}", "2", str(go)], stdout=subprocess.PIPE, text=True)
        for k in range(4)
    ]
    go.touch()
    taken = [int(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert max(_outgoing(pg).values()) <= 2, _outgoing(pg)
    while queue.claim("w-last", HostLimits(max_outgoing=2)) is not None:
        taken.append(1)
    assert _outgoing(pg) == {f"test:///s{i}": 2 for i in range(3)}
    assert sum(taken) == 6


def test_a_claim_never_overtakes_an_uncommitted_claim_of_the_same_host(pg: Journal) -> None:
    """Read committed, a second claimer cannot see the first one's uncommitted claim: the
    host's lock, held to the first one's commit, is what keeps it from counting too few."""
    queue = Queue(pg)
    first = _submit(queue, "vm1", "test:///a", "test:///x")
    _submit(queue, "vm2", "test:///a", "test:///y")
    with _claim_held_open(pg, ONE_OUT) as taken:
        assert taken is not None and taken.id == first.id
        assert queue.claim("w2", ONE_OUT) is None
    assert queue.claim("w2", ONE_OUT) is None  # committed: host a is full
    assert _outgoing(pg) == {"test:///a": 1}
    assert [m.owner for m in pg.list(states=[State.NEW])] == ["w1"]


@pytest.mark.parametrize("limits", [ONE_OUT, UNLIMITED], ids=["limited", "unlimited"])
def test_a_claim_held_open_does_not_block_claims_of_other_hosts(
    pg_url: str, pg: Journal, limits: HostLimits
) -> None:
    """The second claim would wait for a lock at most its lease (``lock_timeout``), then
    fail: it takes the other host's migration instead, while the first is still open."""
    queue = Queue(pg)
    first = _submit(queue, "vm1", "test:///a", "test:///x")
    other = _submit(queue, "vm2", "test:///b", "test:///y")
    with Journal.open(pg_url, lease_seconds=1) as impatient, _claim_held_open(pg, limits) as held:
        assert held is not None and held.id == first.id
        taken = Queue(impatient).claim("w2", limits)
        assert taken is not None and taken.id == other.id
    assert {m.id: m.owner for m in pg.list(states=[State.NEW])} == {first.id: "w1", other.id: "w2"}


def test_a_claim_skips_a_row_another_transaction_holds(pg_url: str, pg: Journal) -> None:
    queue = Queue(pg)
    held = _submit(queue, "vm1", "test:///a", "test:///x")
    free = _submit(queue, "vm2", "test:///b", "test:///y")
    with Journal.open(pg_url, lease_seconds=1) as impatient, pg.engine.connect() as conn:
        conn.execute(sa.text("SELECT 1 FROM migrations WHERE id = :id FOR UPDATE"), {"id": held.id})
        taken = Queue(impatient).claim("w2", UNLIMITED)
        assert taken is not None and taken.id == free.id


# -- the claim on the journal's write path -------------------------------------------------


@pytest.fixture
def proxy(pg_url: str) -> Iterator[Proxy]:
    url = sa.make_url(pg_url)
    made = Proxy((url.host or "127.0.0.1", url.port or 5432))
    yield made
    made.close()


@pytest.fixture
def proxied(pg_url: str, pg: Journal, proxy: Proxy) -> Iterator[Journal]:
    """A journal whose every connection goes through ``proxy``."""
    url = sa.make_url(pg_url).set(host="127.0.0.1", port=proxy.port)
    journal = Journal.open(url.render_as_string(hide_password=False))
    yield journal
    journal.close()


def test_queue_writes_go_on_after_the_database_restarts(proxied: Journal, proxy: Proxy) -> None:
    queue = Queue(proxied)
    queue.register("w1", concurrency=1)
    proxy.restart(1.0)
    m = _submit(queue, "vm1", "test:///a", "test:///b")
    proxy.restart(1.0)
    claimed = queue.claim("w1", ONE_OUT)
    proxy.restart(1.0)
    queue.beat("w1", stopping=True)
    assert proxy.cuts >= 3
    assert claimed is not None and claimed.id == m.id
    assert proxied.get(m.id) == claimed
    assert [w.stopping for w in queue.workers()] == [True]


def test_a_claim_whose_commit_went_unanswered_is_read_back_not_repeated(
    proxied: Journal, proxy: Proxy
) -> None:
    """The server committed the claim, the worker never heard: it must not claim again."""
    queue = Queue(proxied)
    first = _submit(queue, "vm1", "test:///a", "test:///b")
    _submit(queue, "vm2", "test:///c", "test:///d")
    cuts = proxy.cuts
    proxy.cut_at(b"COMMIT", forward=True)
    claimed = queue.claim("w1", UNLIMITED)
    assert proxy.cuts == cuts + 1
    assert claimed is not None and claimed.id == first.id
    assert [m.id for m in proxied.list(states=[State.NEW])] == [first.id]
    assert [e.kind for e in proxied.history(first.id)] == [EventKind.QUEUE]
