"""The state file of a host kept in a directory: ``DIR/host.json``, as the QMP driver keeps
it; the test driver keeps a file per domain on the same footing (``test/shards.py``).

Every read-modify-write holds an exclusive ``flock`` on ``DIR/.lock`` and replaces
``host.json`` atomically (write, fsync, rename, fsync the directory), so the state outlives
every process and concurrent coordinators and CLI commands never lose each other's writes.
``once`` records a hook's result in the same write as its effect: the idempotency that
docs/drivers.md asks of every hook.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from migrator import bounded
from migrator.errors import DriverError, HostStateInvalid, StepAbandoned
from migrator.records import StepContext
from migrator.states import Step

Host = dict[str, Any]
Memo = dict[str, Any]
STATE_MAX_BYTES = 64 * 1024 * 1024
"""The largest state file a host keeps (``host.json``, a domain's file): it holds at most
a few migrations' recorded results, each with cookies of at most 4 MiB."""


def enc(data: bytes) -> str:
    """Bytes (a cookie) as JSON can hold them."""
    return base64.b64encode(data).decode("ascii")


def dec(text: str) -> bytes:
    return base64.b64decode(text)


def json_bytes(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True).encode()


def sync_dir(directory: Path) -> None:
    """Make a rename or an unlink in ``directory`` durable."""
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def load_state(path: Path, parts: tuple[str, ...]) -> Host:
    """A state file as a dict holding the maps ``parts`` (empty if the file is absent).

    Read with a bound (``migrator.bounded``): a FIFO, a device, a file over
    ``STATE_MAX_BYTES``, JSON nested too deeply or of another shape is a
    ``HostStateInvalid``; a file that cannot be read is a ``DriverError``.
    """
    try:
        data = bounded.read_json(path, max_bytes=STATE_MAX_BYTES)
    except FileNotFoundError:
        data = {}
    except bounded.FileRefused as exc:
        raise HostStateInvalid(path=str(path), reason=str(exc)) from None
    except OSError as exc:
        raise DriverError(f"{path} cannot be read: {exc.strerror}") from exc
    if not isinstance(data, dict):
        raise HostStateInvalid(path=str(path), reason="a JSON object expected")
    for part in parts:
        if not isinstance(data.setdefault(part, {}), dict):
            raise HostStateInvalid(path=str(path), reason=f"{part!r} is not a JSON object")
    domains = data.get("domains", {})
    if not isinstance(domains, dict) or not all(isinstance(d, dict) for d in domains.values()):
        raise HostStateInvalid(path=str(path), reason="'domains' is not a map of JSON objects")
    return data


def memo_key(mid: str, step: Step, cancelled: bool | None = None) -> str:
    """The key of a recorded hook result: per (migration, step[, cancelled])."""
    return f"{mid}/{step}" if cancelled is None else f"{mid}/{step}/{int(cancelled)}"


class HostState:
    """Storage of a directory-backed host; ``PARTS`` are the top-level maps it keeps."""

    PARTS: ClassVar[tuple[str, ...]] = ("domains", "calls", "fences")
    checks_fence: ClassVar[bool] = True  # every hook refuses a stale fence (``_fence``)
    dir: Path

    @property
    def _state(self) -> Path:
        return self.dir / "host.json"

    def _read(self, name: str | None = None) -> Host:
        """The host as last written, without the lock (writes are atomic replaces).

        ``name`` scopes the read to one domain and its migrations' records: a store that
        keeps them apart (the test driver's) reads only those; this one reads them all.
        """
        return load_state(self._state, self.PARTS)

    @contextmanager
    def _txn(self, name: str | None = None, *, persist: bool = False) -> Iterator[Host]:
        """Read-modify-write under the host lock; written only if the body changed it.
        ``name`` scopes it as it scopes ``_read``.

        A host whose directory does not exist yet is created by its first change (or by
        ``persist``), never by a read: a command refused for bad input leaves no host behind.
        """
        exists = self.dir.is_dir()
        with self._locked() if exists else contextlib.nullcontext():
            host = self._read()
            born = "host_id" not in host
            host.setdefault("host_id", str(uuid.uuid4()))  # a new host is born at first write
            before = json.dumps(host, sort_keys=True)
            yield host
            if json.dumps(host, sort_keys=True) != before or (persist and born):
                if not exists:
                    self._create_dir()
                self._write(host)

    def _create_dir(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DriverError(f"host directory {self.dir} cannot be used: {exc.strerror}") from exc

    @contextmanager
    def _locked(self) -> Iterator[Any]:
        """The host's lock file, opened; a directory that cannot hold it is a DriverError."""
        try:
            lock = open(self.dir / ".lock", "a")  # noqa: SIM115  # closed below
        except OSError as exc:
            raise DriverError(f"host directory {self.dir} cannot be used: {exc.strerror}") from exc
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield lock

    def _write(self, host: Host, path: Path | None = None) -> None:
        """Replace ``path`` (``host.json`` unless told) by ``host``, durably."""
        path = self._state if path is None else path
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".host-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(host, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        sync_dir(path.parent)

    def _unlink(self, path: Path) -> None:
        """Remove ``path`` durably, if it is there."""
        try:
            path.unlink()
        except FileNotFoundError:
            return
        sync_dir(path.parent)

    @property
    def host_id(self) -> str:
        """This host's identity, created with the host."""
        with self._txn(persist=True) as host:
            host_id: str = host["host_id"]
            return host_id

    @staticmethod
    def _fence(host: Host, ctx: StepContext) -> None:
        """Refuse a call with a lower fence than ``host`` has seen for the migration, or one
        its coordinator stopped waiting for (``ctx.stopped``), and record a higher fence
        (call it inside ``_txn``)."""
        if ctx.stopped():
            raise StepAbandoned(step=str(ctx.step))
        seen: int = host["fences"].get(ctx.migration_id, ctx.fence)
        if ctx.fence < seen:
            raise DriverError(
                f"stale fence {ctx.fence} for migration {ctx.migration_id}:"
                f" this host has seen {seen}"
            )
        host["fences"][ctx.migration_id] = ctx.fence

    def _once(
        self,
        key: str,
        effect: Callable[[Host], Memo],
        ctx: StepContext | None = None,
        *,
        name: str | None = None,
    ) -> Memo:
        """Apply ``effect`` and record its result in the same write, unless already done.

        With ``ctx``, the fence is checked again in that same write: a call admitted before
        its coordinator stalled must not take effect after another one took over. ``name``
        is the domain the effect acts on (the scope of the transaction).
        """
        with self._txn(name) as host:
            if ctx is not None:
                self._fence(host, ctx)
            if key not in host["calls"]:
                host["calls"][key] = effect(host)
            memo: Memo = host["calls"][key]
            return memo
