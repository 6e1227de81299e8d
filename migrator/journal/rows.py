"""Row ↔ record mapping: the only code that knows both a table's columns and a record's fields.

Records leave the journal as frozen dataclasses (``docs/journal.md``), never as rows.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from migrator.records import Event, EventDraft, EventKind, Migration
from migrator.states import State, Step

_MIGRATION_FIELDS = tuple(f.name for f in dataclasses.fields(Migration))
# Enum members by value: a dictionary look-up costs a tenth of ``State(value)`` per row.
_STATES: dict[str, State] = {s.value: s for s in State}
_STEPS: dict[str, Step] = {s.value: s for s in Step}
_KINDS: dict[str, EventKind] = {k.value: k for k in EventKind}


def migration(row: sa.Row[Any]) -> Migration:
    """The record of a ``migrations`` row."""
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
        state=_STATES.get(m["state"]) or State(m["state"]),
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


def event(row: sa.Row[Any]) -> Event:
    """The record of a ``migration_events`` row."""
    m = row._mapping
    return Event(
        migration_id=m["migration_id"],
        seq=m["seq"],
        step=(_STEPS.get(m["step"]) or Step(m["step"])) if m["step"] else None,
        kind=_KINDS.get(m["kind"]) or EventKind(m["kind"]),
        state=_STATES.get(m["state"]) or State(m["state"]),
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
) -> dict[str, Any]:
    """The ``migrations`` row of a NEW migration with fence 1."""
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
    }


def migration_values(record: Migration) -> dict[str, Any]:
    """The ``migrations`` row of ``record``."""
    values = {name: getattr(record, name) for name in _MIGRATION_FIELDS}
    values["state"] = record.state.value
    return values


def event_values(
    mid: str,
    seq: int,
    d: EventDraft,
    state: State,
    now: datetime,
    coordinator: str | None,
) -> dict[str, Any]:
    """The ``migration_events`` row of ``d``, journaled as event ``seq`` in ``state``."""
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


def replace(record: Migration, **changes: Any) -> Migration:
    """``dataclasses.replace`` without its per-call introspection (it runs on every step)."""
    values = {name: getattr(record, name) for name in _MIGRATION_FIELDS}
    values.update(changes)
    return Migration(**values)
