"""A Core statement compiled once for a dialect and run on a DBAPI cursor.

The journal commits two statements per step; SQLAlchemy's per-execution machinery (cache
key, execution context, result wrapping) costs more than SQLite's commit itself, so the
write path keeps Core statements but runs them on the driver's cursor. Bind processors
(UTC timestamps, JSON) are the dialect's own, taken from the compiled statement.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa


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

    def execute(self, cursor: Any, values: dict[str, Any] | None = None) -> Any:
        cursor.execute(self.sql, self.params(values or {}))
        return cursor

    def execute_many(self, cursor: Any, values: Sequence[dict[str, Any]]) -> Any:
        cursor.executemany(self.sql, [self.params(v) for v in values])
        return cursor
