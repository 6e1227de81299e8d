"""``Journal``: the one owner of transactions on the journal database.

Every state change commits together with its event, conditional on the migration's fence
and current state (compare-and-set), so a coordinator that lost ownership, or raced
another, writes nothing. Database errors are translated here, and only here, into
``JournalUnavailable`` / ``SchemaOutOfDate``.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import fcntl
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from migrator.errors import (
    AmbiguousMigrationId,
    FenceLost,
    JournalUnavailable,
    MigrationNotFound,
    SchemaOutOfDate,
    StateConflict,
)
from migrator.journal import schema
from migrator.journal.schema import events, migrations
from migrator.records import (
    KEEP_REASON,
    Event,
    EventDraft,
    EventKind,
    Migration,
    Reason,
)
from migrator.states import TERMINAL, State, Step

DEFAULT_URL = "sqlite:///./migrator.db"
LEASE_SECONDS = 30.0
SQLITE_BUSY_TIMEOUT_MS = 10_000


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``: safe for logs, errors and the journal."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparseable URL>"


def _now() -> datetime:
    return datetime.now(UTC)


@contextlib.contextmanager
def _translated(url: str) -> Iterator[None]:
    """The one edge where database errors become journal errors."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        reason = str(exc.orig).splitlines()[0] if exc.orig is not None else str(exc)
        raise JournalUnavailable(url=url, reason=reason) from exc


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = FULL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _create_engine(url: str) -> sa.Engine:
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise JournalUnavailable(url=redact(url), reason=f"not a database URL ({exc})") from None
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    try:
        return sa.create_engine(parsed, pool_pre_ping=True)
    except (ImportError, sa.exc.NoSuchModuleError) as exc:
        raise JournalUnavailable(url=redact(url), reason=f"driver not installed ({exc})") from None


def _sqlite_file(engine: sa.Engine) -> Path | None:
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    return Path(database) if database and database != ":memory:" else None


def script_location() -> str:
    import migrations_db

    return str(Path(migrations_db.__file__).parent)


def _run_upgrade(engine: sa.Engine, revision: str = "head") -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", script_location())
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def _read_revision(conn: sa.Connection) -> str | None:
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def _migration(row: sa.Row[Any]) -> Migration:
    m = row._mapping
    return Migration(
        id=m["id"],
        domain=m["domain"],
        dname=m["dname"],
        src=m["src"],
        dst=m["dst"],
        protocol=m["protocol"],
        flags=m["flags"],
        bandwidth=m["bandwidth"],
        state=State(m["state"]),
        reason=m["reason"],
        owner=m["owner"],
        lease_expires_at=m["lease_expires_at"],
        fence=m["fence"],
        last_seq=m["last_seq"],
        abort_requested=bool(m["abort_requested"]),
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        finished_at=m["finished_at"],
        progress=m["progress"],
    )


def _event(row: sa.Row[Any]) -> Event:
    m = row._mapping
    return Event(
        migration_id=m["migration_id"],
        seq=m["seq"],
        step=Step(m["step"]) if m["step"] else None,
        kind=EventKind(m["kind"]),
        state=State(m["state"]),
        at=m["at"],
        cancelled=m["cancelled"],
        cookie_in=m["cookie_in"],
        cookie_out=m["cookie_out"],
        uri=m["uri"],
        description=m["description"],
        error_type=m["error_type"],
        error_message=m["error_message"],
        detail=m["detail"],
        coordinator=m["coordinator"],
        attempt=m["attempt"],
        duration=m["duration"],
    )


_ADVANCE = (
    migrations.update()
    .where(
        migrations.c.id == sa.bindparam("mid"),
        migrations.c.fence == sa.bindparam("expect_fence"),
        migrations.c.state == sa.bindparam("expect_state"),
    )
    .values(
        state=sa.bindparam("new_state"),
        last_seq=migrations.c.last_seq + 1,
        updated_at=sa.bindparam("now"),
        lease_expires_at=sa.bindparam("lease"),
        reason=sa.case(
            (sa.bindparam("keep_reason", type_=sa.Boolean), migrations.c.reason),
            else_=sa.bindparam("new_reason", type_=sa.Text),
        ),
        finished_at=sa.bindparam("finished"),
    )
    .returning(migrations.c.last_seq, migrations.c.abort_requested)
)


