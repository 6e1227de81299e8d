"""Fixtures of the HTTP API's tests: the application on a fresh journal (SQLite and
PostgreSQL), tokens, a worker thread that drives what the API queues, and a dump of every
table to prove a refused request changed nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from migrator.journal.store import Journal
from migrator.journal.tokens import Scope, Tokens
from migrator.service.app import create_app
from migrator.states import TERMINAL
from migrator.workers import Worker
from tests.conftest import Hosts

WAIT = 30.0


@dataclass
class Api:
    client: TestClient
    journal: Journal
    read: str
    operate: str

    def headers(self, scope: str = "operate") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.read if scope == 'read' else self.operate}"}

    def request_for(self, hosts: Hosts, domain: str = "vm1") -> dict[str, object]:
        return {"domain": domain, "src": hosts.src_uri, "dst": hosts.dst_uri, "live": True}

    def wait_for_end(self, migration_id: str) -> dict[str, object]:
        deadline = time.monotonic() + WAIT
        while True:
            got = self.client.get(f"/v1/migrations/{migration_id}", headers=self.headers("read"))
            assert got.status_code == 200, got.text
            if got.json()["state"] in {s.value for s in TERMINAL}:
                return dict(got.json())
            assert time.monotonic() < deadline, got.json()
            time.sleep(0.05)


@pytest.fixture
def api(db_url: str) -> Iterator[Api]:
    """The API on a fresh journal holding a read and an operate token."""
    with Journal.open(db_url) as journal:
        tokens = Tokens(journal)
        _r, read = tokens.create(Scope.READ, name="reader")
        _o, operate = tokens.create(Scope.OPERATE, name="operator")
        with TestClient(create_app(journal, poll=0.05)) as client:
            yield Api(client, journal, read, operate)


@pytest.fixture
def worker(api: Api) -> Iterator[Worker]:
    """A worker in this process that drives what the API queues."""
    running = Worker(api.journal, poll=0.05).start()
    yield running
    running.stop()
    assert running.join(WAIT)


def dump(journal: Journal) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table of the journal, sorted: equal dumps, nothing changed."""
    from migrator.journal.schema import metadata

    with journal.engine.connect() as conn:
        return {
            name: sorted(tuple(map(repr, row)) for row in conn.execute(sa.select(table)))
            for name, table in metadata.tables.items()
        }
