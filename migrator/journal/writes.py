"""The journal's write path: every statement that changes it, in one transaction manager.

Every write is committed by the ``Committer`` (``committer.py``): on DBAPI connections
held across transactions (a pool checkout and reset per commit would cost more than the
commit), with the driver's own commit and rollback, database errors translated into
``JournalUnavailable``, and on SQLite group commit: concurrent writes share one durable
commit, each returning only once its own commit is durable. A state change commits
together with its event, conditional on the migration's fence and current state
(compare-and-set), so a coordinator that lost ownership, or raced another, writes nothing
(``docs/journal.md``).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa

from migrator.errors import (
    AbortRequested,
    FenceLost,
    JournalUnavailable,
    MigrationNotFound,
    StateConflict,
)
from migrator.journal import positions, queries, resilience, rows
from migrator.journal import write_sql as sql
from migrator.journal.committer import Committer
from migrator.journal.lifecycle import translated
from migrator.journal.schema import events, migrations
from migrator.journal.statement import Statement
from migrator.records import KEEP_REASON, Change, Migration
from migrator.states import TERMINAL, State

_C = migrations.c
PRUNE_CHUNK = 500
T = TypeVar("T")


def now() -> datetime:
    return datetime.now(UTC)


def _reasons(reason: str | None, changes: Sequence[Change]) -> list[str | None]:
    """The migration's reason as of each change (``KEEP_REASON`` keeps the one before)."""
    out = []
    for change in changes:
        if change.reason is not KEEP_REASON:
            reason = change.reason
        out.append(reason)
    return out


