"""Runtime requests and convergence policies in the journal (docs/convergence.md).

Any process may journal a request for a migration in Perform, or in post-copy for a
``speed`` (``add``, ``ACCEPTED``): the insert is
conditional on the migration's state in the same statement, so a request is never written
for a migration that finished meanwhile. Whoever drives the migration reads the pending
ones (``pending``) and stamps each once applied (``settle``); when the migration ends,
those still pending are stamped with why they never were (``settle_all``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from migrator.errors import UsageError
from migrator.journal.schema import migrations, policies, requests
from migrator.journal.statement import Statement
from migrator.journal.store import Journal
from migrator.journal.writes import now
from migrator.records import Request, RequestKind
from migrator.states import POSTCOPY_STATES, State

_R = requests.c
IN_PERFORM: frozenset[State] = frozenset({State.PERFORMING})
"""Perform of protocol v3 is running, not switched to post-copy."""
ACCEPTED: dict[RequestKind, frozenset[State]] = {
    RequestKind.DOWNTIME: IN_PERFORM,
    RequestKind.SPEED: IN_PERFORM | POSTCOPY_STATES,
    RequestKind.POSTCOPY: IN_PERFORM,
}
"""The states each kind of request is accepted in: a ``speed`` after the switch to
post-copy too (the post-copy bandwidth, applied by whoever carries post-copy on); a
downtime means nothing once the destination runs the guest, and a switch happens once."""


class _Sql:
    def __init__(self, dialect: sa.Dialect, states: Iterable[State]) -> None:
        source = sa.select(
            sa.bindparam("mid", type_=_R.migration_id.type),
            sa.bindparam("kind", type_=_R.kind.type),
            sa.bindparam("value", type_=_R.value.type),
            sa.bindparam("at", type_=_R.requested_at.type),
        ).where(
            migrations.c.id == sa.bindparam("mid"),
            # the states are the enum's own constants, written into the SQL
            migrations.c.state.in_([sa.literal_column(f"'{s.value}'") for s in sorted(states)]),
        )
        insert = requests.insert().from_select(
            ["migration_id", "kind", "value", "requested_at"], source
        )
        self.add = Statement(insert, dialect)
        self.settle = Statement(
            requests.update()
            .where(_R.id == sa.bindparam("rid"), _R.applied_at.is_(None))
            .values(applied_at=sa.bindparam("at"), outcome=sa.bindparam("outcome")),
            dialect,
        )
        self.settle_all = Statement(
            requests.update()
            .where(_R.migration_id == sa.bindparam("mid"), _R.applied_at.is_(None))
            .values(applied_at=sa.bindparam("at"), outcome=sa.bindparam("outcome")),
            dialect,
        )
        self.policy = Statement(policies.insert(), dialect)
        self.forget_policy = Statement(
            policies.delete().where(policies.c.migration_id == sa.bindparam("mid")), dialect
        )


class Requests:
    """The runtime requests and policies of one journal."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.engine = journal.engine
        self.url = journal.url

    @functools.cached_property
    def _sql(self) -> _Sql:
        return _Sql(self.engine.dialect, IN_PERFORM)

    @functools.cached_property
    def _add(self) -> dict[RequestKind, Statement]:
        dialect = self.engine.dialect
        return {kind: _Sql(dialect, states).add for kind, states in ACCEPTED.items()}

    def add(self, migration_id: str, kind: RequestKind, value: int | None = None) -> Request:
        """Journal a request for a migration in a state that accepts it (``ACCEPTED``); a
        UsageError (one line) if the migration is not there, is unknown, or the id names
        no migration."""
        values = {"mid": migration_id, "kind": str(kind), "value": value, "at": now()}
        added = self.journal.write(
            lambda cursor: int(self._add[kind].execute(cursor, values).rowcount)
        )
        if not added:
            migration = self.journal.get(migration_id)  # MigrationNotFound if unknown
            raise UsageError(refusal(migration.id, migration.state, kind))
        return next(r for r in reversed(self.journal.requests(migration_id)) if r.kind is kind)

    def settle(self, request_id: int, outcome: str) -> bool:
        """Stamp a request applied (or refused) with ``outcome``; False if it already was."""
        values = {"rid": request_id, "at": now(), "outcome": outcome}
        return bool(
            self.journal.write(lambda cursor: self._sql.settle.execute(cursor, values).rowcount)
        )

    def settle_all(self, migration_id: str, outcome: str) -> int:
        """Stamp every request of the migration still pending with ``outcome``."""
        values = {"mid": migration_id, "at": now(), "outcome": outcome}
        return int(
            self.journal.write(lambda cursor: self._sql.settle_all.execute(cursor, values).rowcount)
        )

    # -- policies --------------------------------------------------------------------------

    def set_policy(self, migration_id: str, policy: dict[str, Any]) -> None:
        """Journal a migration's policy (its dict form), replacing one written before."""

        def write(cursor: Any) -> None:
            self._sql.forget_policy.execute(cursor, {"mid": migration_id})
            self._sql.policy.execute(cursor, {"migration_id": migration_id, "policy": policy})

        self.journal.write(write)


def refusal(migration_id: str, state: State, kind: RequestKind) -> str:
    """Why a request of ``kind`` is not accepted for a migration in ``state``."""
    if state in POSTCOPY_STATES and kind is RequestKind.POSTCOPY:
        return f"migration {migration_id} is {state}: it switched to post-copy already"
    if state in POSTCOPY_STATES:
        return (
            f"migration {migration_id} is {state}: it switched to post-copy, where the"
            f" destination runs the guest and a {kind} means nothing; set-speed still applies"
        )
    return (
        f"migration {migration_id} is {state}, not in Perform:"
        f" a {kind} request applies only while Perform (protocol v3) runs"
    )
