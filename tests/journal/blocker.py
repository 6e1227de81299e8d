"""Holds a table of a real PostgreSQL journal locked, so that whoever touches it waits, and
ends those waiting backends as an operator would: ``pg_terminate_backend`` (the connection
dies: SQLSTATE 57P01, which the journal retries) or ``pg_cancel_backend`` (the statement is
cancelled: SQLSTATE 57014, which it does not).

Each waiter is a backend waiting on the table's lock, seen in ``pg_locks``: a retry shows up
as a new waiter after the first one was ended.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

WAIT = 30.0
"""Seconds to wait for a waiter before the test fails (a guard against hanging)."""


class Blocker:
    """``LOCK TABLE table IN ACCESS EXCLUSIVE MODE`` until ``release()``."""

    def __init__(self, url: str, table: str) -> None:
        self.engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        self.table = table
        self.conn = self.engine.connect()
        self.conn.exec_driver_sql(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        self.ended: list[int] = []

    def waiters(self) -> list[int]:
        with self.engine.connect() as conn:
            query = "SELECT pid FROM pg_locks WHERE relation = to_regclass(%(t)s) AND NOT granted"
            return [int(pid) for (pid,) in conn.exec_driver_sql(query, {"t": self.table})]

    def next_waiter(self, done: Callable[[], bool] = lambda: False) -> int | None:
        """The first waiter not ended yet, once there is one; None if ``done()`` first."""
        deadline = time.monotonic() + WAIT
        while not done():
            fresh = [pid for pid in self.waiters() if pid not in self.ended]
            if fresh:
                return fresh[0]
            assert time.monotonic() < deadline, f"nothing waits on {self.table}"
            time.sleep(0.01)
        return None

    def end(self, pid: int, how: str) -> None:
        """``how``: "terminate" or "cancel" the backend ``pid``."""
        with self.engine.connect() as conn:
            ended = conn.exec_driver_sql(f"SELECT pg_{how}_backend(%(p)s)", {"p": pid}).scalar()
        assert ended, f"could not {how} backend {pid}"
        self.ended.append(pid)

    def release(self) -> None:
        if not self.conn.closed:
            self.conn.rollback()
            self.conn.close()
        self.engine.dispose()


class Call:
    """``fn()`` on a thread of its own; its result or its error once ``done``."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.result = fn()
        except BaseException as exc:  # noqa: BLE001 -- handed to the test as it is
            self.error = exc

    def done(self) -> bool:
        return not self.thread.is_alive()

    def join(self) -> Any:
        self.thread.join(WAIT)
        assert self.done(), "the call did not end"
        return self.result
