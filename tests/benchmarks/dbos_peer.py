"""The DBOS worker process (``dbos_worker``) seen from the benchmark: start, ask, stop."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import uuid
from pathlib import Path

from tests.benchmarks.common import PG_URL, Backend, pg_exec, plain_pg

ROOT = Path(__file__).resolve().parents[2]


def installed() -> bool:
    return importlib.util.find_spec("dbos") is not None


class DbosPeer:
    """One worker per database kind, kept for the whole run (DBOS launches once per process).

    Its system database is a SQLite file as DBOS configures it (its default, rollback
    journal, ``synchronous=FULL``), or a schema of its own in the PostgreSQL database.
    """

    def __init__(self, backend: Backend) -> None:
        self.schema = ""
        args = [sys.executable, "-m", "tests.benchmarks.dbos_worker"]
        if backend.name == "sqlite":
            args += ["--url", f"sqlite:///{backend.tmp / 'dbos.sqlite'}"]
        else:
            self.schema = f"bench_dbos_{uuid.uuid4().hex[:10]}"
            args += ["--url", plain_pg(PG_URL), "--schema", self.schema]
        self.proc = subprocess.Popen(
            args, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self._answer()

    def _answer(self) -> dict[str, float]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the DBOS worker stopped (exit {self.proc.wait()})")
        answer: dict[str, float] = json.loads(line)
        return answer

    def rate(self, threads: int, per_thread: int) -> float:
        """Workflows per second."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{threads} {per_thread}\n")
        self.proc.stdin.flush()
        return self._answer()["rate"]

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        if self.schema:
            pg_exec(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
