"""Row ↔ record mapping: the only code that knows both a table's columns and a record's fields.

Records leave the journal as frozen dataclasses (``docs/journal.md``), never as rows.
"""

from __future__ import annotations

import dataclasses
import operator
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from migrator.jsonform import event_form
from migrator.records import Event, EventDraft, EventKind, Migration
from migrator.states import STATE_OF, State, Step

if TYPE_CHECKING:
    import sqlalchemy as sa

    from migrator.journal.flavor import Flavor

_MIGRATION_FIELDS = tuple(f.name for f in dataclasses.fields(Migration))
_MIGRATION_VALUES = operator.attrgetter(*_MIGRATION_FIELDS)
_MIGRATION_INDEX = {name: k for k, name in enumerate(_MIGRATION_FIELDS)}
MIGRATION_COLUMNS = (
    "id, domain, dname, src, dst, protocol, flags, bandwidth, state, reason, owner,"
    " lease_expires_at, fence, last_seq, abort_requested, created_at, updated_at,"
    " finished_at, progress, trace_id"
)
"""The columns of ``migrations`` that ``migration_of`` maps, in its order."""
EVENT_COLUMNS = (
    "migration_id, seq, step, kind, state, at, cancelled, cookie_in, cookie_out, uri,"
    " description, error_type, error_message, detail, coordinator, attempt, duration"
)
"""The columns of ``migration_events`` that ``event_of`` maps, in its order."""
# Enum members by value: a dictionary look-up costs a tenth of ``State(value)`` per row.
_STATES = STATE_OF
_STEPS: dict[str, Step] = {s.value: s for s in Step}
_KINDS: dict[str, EventKind] = {k.value: k for k in EventKind}


def migration(row: sa.Row[Any]) -> Migration:
    """The record of a ``migrations`` row read through SQLAlchemy (its values already of
    their Python types; ``migration_of`` maps a driver's raw values)."""
    m = row._mapping
    values = {name: m[name] for name in _MIGRATION_FIELDS}
    values["state"] = _STATES.get(values["state"]) or State(values["state"])
    values["abort_requested"] = bool(values["abort_requested"])
    return Migration(**values)


def migration_of(v: Sequence[Any], f: Flavor) -> Migration:
    """The record of the values of ``MIGRATION_COLUMNS`` as ``f``'s driver gave them."""
    time = f.time
    return Migration(
        id=v[0],
        domain=v[1],
        dname=v[2],
        src=v[3],
        dst=v[4],
        protocol=v[5],
        flags=v[6],
        bandwidth=v[7],
        state=_STATES.get(v[8]) or State(v[8]),
        reason=v[9],
        owner=v[10],
        lease_expires_at=time(v[11]),
        fence=v[12],
        last_seq=v[13],
        abort_requested=bool(v[14]),
        created_at=time(v[15]),  # type: ignore[arg-type]  # NOT NULL
        updated_at=time(v[16]),  # type: ignore[arg-type]  # NOT NULL
        finished_at=time(v[17]),
        progress=f.json(v[18]),
        trace_id=v[19],
    )


def event_of(v: Sequence[Any], f: Flavor) -> Event:
    """The record of the values of ``EVENT_COLUMNS`` as ``f``'s driver gave them."""
    step = v[2]
    return Event(
        migration_id=v[0],
        seq=v[1],
        step=(_STEPS.get(step) or Step(step)) if step else None,
        kind=_KINDS.get(v[3]) or EventKind(v[3]),
        state=_STATES.get(v[4]) or State(v[4]),
        at=f.time(v[5]),  # type: ignore[arg-type]  # NOT NULL
        cancelled=f.boolean(v[6]),
        cookie_in=v[7],
        cookie_out=v[8],
        uri=v[9],
        description=v[10],
        error_type=v[11],
        error_message=v[12],
        detail=f.json(v[13]),
        coordinator=v[14],
        attempt=v[15],
        duration=v[16],
    )


def event_form_of(v: Sequence[Any], f: Flavor) -> dict[str, Any]:
    """The JSON form (``jsonform.event_form``) of the values of ``EVENT_COLUMNS``, made
    without the record: what ``event_dict(event_of(v, f))`` gives, for ``export --all``."""
    return event_form(
        v[1], v[2], v[3], v[4], f.iso(v[5]), f.boolean(v[6]), v[7], v[8], v[9], v[10],
        v[11], v[12], f.json(v[13]), v[14], v[15], v[16],
    )  # fmt: skip


def new_migration(
    *,
    migration_id: str,
    domain: str,
    dname: str | None,
    src: str,
    dst: str,
    protocol: int,
    flags: int,
    bandwidth: int,
    owner: str,
    now: datetime,
    lease: datetime,
    trace_id: str | None = None,
) -> dict[str, Any]:
    """The ``migrations`` row of a NEW migration with fence 1; its trace id ``trace_id``,
    or a new random one (docs/tracing.md)."""
    return {
        "id": migration_id,
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
        "lease_expires_at": lease,
        "fence": 1,
        "last_seq": 0,
        "abort_requested": False,
        "created_at": now,
        "updated_at": now,
        "finished_at": None,
        "progress": None,
        "trace_id": trace_id or secrets.token_hex(16),
    }


def migration_values(record: Migration) -> dict[str, Any]:
    """The ``migrations`` row of ``record``."""
    values = dict(zip(_MIGRATION_FIELDS, _MIGRATION_VALUES(record), strict=True))
    values["state"] = record.state.value
    return values


def event_values(
    mid: str,
    seq: int,
    d: EventDraft,
    state: State,
    now: datetime,
    coordinator: str | None,
    reason: str | None = None,
) -> dict[str, Any]:
    """The ``migration_events`` row of ``d``, journaled as event ``seq`` in ``state``, the
    migration's reason being ``reason`` (its position is the writer's: ``positions.py``)."""
    return {
        "migration_id": mid,
        "seq": seq,
        "step": str(d.step) if d.step else None,  # str(): a tenth of ``.value``'s cost
        "kind": kind_text(d.kind),
        "state": str(state),
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
        "reason": reason,
    }


def kind_text(kind: object) -> str:
    """The text the journal stores for ``kind``; ValueError if it is not an ``EventKind``
    (or its value), so that no event is written that ``history()`` could not read back.

    Plain text, not the member: sqlite3 binds a str subclass only after adapting it."""
    member = _KINDS.get(kind) if isinstance(kind, str) else None
    if member is None:
        raise ValueError(f"not an event kind: {kind!r} (one of {', '.join(_KINDS)})")
    return str(member)


def replace(record: Migration, **changes: Any) -> Migration:
    """``dataclasses.replace`` without its per-call introspection (it runs on every step):
    the fields read in one call and passed by position."""
    values = list(_MIGRATION_VALUES(record))
    for name, value in changes.items():
        values[_MIGRATION_INDEX[name]] = value
    return Migration(*values)
