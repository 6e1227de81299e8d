"""A test host's state in shards: ``DIR/host.json`` (identity, faults) and one file per
domain name, ``DIR/domains/<name>.json``, holding that domain and the records of the
migrations that act on it there (recorded hook results, fences, v1/v2 departures).

Every hook acts on one domain of its host (the source's ``params.domain``, the
destination's ``params.dest_name``), so its transaction reads and rewrites that one small
file under the host lock: the effect and its recorded result still land in one atomic
write, and the cost of a hook grows neither with the host's other domains nor with the
migrations it has seen. ``forget`` drops an ended migration's records and keeps its id
among the last ``ENDED_KEPT`` ended there, so that a late call for it is still refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

from migrator.drivers.api import MigrationParams
from migrator.drivers.hoststate import Host, HostState, load_state
from migrator.drivers.test import checks
from migrator.errors import DriverError, HostStateInvalid
from migrator.records import StepContext

ENDED_KEPT = 8
"""How many ended migrations a domain's file remembers, to refuse their late calls."""

SHARD_PARTS = ("domains", "calls", "fences", "departed", "ended")
"""The maps of a domain's file: the parts of ``host.json`` that concern that name."""


def shard_name(name: str) -> str:
    """The file of domain ``name`` under ``DIR/domains/``: readable, safe, one per name."""
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return f"{quote(name, safe='')[:64]}.{digest}.json"


class ShardedState(HostState):
    """``HostState`` whose domain-scoped transactions (``_txn(name)``) touch one file."""

    PARTS: ClassVar[tuple[str, ...]] = ("faults",)

    def _shard(self, name: str) -> Path:
        return self.dir / "domains" / shard_name(name)

    def _load(self, path: Path, parts: tuple[str, ...]) -> Host:
        """One state file as a dict with ``parts`` (empty if the file is absent), every
        domain and fault in it of the shape this driver writes (``checks.py``)."""
        data = load_state(path, parts)
        self._check(path, data)
        return data

    @staticmethod
    def _check(path: Path, data: Host) -> None:
        problem = checks.problem(data)
        if problem is not None:
            raise HostStateInvalid(path=str(path), reason=problem)

    def _read(self, name: str | None = None) -> Host:
        """``host.json``; with ``name``, that domain's file, plus the host's ``host_id``."""
        top = load_state(self._state, self.PARTS)
        if top.get("domains"):
            raise HostStateInvalid(
                path=str(self._state), reason="it holds domains: written by an older migrator"
            )
        self._check(self._state, top)
        if name is None:
            return top
        view = self._load(self._shard(name), SHARD_PARTS)
        view["host_id"] = top.get("host_id")
        return view

    @contextmanager
    def _txn(self, name: str | None = None, *, persist: bool = False) -> Iterator[Host]:
        """``host.json`` as ``HostState`` keeps it; with ``name``, that domain's file, in
        which the body may change only the domain ``name`` and the migration records."""
        if name is None:
            with super()._txn(persist=persist) as host:
                yield host
            return
        exists = self.dir.is_dir()
        with self._locked() if exists else contextlib.nullcontext():
            top = self._read()
            born = "host_id" not in top
            top.setdefault("host_id", str(uuid.uuid4()))
            view = self._load(self._shard(name), SHARD_PARTS)
            before = json.dumps(view, sort_keys=True)
            view["host_id"] = top["host_id"]
            yield view
            del view["host_id"]
            if json.dumps(view, sort_keys=True) != before:
                self._put(name, view, top if born else None, exists=exists)

    def _put(self, name: str, view: Host, born: Host | None, *, exists: bool) -> None:
        if set(view["domains"]) - {name}:
            raise DriverError(f"a change to domain {name!r} touched another domain")
        if not exists:
            self._create_dir()
        if born is not None:  # the host is born with its first change
            self._write(born)
        path = self._shard(name)
        if not any(view[part] for part in SHARD_PARTS):
            self._unlink(path)
            return
        path.parent.mkdir(exist_ok=True)
        self._write(view, path)

    def _shards(self) -> Iterator[Host]:
        """Every domain's file (``host.json`` read first: a broken host says so)."""
        self._read()
        folder = self.dir / "domains"
        try:
            paths = sorted(folder.glob("*.json")) if folder.is_dir() else []
        except OSError as exc:
            raise DriverError(f"{folder} cannot be read: {exc.strerror}") from exc
        for path in paths:
            yield self._load(path, SHARD_PARTS)

    @staticmethod
    def _fence(host: Host, ctx: StepContext) -> None:
        """As ``HostState._fence``; a migration this host was told had ended is refused."""
        if ctx.migration_id in host["ended"]:
            raise DriverError(
                f"migration {ctx.migration_id} has ended: this host refuses its late call"
                f" (fence {ctx.fence})"
            )
        HostState._fence(host, ctx)

    def forget(self, migration_id: str, params: MigrationParams) -> None:
        """The migration ended (the journal says so): drop its records on this host.

        Its id is kept among the last ``ENDED_KEPT`` ended for that domain, so a call from
        a coordinator that lost the migration is refused rather than acted on.
        """
        for name in dict.fromkeys((params.domain, params.dest_name)):
            if self._shard(name).exists():
                with self._txn(name) as host:
                    _drop(host, migration_id)


def _drop(host: Host, mid: str) -> None:
    """Remove ``mid``'s records from a domain's file, remembering it among the ended."""
    if mid not in host["fences"]:  # every hook records its fence first: none, no records
        return
    host["fences"].pop(mid, None)
    host["departed"].pop(mid, None)
    for key in [k for k in host["calls"] if k.split("/", 1)[0] == mid]:
        del host["calls"][key]
    ended: dict[str, Any] = host["ended"]
    kept = sorted(ended, key=ended.__getitem__)[-(ENDED_KEPT - 1) :]
    host["ended"] = {m: i for i, m in enumerate([*kept, mid])}