class _Compiled:
    """A Core statement compiled once for a dialect and run on the DBAPI cursor.

    The journal commits two statements per step; SQLAlchemy's per-execution machinery
    (cache key, execution context, result wrapping) costs more than SQLite's commit itself,
    so the hot path keeps the Core statement but skips that machinery. Bind processors
    (UTC timestamps, JSON) are the dialect's own, taken from the compiled statement.
    """

    def __init__(self, stmt: sa.ClauseElement, dialect: sa.Dialect) -> None:
        compiled: Any = stmt.compile(dialect=dialect)  # an SQLCompiler: binds, positiontup
        self.sql: str = compiled.string
        self.positional: list[str] | None = compiled.positiontup
        self.processors: dict[str, Callable[[Any], Any]] = {}
        self.defaults = {n: b.value for n, b in compiled.binds.items() if b.value is not None}
        for name, bind in compiled.binds.items():
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self.processors[name] = processor
        # For positional dialects: (name, processor or None, default) in parameter order.
        self.slots = [
            (name, self.processors.get(name), self.defaults.get(name))
            for name in (self.positional or [])
        ]

    def params(self, values: dict[str, Any]) -> Sequence[Any] | dict[str, Any]:
        if self.positional is None:
            procs = self.processors
            merged = {**self.defaults, **values}
            return {
                k: (procs[k](v) if v is not None and k in procs else v) for k, v in merged.items()
            }
        out = []
        for name, proc, default in self.slots:
            v = values.get(name, default)
            out.append(v if proc is None or v is None else proc(v))
        return out

    def execute(self, cursor: Any, values: dict[str, Any]) -> Any:
        cursor.execute(self.sql, self.params(values))
        return cursor


