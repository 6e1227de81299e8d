"""A short, synchronous QMP session with one QEMU, over its unix socket (``qemu.qmp``).

QEMU serves one QMP client at a time, so sessions are kept short: open, a few commands,
close. Each session runs its own asyncio event loop in the calling thread, so any thread
(the coordinator's hook worker, a CLI command) may open one. ``qemu.qmp`` is imported when
a session opens, never at import.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import tenacity

from migrator.errors import DriverError, QMPUnreachable

QMP_TIMEOUT = 10.0
"""Seconds to wait for a connection, a greeting or a reply."""
CONNECT_ATTEMPTS = 5
SOCKET_PATH_MAX = 100
"""A unix socket path longer than this is reached through ``/proc/self/fd`` (limit 108)."""


class Monitor:
    """A short QMP session with one QEMU, synchronous: ``with Monitor(rundir) as m: m.run(...)``.

    Each session runs its own event loop in the calling thread, so any thread may open one.
    QEMU serves one QMP client at a time: keep sessions short.
    """

    def __init__(self, rundir: Path, timeout: float = QMP_TIMEOUT) -> None:
        self.rundir = rundir
        self.timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None

    def __enter__(self) -> Monitor:
        self._loop = asyncio.new_event_loop()
        try:
            CONNECTING(self._connect)
        except Exception as exc:  # noqa: BLE001 -- any failure to connect means unreachable
            self._close()
            text = str(exc) or type(exc).__name__
            raise QMPUnreachable(f"QMP of {self.rundir.name} unreachable: {text}") from None
        return self

    def _connect(self) -> None:
        """Connect and negotiate. QEMU can write an event to a new connection before its
        greeting (an event emitted while it still tears down the previous session), which
        fails the handshake: the caller then tries again on a fresh connection."""
        from qemu.qmp import QMPClient

        self._client = QMPClient(f"migrator-{self.rundir.name}")
        with _socket_path(self.rundir / "qmp.sock") as path:
            self._wait(self._client.connect(path))

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close()

    def _wait(self, coro: Any) -> Any:
        assert self._loop is not None
        return self._loop.run_until_complete(asyncio.wait_for(coro, self.timeout))

    def _close(self) -> None:
        if self._loop is None:
            return
        if self._client is not None:
            with contextlib.suppress(Exception):  # a peer that died makes disconnect raise
                self._wait(self._client.disconnect())
        self._loop.close()
        self._loop = None

    def run(self, command: str, args: dict[str, Any] | None = None) -> Any:
        """Execute one QMP command and return its result; DriverError with QEMU's text."""
        from qemu.qmp import ExecuteError

        try:
            return self._wait(self._client.execute(command, args))
        except ExecuteError as exc:
            raise DriverError(f"QMP {command} failed: {exc}") from None
        except Exception as exc:  # noqa: BLE001 -- a dead or hung peer
            raise QMPUnreachable(f"QMP {command} to {self.rundir.name} failed: {exc!r}") from None


def _hopeless(exc: BaseException) -> bool:
    """True if trying again would not help: nothing listens (no QEMU), or it did not answer
    within the timeout (a hung QEMU: waiting again only multiplies the wait)."""
    cause = getattr(exc, "exc", None) or exc.__cause__ or exc
    return isinstance(exc, TimeoutError) or isinstance(
        cause, FileNotFoundError | ConnectionRefusedError | TimeoutError
    )


CONNECTING = tenacity.Retrying(
    retry=tenacity.retry_if_exception(lambda e: isinstance(e, Exception) and not _hopeless(e)),
    stop=tenacity.stop_after_attempt(CONNECT_ATTEMPTS),
    wait=tenacity.wait_incrementing(start=0.01, increment=0.01),
    reraise=True,
)
"""How a session connects: again on a fresh connection after a failed handshake, pausing
10 ms more each time, ``CONNECT_ATTEMPTS`` times at most; never when it is hopeless."""


@contextlib.contextmanager
def _socket_path(path: Path) -> Iterator[str]:
    """A path by which to connect to ``path``, short enough for a unix socket address."""
    if len(str(path)) < SOCKET_PATH_MAX:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)
