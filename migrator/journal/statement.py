"""A Core statement compiled once for a dialect and run on a DBAPI cursor.

The journal commits two statements per step; SQLAlchemy's per-execution machinery (cache
key, execution context, result wrapping) costs more than SQLite's commit itself, so the
write path keeps Core statements but runs them on the driver's cursor. Bind processors
(UTC timestamps, JSON) are the dialect's own, taken from the compiled statement.

On SQLite a value that is None is written into the SQL as ``NULL`` rather than bound, and
bytes are bound as they are rather than in the ``memoryview`` SQLAlchemy's binary type
wraps them in: ``sqlite3`` looks for an adapter for every bound value that is not exactly
an int, float, str or bytes, and that search (a failed attribute look-up on a type, with
its error message) costs more than the rest of binding a journal event, most of whose
columns are NULL. The few shapes each statement takes (which of its values are None) are
compiled once each, and ``sqlite3`` caches each as it caches any statement.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from functools import partial
from itertools import compress, count, repeat
from operator import is_, is_not, itemgetter
from typing import Any

import sqlalchemy as sa

MAX_SHAPES = 32
"""Statements with NULLs written in, at most, per statement; past it Nones are bound."""
_given = partial(is_not, None)


class Statement:
    """``stmt`` compiled for ``dialect``; ``execute(cursor, values)`` binds and runs it.

    ``expand=True`` renders IN lists into the SQL (``IN (?, ?)``), for statements whose
    values are all in the statement itself and that are compiled for one use.
    """

    def __init__(self, stmt: sa.ClauseElement, dialect: sa.Dialect, *, expand: bool = False):
        kwargs = {"render_postcompile": True} if expand else {}
        compiled: Any = stmt.compile(dialect=dialect, compile_kwargs=kwargs)  # an SQLCompiler
        self.sql: str = compiled.string
        self.positional: list[str] | None = compiled.positiontup
        self.processors: dict[str, Callable[[Any], Any]] = {}
        for name, bind in compiled.binds.items():
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if dialect.name == "sqlite" and isinstance(bind.type, sa.LargeBinary):
                processor = None  # bytes as they are: sqlite3 adapts a memoryview per value
            if processor is not None and bind.expanding:
                raise TypeError(f"{name}: an IN list of values that need a bind processor")
            if processor is not None:
                self.processors[name] = processor
        self.defaults: dict[str, Any] = (
            compiled.construct_params()
            if expand
            else {n: b.value for n, b in compiled.binds.items() if b.value is not None}
        )
        # For positional dialects: (name, processor or None, default) in parameter order.
        self.slots = [
            (name, self.processors.get(name), self.defaults.get(name))
            for name in (self.positional or [])
        ]
        # SQLite (``?`` parameters): the SQL around each parameter, to write NULLs in.
        pieces = self.sql.split("?")
        self._pieces: list[str] | None = (
            pieces if dialect.paramstyle == "qmark" and len(pieces) == len(self.slots) + 1 else None
        )
        self._shapes: dict[tuple[int, ...], str] = {}
        # ``_bound``'s values in C loops: each name's value (or None), then the processors
        # where there are any; statements with defaults bind them one by one (``_listed``).
        self._names = [name for name, _, _ in self.slots]
        self._processed = [(k, proc) for k, (_, proc, _) in enumerate(self.slots) if proc]
        self._plain = not any(default is not None for _, _, default in self.slots)

    def params(self, values: dict[str, Any]) -> Sequence[Any] | dict[str, Any]:
        if self.positional is None:
            merged = {**self.defaults, **values}
            for name, process in self.processors.items():
                v = merged.get(name)
                if v is not None:
                    merged[name] = process(v)
            return merged
        return self._listed(values)

    def _listed(self, values: dict[str, Any]) -> list[Any]:
        out = []
        for name, proc, default in self.slots:
            v = values.get(name, default)
            out.append(v if proc is None or v is None else proc(v))
        return out

    def execute(self, cursor: Any, values: dict[str, Any] | None = None) -> Any:
        if self._pieces is None:
            cursor.execute(self.sql, self.params(values or {}))
        else:
            cursor.execute(*self._bound(values or {}))
        return cursor

    def execute_many(self, cursor: Any, values: Sequence[dict[str, Any]]) -> Any:
        if self._pieces is None:
            cursor.executemany(self.sql, [self.params(v) for v in values])
            return cursor
        # Consecutive rows of the same shape run as one ``executemany``, in their order.
        for sql, rows in itertools.groupby(map(self._bound, values), key=itemgetter(0)):
            cursor.executemany(sql, [params for _, params in rows])
        return cursor

    def _bound(self, values: dict[str, Any]) -> tuple[str, list[Any]]:
        """The SQL with a ``NULL`` for each value that is None, and the other values."""
        if not self._plain:
            return self._bound_one_by_one(values)
        every = list(map(values.get, self._names))
        for k, proc in self._processed:
            v = every[k]
            if v is not None:
                every[k] = proc(v)
        shape = tuple(compress(count(), map(is_, every, repeat(None))))
        if not shape:
            return self.sql, every
        return self._with_shape(shape, values, list(filter(_given, every)))

    def _bound_one_by_one(self, values: dict[str, Any]) -> tuple[str, list[Any]]:
        out = []
        nulls = []
        for k, (name, proc, default) in enumerate(self.slots):
            v = values.get(name, default)
            if v is None:
                nulls.append(k)
            else:
                out.append(v if proc is None else proc(v))
        if not nulls:
            return self.sql, out
        return self._with_shape(tuple(nulls), values, out)

    def _with_shape(
        self, shape: tuple[int, ...], values: dict[str, Any], out: list[Any]
    ) -> tuple[str, list[Any]]:
        """The SQL of ``shape`` (the indexes of the NULLs) and ``out``, the other values;
        past ``MAX_SHAPES`` the plain SQL with every value bound."""
        sql = self._shapes.get(shape)
        if sql is None:
            if len(self._shapes) >= MAX_SHAPES:
                return self.sql, self._listed(values)
            sql = self._shapes[shape] = self._with_nulls(shape)
        return sql, out

    def _with_nulls(self, shape: tuple[int, ...]) -> str:
        assert self._pieces is not None
        sql = self._pieces[0]
        for k, piece in enumerate(self._pieces[1:]):
            sql += ("NULL" if k in shape else "?") + piece
        return sql
