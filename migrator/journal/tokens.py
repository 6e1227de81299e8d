"""The HTTP API's tables: bearer tokens (stored as SHA-256, never themselves) and the
``Idempotency-Key``s of queued migrations (revision 0006, ``docs/api.md``).

A token is ``mgr_<id>_<secret>``: 32 random bytes, so one SHA-256 of it is as hard to
reverse as the secret is to guess, and looking it up by its hash needs no salt. Writes go
through the journal's write path (``Journal.write``); reads on a connection of their own.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from migrator.journal.lifecycle import translated
from migrator.journal.schema import api_idempotency, api_tokens
from migrator.journal.statement import Statement
from migrator.journal.store import Journal
from migrator.journal.writes import now

_T = api_tokens.c
_I = api_idempotency.c
PREFIX = "mgr_"
STALE_RESERVATION = timedelta(seconds=60)
"""A key reserved this long ago whose migration is not journaled: its request died."""


class Scope(enum.StrEnum):
    """What a token may do: ``read`` GETs and the stream, ``operate`` everything."""

    READ = "read"
    OPERATE = "operate"


@dataclass(frozen=True, slots=True)
class Token:
    id: str
    scope: Scope
    name: str | None
    created_at: datetime


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


class _Sql:
    def __init__(self, dialect: sa.Dialect) -> None:
        self.add_token = Statement(api_tokens.insert(), dialect)
        self.revoke = Statement(api_tokens.delete().where(_T.id == sa.bindparam("tid")), dialect)
        self.reserve = Statement(
            sa.text(
                "INSERT INTO api_idempotency (key, migration_id, request_hash, created_at)"
                " VALUES (:key, :mid, :hash, :at) ON CONFLICT (key) DO NOTHING"
            ).bindparams(sa.bindparam("at", type_=api_idempotency.c.created_at.type)),
            dialect,
        )
        self.free = Statement(api_idempotency.delete().where(_I.key == sa.bindparam("k")), dialect)


@dataclass(frozen=True, slots=True)
class Reserved:
    """An idempotency key as the journal holds it: the request's hash, the id of the
    migration its request queues (chosen before it is queued), when it was reserved, and
    whether this call reserved it."""

    request_hash: str
    migration_id: str
    reserved_at: datetime
    mine: bool

    def stale(self) -> bool:
        """Reserved so long ago that its request must have died, if its migration is not
        journaled: a retry queues it, with the same id."""
        return now() - self.reserved_at > STALE_RESERVATION


class Tokens:
    """The tokens and idempotency keys of one journal."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    @functools.cached_property
    def _sql(self) -> _Sql:
        return _Sql(self.journal.engine.dialect)

    def create(self, scope: Scope, *, name: str | None = None) -> tuple[Token, str]:
        """A new token of ``scope``: its record and the token itself, shown once."""
        token_id = secrets.token_hex(6)
        text = f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        made = Token(token_id, scope, name, now())
        row: dict[str, Any] = {
            "id": token_id,
            "hash": digest(text),
            "scope": scope.value,
            "name": name,
        }
        row["created_at"] = made.created_at
        add = self._sql.add_token
        self.journal.write(lambda cursor: add.execute(cursor, row))
        return made, text

    def revoke(self, token_id: str) -> bool:
        """Delete the token ``token_id``: requests carrying it are refused from now on.
        False if there is no such token."""
        revoke = self._sql.revoke
        gone = self.journal.write(
            lambda cursor: int(revoke.execute(cursor, {"tid": token_id}).rowcount)
        )
        return gone > 0

    def any(self) -> bool:
        """Whether any token exists (then every request must carry one)."""
        return bool(self._one(sa.select(sa.func.count()).select_from(api_tokens)))

    def scope_of(self, text: str) -> Scope | None:
        """The scope of the token ``text``, or None if it is no token of this journal."""
        found = self._one(sa.select(_T.scope).where(_T.hash == digest(text)))
        return None if found is None else Scope(found)

    def list(self) -> list[Token]:
        query = sa.select(_T.id, _T.scope, _T.name, _T.created_at).order_by(_T.created_at)
        with translated(self.journal.url), self.journal.engine.connect() as conn:
            rows = list(conn.execute(query))
        return [Token(r.id, Scope(r.scope), r.name, r.created_at) for r in rows]

    # -- idempotency keys -----------------------------------------------------------------

    def reserve(self, key: str, request_hash: str, migration_id: str) -> Reserved:
        """Take ``key`` for a request with ``request_hash`` that will queue ``migration_id``
        (``mine``), or say which request has it."""
        insert = self._sql.reserve
        at = now()
        values: dict[str, Any] = {"key": key, "mid": migration_id, "hash": request_hash, "at": at}
        if self.journal.write(lambda cursor: int(insert.execute(cursor, values).rowcount)) == 1:
            return Reserved(request_hash, migration_id, at, True)
        query = sa.select(_I.request_hash, _I.migration_id, _I.created_at).where(_I.key == key)
        with translated(self.journal.url), self.journal.engine.connect() as conn:
            row = conn.execute(query).one_or_none()
        if row is None:  # freed in between: try again
            return self.reserve(key, request_hash, migration_id)
        return Reserved(row.request_hash, row.migration_id, row.created_at, False)

    def free(self, key: str) -> None:
        """Forget ``key``: its request queued nothing (it was refused), so a corrected
        request may use it."""
        free = self._sql.free
        self.journal.write(lambda cursor: free.execute(cursor, {"k": key}))

    def _one(self, query: sa.Select[Any]) -> Any:
        with translated(self.journal.url), self.journal.engine.connect() as conn:
            return conn.execute(query).scalar_one_or_none()
