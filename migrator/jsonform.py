"""The one JSON form of a migration and an event: ``show --json``, export, hook payloads.

Cookies are base64; driver text is kept as data (JSON escapes it).
"""

from __future__ import annotations

from base64 import b64encode
from datetime import datetime
from typing import Any

from migrator.flags import flag_names
from migrator.records import Event, Migration


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def b64(value: bytes | None) -> str | None:
    return None if value is None else b64encode(value).decode("ascii")


def migration_dict(m: Migration) -> dict[str, Any]:
    """The summary of one migration (what ``list --json`` gives)."""
    end = m.finished_at or m.updated_at
    return {
        "id": m.id,
        "domain": m.domain,
        "dname": m.dname,
        "src": m.src,
        "dst": m.dst,
        "protocol": m.protocol,
        "flags": m.flags,
        "flag_names": flag_names(m.flags),
        "bandwidth": m.bandwidth,
        "state": m.state.value,
        "reason": m.reason,
        "owner": m.owner,
        "fence": m.fence,
        "created_at": iso(m.created_at),
        "updated_at": iso(m.updated_at),
        "finished_at": iso(m.finished_at),
        "duration": (end - m.created_at).total_seconds(),
        "progress": m.progress,
    }


def event_dict(e: Event) -> dict[str, Any]:
    return event_form(
        e.seq,
        e.step.value if e.step else None,
        e.kind,
        e.state.value,
        iso(e.at),
        e.cancelled,
        e.cookie_in,
        e.cookie_out,
        e.uri,
        e.description,
        e.error_type,
        e.error_message,
        e.detail,
        e.coordinator,
        e.attempt,
        e.duration,
    )


def event_form(
    seq: int,
    step: str | None,
    kind: str,
    state: str,
    at: str | None,
    cancelled: bool | None,
    cookie_in: bytes | None,
    cookie_out: bytes | None,
    uri: str | None,
    description: str | None,
    error_type: str | None,
    error_message: str | None,
    detail: dict[str, Any] | None,
    coordinator: str | None,
    attempt: int,
    duration: float | None,
) -> dict[str, Any]:
    """The JSON form of an event from its values, times already ISO text: of a record
    (``event_dict``), or of a journal row when only its JSON is wanted (``export --all``)."""
    error = None
    if error_type is not None or error_message is not None:
        error = {"type": error_type, "message": error_message}
    return {
        "seq": seq,
        "step": step,
        "kind": kind,
        "state": state,
        "at": at,
        "cancelled": cancelled,
        "cookie_in": None if cookie_in is None else b64encode(cookie_in).decode("ascii"),
        "cookie_out": None if cookie_out is None else b64encode(cookie_out).decode("ascii"),
        "uri": uri,
        "description": description,
        "error": error,
        "detail": detail,
        "coordinator": coordinator,
        "attempt": attempt,
        "duration": duration,
    }
