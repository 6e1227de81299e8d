"""Fixtures: a fresh journal per test on SQLite and on the real PostgreSQL server, and
real test hosts in temporary directories.

PostgreSQL tests use ``MIGRATOR_TEST_PG_URL`` (default: the local ``test`` database) and a
fresh schema per test, dropped afterwards, so runs never see each other's rows. They skip
when the server is unreachable, unless ``MIGRATOR_REQUIRE_PG=1`` makes that a failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from migrator.drivers.test import TestDriver
from migrator.journal.store import Journal
from migrator.records import Entry

PG_URL = os.environ.get("MIGRATOR_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("MIGRATOR_REQUIRE_PG") == "1"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def pg_engine() -> Iterator[sa.Engine]:
    engine = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:  # noqa: BLE001 -- any failure means "no server here"
        engine.dispose()
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL required (MIGRATOR_REQUIRE_PG=1) but unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable at {PG_URL}: {exc}")
    yield engine
    engine.dispose()


def _schema_url(base: str, schema: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options={quote(f'-csearch_path={schema}')}"


@pytest.fixture
def pg_url(pg_engine: sa.Engine) -> Iterator[str]:
    """A URL whose search_path is a fresh, empty schema (no migrator tables yet)."""
    schema = f"mt_{uuid.uuid4().hex[:16]}"
    with pg_engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    yield _schema_url(PG_URL, schema)
    with pg_engine.connect() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A journal URL with an up-to-date schema, on SQLite and on PostgreSQL.

    Afterwards every migration the test left in it is replayed: today's engine must make
    the same decisions the journal recorded (``migrator replay`` says "consistent").
    """
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'journal.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    Journal.open(url, upgrade=True).close()
    yield url
    if request.node.get_closest_marker("no_replay") is None:
        assert_replays_consistently(url)


def assert_replays_consistently(url: str) -> None:
    from migrator.replay import replay

    with Journal.open(url) as journal:
        for migration in journal.list():
            result = replay(journal, migration.id)
            assert result.consistent, result.as_dict()


@pytest.fixture
def journal(db_url: str) -> Iterator[Journal]:
    j = Journal.open(db_url)
    yield j
    j.close()


@dataclass
class Hosts:
    src: TestDriver
    dst: TestDriver

    @property
    def src_uri(self) -> str:
        return self.src.uri

    @property
    def dst_uri(self) -> str:
        return self.dst.uri

    def states(self, domain: str) -> tuple[str, str]:
        return state_of(self.src, domain), state_of(self.dst, domain)


def host_files(host_dir: Path) -> bytes | None:
    """A test host's whole state, byte for byte: ``host.json`` and every domain's file
    (``DIR/domains/``), each with its name; None if the host has none yet."""
    paths = [host_dir / "host.json", *sorted((host_dir / "domains").glob("*.json"))]
    found = [p for p in paths if p.exists()]
    if not found:
        return None
    return b"".join(p.name.encode() + b"\n" + p.read_bytes() + b"\n" for p in found)


def state_of(host: TestDriver, domain: str) -> str:
    for d in host.domains():
        if d["name"] == domain:
            return str(d["state"])
    return "absent"


@pytest.fixture
def hosts(tmp_path: Path) -> Hosts:
    """Two test hosts; ``vm1`` (4 MiB) runs on the source."""
    src = TestDriver(f"test://{tmp_path / 'host-a'}")
    dst = TestDriver(f"test://{tmp_path / 'host-b'}")
    src.define("vm1", memory_mib=4)
    return Hosts(src, dst)


def run_cli(
    *args: str,
    db: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    real_process: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``migrator ARGS`` in a new process, as a user would.

    The process is forked from a server that imported migrator once (see
    ``tests/crash/forkserver.py``): its own pid, environment, working directory and
    journal connections, without paying ~0.5 s of interpreter start-up per command.
    ``real_process`` (implied by a ``PYTHONPATH`` in ``env``, which only a new interpreter
    reads) or ``MIGRATOR_TEST_REAL_PROCESS=1`` runs ``python -m migrator`` instead.
    """
    full_env = {**os.environ, **(env or {})}
    full_env.pop(
        "MIGRATOR_FAILPOINTS", None
    ) if env is None or "MIGRATOR_FAILPOINTS" not in env else None
    if db is not None:
        full_env["MIGRATOR_DB"] = db
    real_process = real_process or "PYTHONPATH" in (env or {})
    if not real_process and os.environ.get("MIGRATOR_TEST_REAL_PROCESS") != "1":
        from tests.crash.forkserver import SERVER

        return SERVER.run(list(args), env=full_env, cwd=ROOT, timeout=timeout)
    return subprocess.run(
        [sys.executable, "-m", "migrator", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


def readable_events(journal: Journal) -> list[Entry]:
    """Every event of the journal by position, once all are readable: on PostgreSQL a
    transaction still open anywhere on the server holds readers back for a while
    (docs/journal.md, "Positions")."""
    import time

    expected = sum(m.last_seq for m in journal.list())
    deadline = time.monotonic() + 60
    while len(found := journal.events_after(None, limit=100_000)) < expected:
        assert time.monotonic() < deadline, f"{len(found)} of {expected} events readable"
        time.sleep(0.05)
    return found