class Journal:
    """The journal of migrations. Open it with ``Journal.open(url)``."""

    def __init__(self, engine: sa.Engine, *, lease_seconds: float = LEASE_SECONDS) -> None:
        self.engine = engine
        self.url = redact(engine.url.render_as_string(hide_password=False))
        self.lease_seconds = lease_seconds
        self._writer: sa.Connection | None = None
        self._write_lock = threading.Lock()
        self._dbapi_error: type[Exception] = engine.dialect.loaded_dbapi.Error
        self._advance = _Compiled(_ADVANCE, engine.dialect)
        self._insert_event = _Compiled(events.insert(), engine.dialect)
        self._insert_migration = _Compiled(migrations.insert(), engine.dialect)

    @classmethod
    def open(
        cls, url: str = DEFAULT_URL, *, upgrade: bool | None = None, check: bool = True
    ) -> Journal:
        """Open the journal at ``url``; SQLite files are created and upgraded on first use.

        A PostgreSQL journal must be upgraded explicitly (``migrator db upgrade``, or
        ``upgrade=True``); an out-of-date schema raises ``SchemaOutOfDate``. ``check=False``
        skips the schema check (for ``db current`` and ``db upgrade``).
        """
        engine = _create_engine(url)
        journal = cls(engine)
        auto = engine.dialect.name == "sqlite" if upgrade is None else upgrade
        try:
            if check:
                journal._ensure_schema(auto_upgrade=auto)
        except BaseException:
            engine.dispose()
            raise
        return journal

    def close(self) -> None:
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        self.engine.dispose()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        """One transaction on the journal's writer connection, held across transactions.

        Keeping one connection saves a pool checkout and reset per commit, which is most
        of the engine's cost per step; the lock makes it safe for the progress thread.
        """
        with self._write_lock, _translated(self.url):
            if self._writer is None or self._writer.invalidated:
                self._writer = self.engine.connect()
            conn = self._writer
            try:
                with conn.begin():
                    yield conn
            except sa.exc.DBAPIError as exc:
                if exc.connection_invalidated or conn.invalidated:
                    self._drop_writer()
                raise
            except self._dbapi_error as exc:
                self._drop_writer()
                raise JournalUnavailable(url=self.url, reason=str(exc).splitlines()[0]) from exc

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[Any]:
        """One transaction on the writer's DBAPI connection: the hot path of ``record``.

        Begin and commit are the driver's own (SQLAlchemy's transaction bookkeeping costs
        as much as the statements); errors roll back and are translated as in ``_write``.
        """
        with self._write_lock, _translated(self.url):
            if self._writer is None or self._writer.invalidated:
                self._writer = self.engine.connect()
            dbapi: Any = self._writer.connection.dbapi_connection
            try:
                yield dbapi.cursor()
                dbapi.commit()
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    dbapi.rollback()
                if isinstance(exc, self._dbapi_error):
                    self._drop_writer()
                    raise JournalUnavailable(url=self.url, reason=str(exc).splitlines()[0]) from exc
                raise

    def _drop_writer(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.invalidate()
            self._writer = None

    def _advance_row(self, cursor: Any, values: dict[str, Any]) -> tuple[int, bool] | None:
        """The new seq, and whether an abort was requested (read for free on every step)."""
        row = self._advance.execute(cursor, values).fetchone()
        return None if row is None else (int(row[0]), bool(row[1]))

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema -------------------------------------------------------------------------

    def revision(self) -> str | None:
        """The schema revision stamped in the database (None for an empty database)."""
        with _translated(self.url), self.engine.connect() as conn:
            return _read_revision(conn)

    def upgrade(self, revision: str = "head") -> None:
        """Apply the Alembic revisions up to ``revision``; each commits with its stamp.

        A journal stamped with a revision this code does not know (a newer migrator wrote
        it) is refused, never touched.
        """
        with _translated(self.url), self._upgrade_lock():
            with self.engine.connect() as conn:
                self._refuse_newer(_read_revision(conn))
            _run_upgrade(self.engine, revision)

    def _refuse_newer(self, found: str | None) -> None:
        if found is not None and found not in schema.KNOWN_REVISIONS:
            raise SchemaOutOfDate(
                url=self.url, found=found, expected=schema.SCHEMA_HEAD, newer=True
            )

    def _ensure_schema(self, *, auto_upgrade: bool) -> None:
        found = self.revision()
        if found == schema.SCHEMA_HEAD:
            return
        self._refuse_newer(found)
        if not auto_upgrade:
            raise SchemaOutOfDate(url=self.url, found=found, expected=schema.SCHEMA_HEAD)
        self.upgrade()

    @contextlib.contextmanager
    def _upgrade_lock(self) -> Iterator[None]:
        """Serialize first-use upgrades of one SQLite file across processes.

        The lock is a sibling file, never the database itself: closing any descriptor of
        the database file would drop the POSIX locks SQLite holds on it in this process,
        and another process could then checkpoint and delete the WAL under our writes.
        """
        path = _sqlite_file(self.engine)
        if path is None:
            yield
            return
        lock = path.with_name(path.name + ".upgrade-lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -- writes -------------------------------------------------------------------------

    def create(
        self,
        *,
        domain: str,
        src: str,
        dst: str,
        protocol: int,
        flags: int,
        bandwidth: int,
        owner: str,
        dname: str | None = None,
    ) -> Migration:
        """Record a NEW migration owned by ``owner`` with fence 1."""
        now = _now()
        values: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "domain": domain,
            "dname": dname,
            "src": src,
            "dst": dst,
            "protocol": protocol,
            "flags": int(flags),
            "bandwidth": bandwidth,
            "state": State.NEW.value,
            "reason": None,
            "owner": owner,
            "lease_expires_at": now + timedelta(seconds=self.lease_seconds),
            "fence": 1,
            "last_seq": 0,
            "abort_requested": False,
            "created_at": now,
            "updated_at": now,
            "finished_at": None,
            "progress": None,
        }
        with self._cursor() as cursor:
            self._insert_migration.execute(cursor, values)
        return Migration(**{**values, "state": State.NEW})

    def record(
        self,
        migration: Migration,
        draft: EventDraft,
        *,
        state: State,
        coordinator: str | None = None,
        reason: Reason = KEEP_REASON,
    ) -> Migration:
        """Append ``draft`` and move the migration to ``state``, in one transaction.

        ``reason`` replaces the migration's reason (None clears it); ``KEEP_REASON`` keeps it.

        Conditional on the migration still being in ``migration.state`` with
        ``migration.fence``; otherwise nothing is written and ``FenceLost`` (another
        coordinator took it) or ``StateConflict`` (its state moved) is raised.
        """
        now = _now()
        finished = now if state in TERMINAL else None
        with self._cursor() as cursor:
            advanced = self._advance_row(
                cursor,
                {
                    "mid": migration.id,
                    "expect_fence": migration.fence,
                    "expect_state": migration.state.value,
                    "new_state": state.value,
                    "now": now,
                    "lease": now + timedelta(seconds=self.lease_seconds),
                    "keep_reason": reason is KEEP_REASON,
                    "new_reason": None if reason is KEEP_REASON else reason,
                    "finished": finished,
                },
            )
            if advanced is not None:
                seq, aborted = advanced
                row = self._event_row(migration.id, seq, draft, state, now, coordinator)
                self._insert_event.execute(cursor, row)
        if advanced is None:
            raise self._refused(migration, state)
        return _replace(
            migration,
            state=state,
            last_seq=seq,
            updated_at=now,
            reason=migration.reason if reason is KEEP_REASON else reason,
            finished_at=finished,
            abort_requested=aborted,
        )

    def set_progress(self, migration: Migration, progress: dict[str, Any]) -> None:
        """Keep the last progress sample of a long step (not an event: it is overwritten)."""
        stmt = (
            migrations.update()
            .where(migrations.c.id == migration.id, migrations.c.fence == migration.fence)
            .values(
                progress=progress,
                lease_expires_at=_now() + timedelta(seconds=self.lease_seconds),
            )
        )
        with self._write() as conn:
            conn.execute(stmt)

    def heartbeat(self, migration: Migration) -> None:
        """Extend the lease while a step runs; raise FenceLost if another owner took over."""
        stmt = (
            migrations.update()
            .where(migrations.c.id == migration.id, migrations.c.fence == migration.fence)
            .values(lease_expires_at=_now() + timedelta(seconds=self.lease_seconds))
        )
        with self._write() as conn:
            if conn.execute(stmt).rowcount == 0:
                raise FenceLost(migration_id=migration.id, fence=migration.fence)

    def claim(self, migration: Migration, owner: str) -> Migration:
        """Take ownership: a new owner, a fresh lease and a higher fence, or FenceLost.

        Conditional on the fence the caller read, so of two coordinators claiming the same
        migration exactly one wins; the loser's later writes (old fence) are refused.
        """
        now = _now()
        lease = now + timedelta(seconds=self.lease_seconds)
        stmt = (
            migrations.update()
            .where(migrations.c.id == migration.id, migrations.c.fence == migration.fence)
            .values(owner=owner, fence=migrations.c.fence + 1, lease_expires_at=lease)
        )
        with self._write() as conn:
            if conn.execute(stmt).rowcount == 0:
                raise FenceLost(migration_id=migration.id, fence=migration.fence)
        return _replace(migration, owner=owner, fence=migration.fence + 1, lease_expires_at=lease)

    def request_abort(self, migration_id: str, *, states: Iterable[State]) -> bool:
        """Persist an abort request if the migration is still in one of ``states``."""
        stmt = (
            migrations.update()
            .where(
                migrations.c.id == migration_id,
                migrations.c.state.in_([s.value for s in states]),
            )
            .values(abort_requested=True)
        )
        with self._write() as conn:
            return bool(conn.execute(stmt).rowcount)

    def abort_requested(self, migration_id: str) -> bool:
        query = sa.select(migrations.c.abort_requested).where(migrations.c.id == migration_id)
        with _translated(self.url), self.engine.connect() as conn:
            return bool(conn.execute(query).scalar())

    @staticmethod
    def _event_row(
        mid: str,
        seq: int,
        d: EventDraft,
        state: State,
        now: datetime,
        coordinator: str | None,
    ) -> dict[str, Any]:
        return {
            "migration_id": mid,
            "seq": seq,
            "step": d.step.value if d.step else None,
            "kind": d.kind,
            "state": state.value,
            "at": now,
            "cancelled": d.cancelled,
            "cookie_in": d.cookie_in,
            "cookie_out": d.cookie_out,
            "uri": d.uri,
            "description": d.description,
            "error_type": d.error_type,
            "error_message": d.error_message,
            "detail": d.detail,
            "coordinator": coordinator,
            "attempt": d.attempt,
            "duration": d.duration,
        }

    def _refused(self, migration: Migration, state: State) -> Exception:
        query = sa.select(migrations.c.fence, migrations.c.state).where(
            migrations.c.id == migration.id
        )
        with _translated(self.url), self.engine.connect() as conn:
            row = conn.execute(query).one_or_none()
        if row is None:
            return MigrationNotFound(migration_id=migration.id)
        if row.fence != migration.fence:
            return FenceLost(migration_id=migration.id, fence=migration.fence)
        return StateConflict(
            migration_id=migration.id, expected=migration.state, found=row.state, wanted=state
        )

    # -- reads --------------------------------------------------------------------------

    def get(self, migration_id: str) -> Migration:
        with _translated(self.url), self.engine.connect() as conn:
            row = conn.execute(
                sa.select(migrations).where(migrations.c.id == migration_id)
            ).one_or_none()
        if row is None:
            raise MigrationNotFound(migration_id=migration_id)
        return _migration(row)

    def find(self, prefix: str) -> Migration:
        """The one migration whose id starts with ``prefix``."""
        cleaned = prefix.strip().lower()
        if not cleaned or any(c not in "0123456789abcdef-" for c in cleaned):
            raise MigrationNotFound(migration_id=prefix)
        query = sa.select(migrations).where(migrations.c.id.startswith(cleaned)).limit(2)
        with _translated(self.url), self.engine.connect() as conn:
            rows = conn.execute(query).all()
        if not rows:
            raise MigrationNotFound(migration_id=prefix)
        if len(rows) > 1:
            raise AmbiguousMigrationId(prefix=prefix, count=self._count_prefix(cleaned))
        return _migration(rows[0])

    def _count_prefix(self, prefix: str) -> int:
        query = (
            sa.select(sa.func.count())
            .select_from(migrations)
            .where(migrations.c.id.startswith(prefix))
        )
        with _translated(self.url), self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def list(
        self,
        *,
        states: Iterable[State] = (),
        since: datetime | None = None,
        until: datetime | None = None,
        domain: str | None = None,
        host: str | None = None,
        limit: int | None = None,
    ) -> builtins.list[Migration]:
        """Migrations, newest first; ``host`` matches the source or the destination URI."""
        query = sa.select(migrations).order_by(migrations.c.created_at.desc(), migrations.c.id)
        query = query.where(*_filters(states, since, until, domain, host))
        if limit is not None:
            query = query.limit(limit)
        with _translated(self.url), self.engine.connect() as conn:
            return [_migration(row) for row in conn.execute(query)]

    def step_durations(self, *, since: datetime | None = None) -> builtins.list[StepDuration]:
        """The duration of every step outcome (``ok`` or ``error``) of the migrations
        created at or after ``since``."""
        query = (
            sa.select(events.c.step, events.c.kind, events.c.duration)
            .join(migrations, migrations.c.id == events.c.migration_id)
            .where(
                events.c.kind.in_((EventKind.OK, EventKind.ERROR)),
                events.c.step.is_not(None),
                events.c.duration.is_not(None),
                *_filters((), since, None, None, None),
            )
        )
        with _translated(self.url), self.engine.connect() as conn:
            return [StepDuration(r.step, r.kind, float(r.duration)) for r in conn.execute(query)]

    def duration_buckets(
        self, buckets: Sequence[float]
    ) -> dict[tuple[str, str], tuple[builtins.list[int], float, int]]:
        """Per (step, kind) of step outcomes: how many took at most each bucket's seconds,
        their total seconds and their count, counted by the database (for a histogram)."""
        d = events.c.duration
        columns = [sa.func.sum(sa.case((d <= b, 1), else_=0)) for b in buckets]
        query = (
            sa.select(events.c.step, events.c.kind, sa.func.sum(d), sa.func.count(), *columns)
            .where(
                events.c.kind.in_((EventKind.OK, EventKind.ERROR)),
                events.c.step.is_not(None),
                d.is_not(None),
            )
            .group_by(events.c.step, events.c.kind)
        )
        with _translated(self.url), self.engine.connect() as conn:
            return {
                (r[0], r[1]): ([int(n or 0) for n in r[4:]], float(r[2] or 0.0), int(r[3]))
                for r in conn.execute(query)
            }

    def count_by(
        self, column: str, *, states: Iterable[State] = (), since: datetime | None = None
    ) -> builtins.list[tuple[Any, int]]:
        """``(value, count)`` of the migrations grouped by ``column``, most frequent first."""
        key = migrations.c[column]
        count = sa.func.count().label("n")
        query = (
            sa.select(key, count)
            .where(*_filters(states, since, None, None, None))
            .group_by(key)
            .order_by(count.desc(), key)
        )
        with _translated(self.url), self.engine.connect() as conn:
            return [(row[0], int(row[1])) for row in conn.execute(query)]

    def prune(
        self,
        *,
        finished_before: datetime,
        states: Iterable[State] = (),
        dry_run: bool = False,
    ) -> builtins.list[Migration]:
        """Delete terminal migrations finished before ``finished_before``, with their events.

        Only ``TERMINAL`` states are ever deleted, whatever ``states`` asks for: the
        condition is part of the DELETE itself, so a migration that a coordinator is
        driving cannot be removed by a race. Returns what was (or would be) deleted.
        """
        wanted = [s for s in states if s in TERMINAL] if states else sorted(TERMINAL)
        where = (
            migrations.c.state.in_([s.value for s in wanted]),
            migrations.c.finished_at.is_not(None),
            migrations.c.finished_at < finished_before,
        )
        query = sa.select(migrations).where(*where).order_by(migrations.c.created_at)
        if dry_run:
            with _translated(self.url), self.engine.connect() as conn:
                return [_migration(row) for row in conn.execute(query)]
        with self._write() as conn:
            doomed = [_migration(row) for row in conn.execute(query)]
            ids = [m.id for m in doomed]
            for chunk in _chunks(ids, 500):
                still = sa.select(migrations.c.id).where(migrations.c.id.in_(chunk), *where)
                conn.execute(events.delete().where(events.c.migration_id.in_(still)))
                conn.execute(migrations.delete().where(migrations.c.id.in_(chunk), *where))
        return doomed

    def history(self, migration_id: str) -> builtins.list[Event]:
        """Every event of a migration, oldest first."""
        query = (
            sa.select(events).where(events.c.migration_id == migration_id).order_by(events.c.seq)
        )
        with _translated(self.url), self.engine.connect() as conn:
            return [_event(row) for row in conn.execute(query)]


@dataclasses.dataclass(frozen=True, slots=True)
class StepDuration:
    """How long one step's driver hook took, and whether it succeeded."""

    step: str
    kind: str
    duration: float


def _filters(
    states: Iterable[State],
    since: datetime | None,
    until: datetime | None,
    domain: str | None,
    host: str | None,
) -> builtins.list[sa.ColumnElement[bool]]:
    c = migrations.c
    wanted = [s.value for s in states]
    where: builtins.list[sa.ColumnElement[bool]] = []
    if wanted:
        where.append(c.state.in_(wanted))
    if since is not None:
        where.append(c.created_at >= since)
    if until is not None:
        where.append(c.created_at <= until)
    if domain is not None:
        where.append(sa.or_(c.domain == domain, c.dname == domain))
    if host is not None:
        where.append(
            sa.or_(c.src.contains(host, autoescape=True), c.dst.contains(host, autoescape=True))
        )
    return where


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


_MIGRATION_FIELDS = tuple(f.name for f in dataclasses.fields(Migration))


def _replace(migration: Migration, **changes: Any) -> Migration:
    """``dataclasses.replace`` without its per-call introspection (it runs on every step)."""
    values = {name: getattr(migration, name) for name in _MIGRATION_FIELDS}
    values.update(changes)
    return Migration(**values)
