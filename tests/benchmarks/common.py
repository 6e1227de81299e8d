"""What the benchmarks share: where the journals live, medians, PostgreSQL schemas.

Only the public API is used (``from migrator import ...`` and the ``migrator`` command), so
the benchmarks measure what an embedder or an operator gets.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

PG_URL = os.environ.get("MIGRATOR_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
CEILING_COMMITS = 10
"""Commits per migration of the raw ceiling: one per intent and per outcome of five steps."""


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


@dataclass(frozen=True)
class Backend:
    """One database kind: ``sqlite`` (a fresh file per journal) or ``postgresql`` (a schema)."""

    name: str
    tmp: Path
    pg_schema: str = ""

    def journal_url(self, label: str) -> str:
        if self.name == "sqlite":
            return f"sqlite:///{self.tmp / f'{label}-{uuid.uuid4().hex[:8]}.db'}"
        return schema_url(PG_URL, self.pg_schema)

    def raw_target(self, label: str) -> str:
        """A sqlite file path, or a psycopg conninfo whose search_path is this schema."""
        if self.name == "sqlite":
            return str(self.tmp / f"{label}-{uuid.uuid4().hex[:8]}.db")
        return plain_pg(schema_url(PG_URL, self.pg_schema))


def schema_url(base: str, schema: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options={quote(f'-csearch_path={schema}')}"


def plain_pg(url: str) -> str:
    """A SQLAlchemy ``postgresql+psycopg://`` URL as a libpq URI."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(plain_pg(PG_URL), connect_timeout=3):
            return True
    except Exception:  # noqa: BLE001 -- any failure means: no PostgreSQL here
        return False


def pg_exec(sql: str) -> None:
    import psycopg

    with psycopg.connect(plain_pg(PG_URL), autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


@contextlib.contextmanager
def backend(name: str) -> Iterator[Backend]:
    """A temporary directory, and on PostgreSQL a fresh schema dropped afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"migrator-bench-{name}-") as tmp:
        if name == "sqlite":
            yield Backend(name, Path(tmp))
            return
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        pg_exec(f'CREATE SCHEMA "{schema}"')
        try:
            yield Backend(name, Path(tmp), schema)
        finally:
            pg_exec(f'DROP SCHEMA "{schema}" CASCADE')
