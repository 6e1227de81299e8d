"""DBOS Transact's five-step workflow, timed in a process of its own (DBOS is a singleton).

    python -m tests.benchmarks.dbos_worker --url URL [--schema NAME]

``URL`` is DBOS's system database (``sqlite:///FILE`` or ``postgresql://...``). Reads lines
``THREADS PER_THREAD`` on stdin; for each, runs ``PER_THREAD`` workflows in each of
``THREADS`` threads started together and answers one JSON line ``{"rate": workflows/s}``.
The workflow has the shape of a migration: five steps (Begin, Prepare, Perform, Finish,
Confirm), each checkpointed by DBOS before the next one runs, the output of one handed on
to the next, as the engine hands cookies on.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import uuid
from typing import Any

from dbos import DBOS, DBOSConfig

from tests.benchmarks.bench_throughput import _in_threads


@DBOS.step()
def begin(domain: str) -> str:
    return f"cookie-{domain}"


@DBOS.step()
def prepare(cookie: str) -> str:
    return cookie + "-prepared"


@DBOS.step()
def perform(cookie: str) -> str:
    return cookie + "-performed"


@DBOS.step()
def finish(cookie: str) -> bool:
    return bool(cookie)


@DBOS.step()
def confirm(running: bool) -> str:
    return "CONFIRMED" if running else "ROLLED_BACK"


@DBOS.workflow()
def migrate(domain: str) -> str:
    cookie = begin(domain)
    cookie = prepare(cookie)
    cookie = perform(cookie)
    return confirm(finish(cookie))


def _rate(threads: int, per_thread: int) -> float:
    prefix = uuid.uuid4().hex[:8]

    def work(t: int) -> None:
        for i in range(per_thread):
            if migrate(f"{prefix}-{t}-{i}") != "CONFIRMED":
                raise AssertionError("the workflow did not confirm")

    return threads * per_thread / _in_threads(threads, work)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--schema", default=None)
    args = parser.parse_args()
    config: dict[str, Any] = {
        "name": "migrator-bench",
        "system_database_url": args.url,
        "run_admin_server": False,
        "log_level": "WARNING",
        "sys_db_pool_size": 40,
    }
    if args.schema:
        config["dbos_system_schema"] = args.schema
    logging.getLogger("dbos").setLevel(logging.WARNING)
    DBOS(config=DBOSConfig(**config))  # type: ignore[typeddict-item]
    DBOS.launch()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        threads, per_thread = (int(x) for x in line.split())
        print(json.dumps({"rate": _rate(threads, per_thread)}), flush=True)
    DBOS.destroy()


if __name__ == "__main__":
    main()
