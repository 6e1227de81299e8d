"""The one JSON form of a migration and an event: ``show --json``, export, hook payloads.

Cookies are base64; driver text is kept as data (JSON escapes it).
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from migrator.flags import flag_names
from migrator.records import Event, Migration


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def b64(value: bytes | None) -> str | None:
    return None if value is None else base64.b64encode(value).decode("ascii")


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
    error = None
    if e.error_type is not None or e.error_message is not None:
        error = {"type": e.error_type, "message": e.error_message}
    return {
        "seq": e.seq,
        "step": e.step.value if e.step else None,
        "kind": e.kind,
        "state": e.state.value,
        "at": iso(e.at),
        "cancelled": e.cancelled,
        "cookie_in": b64(e.cookie_in),
        "cookie_out": b64(e.cookie_out),
        "uri": e.uri,
        "description": e.description,
        "error": error,
        "detail": e.detail,
        "coordinator": e.coordinator,
        "attempt": e.attempt,
        "duration": e.duration,
    }