class Writer:
    """Every write of a journal, each committed through its ``Committer``."""

    def __init__(self, engine: sa.Engine, url: str, *, lease_seconds: float) -> None:
        self.engine = engine
        self.url = url
        self.lease_seconds = lease_seconds
        self._lease_length = timedelta(seconds=lease_seconds)
        self.pin = resilience.Pin(engine, url)
        self.committer = Committer(engine, url, self.pin)
        dialect = engine.dialect
        self._advance = Statement(sql.ADVANCE, dialect)
        self._insert_event = Statement(positions.INSERT_SQLITE, dialect)
        self._insert_migration = Statement(migrations.insert(), dialect)
        self._heartbeat = Statement(sql.HEARTBEAT, dialect)
        self._progress = Statement(sql.PROGRESS, dialect)
        self._claim = Statement(sql.CLAIM, dialect)
        self._one_statement = dialect.name == "postgresql"
        self._appends: dict[tuple[int, bool], Statement] = {}
        self._claims: dict[int, Statement] = {}

    def transaction(self) -> contextlib.AbstractContextManager[Any]:
        """One transaction of its own (``Committer.transaction``); yields a cursor."""
        return self.committer.transaction()

    def run(
        self,
        work: Callable[[Any], T],
        *,
        verify: Callable[[sa.Connection], T | None] | None = None,
        single: bool = False,
    ) -> T:
        """``work(cursor)`` in one transaction, retried while its error is transient.

        A commit whose outcome is unknown (the connection broke during it) is never
        blindly repeated when ``verify`` is given: ``verify`` reads back whether it
        happened (its result, or None for "not written"). Without ``verify`` the write
        must be idempotent. The retries follow ``resilience.retrying``.
        """
        unknown = False  # a commit broke: whether it happened is read back before writing

        def attempt() -> T:
            nonlocal unknown
            if unknown and (found := self._read_back(verify)) is not None:
                return found
            unknown = False
            try:
                return self.committer.run(work, single=single)
            except JournalUnavailable as exc:
                if not exc.outcome_unknown or verify is None:
                    raise
                unknown = True  # the read back may fail too: the next attempt reads back
                if (found := self._read_back(verify)) is not None:
                    return found
                unknown = False
                raise

        return resilience.retried(attempt, self.engine)

    def _read_back(self, verify: Callable[[sa.Connection], T | None] | None) -> T | None:
        assert verify is not None
        with translated(self.url), self.engine.connect() as conn:
            return verify(conn)

    def close(self) -> None:
        self.committer.close()

    def _lease(self, at: datetime) -> datetime:
        return at + self._lease_length

    # -- migrations ----------------------------------------------------------------------

    def new(self, **fields: Any) -> Migration:
        """A NEW migration's record with fence 1, not yet written (``fields`` as
        ``rows.new_migration``): ``create`` writes it alone, ``record(insert=True)`` with
        its first events."""
        at = now()
        values = rows.new_migration(
            migration_id=str(uuid.uuid4()), now=at, lease=self._lease(at), **fields
        )
        return Migration(**{**values, "state": State.NEW})

    def create(self, migration: Migration) -> Migration:
        """Write the record ``new`` gave."""
        values = rows.migration_values(migration)

        def verify(conn: sa.Connection) -> bool | None:
            return queries.exists(conn, migration.id) or None

        self.run(lambda cursor: self._insert_migration.execute(cursor, values), verify=verify)
        return migration

    def record(
        self,
        migration: Migration,
        changes: Sequence[Change],
        *,
        coordinator: str | None,
        insert: bool = False,
        each: bool = True,
        unless_aborted: bool = False,
    ) -> list[Migration]:
        """Append each change's event and move to the last one's state, in one transaction,
        or refuse (see ``Journal.record_changes``); the migration as of each event (as of
        the last only, unless ``each``). ``insert``: ``migration`` is ``new``'s record,
        written in the same transaction. ``unless_aborted``: also refused, with
        ``AbortRequested``, if an abort is requested by then."""
        at = now()
        final = changes[-1].state
        finished = at if final in TERMINAL else None
        reasons = _reasons(migration.reason, changes)
        kept = all(c.reason is KEEP_REASON for c in changes)
        n = len(changes)

        values = {
            "mid": migration.id,
            "expect_fence": migration.fence,
            "expect_state": str(migration.state),  # str(): a tenth of ``.value``'s cost
            "new_state": str(final),
            "n": n,
            "now": at,
            "lease": self._lease(at),
            "keep_reason": kept,
            "new_reason": None if kept else reasons[-1],
            "finished": finished,
            "unless_aborted": unless_aborted,
        }

        row = None
        if insert:  # the new row as it will be after the changes
            row = rows.migration_values(migration)
            row.update(
                state=str(final),
                last_seq=n,
                updated_at=at,
                lease_expires_at=values["lease"],
                reason=reasons[-1],
                finished_at=finished,
            )

        def advance_and_append(cursor: Any) -> tuple[int, bool] | None:
            if row is not None:
                values.update((f"row_{name}", value) for name, value in row.items())
            for k, c in enumerate(changes):
                event = rows.event_values(
                    migration.id, 0, c.draft, c.state, at, coordinator, reasons[k]
                )
                values.update(zip(sql.appended_as(k), sql.APPENDED_VALUES(event), strict=True))
            found = self._append(n, insert=insert).execute(cursor, values).fetchall()
            if not found:
                return None
            return max(int(r[0]) for r in found), bool(found[0][1])

        def advance(cursor: Any) -> tuple[int, bool] | None:
            if row is not None:
                self._insert_migration.execute(cursor, row)
                seq, aborted = n, bool(row["abort_requested"])
            else:
                found = self._advance.execute(cursor, values).fetchone()
                if found is None:
                    return None
                seq, aborted = int(found[0]), bool(found[1])
            first = seq - n + 1
            appended = [
                rows.event_values(
                    migration.id, first + k, c.draft, c.state, at, coordinator, reasons[k]
                )
                for k, c in enumerate(changes)
            ]
            if n == 1:
                self._insert_event.execute(cursor, appended[0])
            else:
                self._insert_event.execute_many(cursor, appended)
            return seq, aborted

        def verify(conn: sa.Connection) -> tuple[int, bool] | None:
            seq = migration.last_seq + n
            kind = changes[-1].draft.kind
            return queries.advanced(conn, migration.id, seq, final, kind, coordinator)

        if self._one_statement:
            done = self.run(advance_and_append, verify=verify, single=True)
        else:
            done = self.run(advance, verify=verify)
        if done is None:
            raise self._refused(migration, changes[0].state, unless_aborted=unless_aborted)
        seq, aborted = done
        first = seq - n + 1
        shown = enumerate(changes) if each else [(n - 1, changes[-1])]
        return [
            rows.replace(
                migration,
                state=c.state,
                last_seq=first + k,
                updated_at=at,
                reason=reasons[k],
                finished_at=at if c.state in TERMINAL else None,
                abort_requested=aborted,
            )
            for k, c in shown
        ]

    def _claim_all(self, n: int) -> Statement:
        """``sql.CLAIM`` for ``n`` migrations at once, compiled once for each ``n``."""
        statement = self._claims.get(n)
        if statement is None:
            ids = [sa.bindparam(f"claim_id_{k}", type_=_C.id.type) for k in range(n)]
            pairs = [
                sa.tuple_(ids[k], sa.bindparam(f"claim_fence_{k}", type_=sa.Integer))
                for k in range(n)
            ]
            stmt = (
                migrations.update()
                .where(  # the ids alone first: SQLite serves them from the primary key
                    _C.id.in_(ids), sa.tuple_(_C.id, _C.fence).in_(pairs)
                )
                .values(
                    owner=sa.bindparam("owner"),
                    fence=_C.fence + 1,
                    lease_expires_at=sa.bindparam("lease"),
                )
                .returning(_C.id)
            )
            statement = self._claims[n] = Statement(stmt, self.engine.dialect)
        return statement

    def _append(self, n: int, *, insert: bool) -> Statement:
        statement = self._appends.get((n, insert))
        if statement is None:
            stmt = sql.advance_and_append(n, insert=insert)
            statement = self._appends[(n, insert)] = Statement(stmt, self.engine.dialect)
        return statement

    def _refused(self, migration: Migration, state: State, *, unless_aborted: bool) -> Exception:
        with translated(self.url), self.engine.connect() as conn:
            found = queries.fence_state_abort(conn, migration.id)
        if found is None:
            return MigrationNotFound(migration_id=migration.id)
        fence, current, aborted = found
        if fence != migration.fence:
            return FenceLost(migration_id=migration.id, fence=migration.fence)
        if unless_aborted and aborted and current == migration.state.value:
            return AbortRequested(migration_id=migration.id)  # only ever set, never cleared
        return StateConflict(
            migration_id=migration.id, expected=migration.state, found=current, wanted=state
        )

    def _owned(self, stmt: Statement, migration: Migration, **values: Any) -> int:
        """Run an update conditional on ``migration``'s fence; the rows it changed."""
        owned = {"mid": migration.id, "expect_fence": migration.fence, **values}
        return self.run(lambda cursor: int(stmt.execute(cursor, owned).rowcount))

    def set_progress(self, migration: Migration, progress: dict[str, Any]) -> None:
        lease = self._lease(now())
        if self._owned(self._progress, migration, progress=progress, lease=lease) == 0:
            raise FenceLost(migration_id=migration.id, fence=migration.fence)

    def heartbeat(self, migration: Migration) -> None:
        if self._owned(self._heartbeat, migration, lease=self._lease(now())) == 0:
            raise FenceLost(migration_id=migration.id, fence=migration.fence)

    def claim(self, migration: Migration, owner: str) -> Migration:
        lease = self._lease(now())
        owned = {"mid": migration.id, "expect_fence": migration.fence, "owner": owner}

        def verify(conn: sa.Connection) -> int | None:
            found = queries.fence_and_owner(conn, migration.id)
            return 1 if found == (migration.fence + 1, owner) else None

        claimed = self.run(
            lambda cursor: int(self._claim.execute(cursor, {**owned, "lease": lease}).rowcount),
            verify=verify,
        )
        if claimed == 0:
            raise FenceLost(migration_id=migration.id, fence=migration.fence)
        return rows.replace(
            migration, owner=owner, fence=migration.fence + 1, lease_expires_at=lease
        )

    def claim_all(self, found: Sequence[Migration], owner: str) -> dict[str, Migration]:
        """``claim`` for each of ``found`` in one statement and one commit; the ones claimed,
        by id. Each is conditional on the fence it was read with, as ``claim`` is: one that
        another coordinator claimed meanwhile is left out, never taken."""
        if not found:
            return {}
        lease = self._lease(now())
        fences = {m.id: m.fence for m in found}
        statement = self._claim_all(len(fences))
        values: dict[str, Any] = {"owner": owner, "lease": lease}
        for k, (mid, fence) in enumerate(fences.items()):
            values[f"claim_id_{k}"], values[f"claim_fence_{k}"] = mid, fence

        def verify(conn: sa.Connection) -> set[str] | None:
            now_held = queries.fences_and_owners(conn, list(fences))
            won = {i for i, held in now_held.items() if held == (fences[i] + 1, owner)}
            return won or None  # none: the statement did not commit, or claimed nothing

        def claim(cursor: Any) -> set[str]:
            return {str(row[0]) for row in statement.execute(cursor, values).fetchall()}

        won = self.run(claim, verify=verify)
        return {
            m.id: rows.replace(m, owner=owner, fence=m.fence + 1, lease_expires_at=lease)
            for m in found
            if m.id in won
        }

    def request_abort(self, migration_id: str, *, states: Iterable[State]) -> bool:
        stmt = (
            migrations.update()
            .where(_C.id == migration_id, _C.state.in_([s.value for s in states]))
            .values(abort_requested=True)
        )
        statement = Statement(stmt, self.engine.dialect, expand=True)
        return self.run(lambda cursor: bool(statement.execute(cursor).rowcount))

    def delete(self, ids: Sequence[str], *, where: Sequence[sa.ColumnElement[bool]]) -> None:
        """Delete the migrations ``ids`` that still match ``where``, with their events."""
        self.run(lambda cursor: self._delete(cursor, ids, where))

    def _delete(
        self, cursor: Any, ids: Sequence[str], where: Sequence[sa.ColumnElement[bool]]
    ) -> None:
        dialect = self.engine.dialect
        for start in range(0, len(ids), PRUNE_CHUNK):
            chunk = ids[start : start + PRUNE_CHUNK]
            still = sa.select(_C.id).where(_C.id.in_(chunk), *where)
            doomed_events = events.delete().where(events.c.migration_id.in_(still))
            doomed = migrations.delete().where(_C.id.in_(chunk), *where)
            Statement(doomed_events, dialect, expand=True).execute(cursor)
            Statement(doomed, dialect, expand=True).execute(cursor)
