"""Who may drive a migration: whether its owner provably died, or its lease lapsed
(docs/journal.md, "Ownership: leases, heartbeats and fences")."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime

from migrator.engine.flows.base import RECOVERABLE
from migrator.records import Migration


def owner_is_dead(owner: str | None, *, hostname: str | None = None) -> bool:
    """True only when the owner provably died: it ran on this host and its process is gone."""
    if not owner:
        return True
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != (hostname or socket.gethostname()) or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def claimable(
    migration: Migration, *, steal: bool = False, now: datetime | None = None
) -> str | None:
    """Why ``migration`` may be claimed now ("lease lapsed", ...), or None if it may not."""
    if migration.state not in RECOVERABLE:
        return None
    return left_behind(migration, steal=steal, now=now)


def left_behind(
    migration: Migration, *, steal: bool = False, now: datetime | None = None
) -> str | None:
    """Why ``migration``'s owner counts as gone ("lease lapsed", ...), whatever its state,
    or None if it may still be at work."""
    if steal:
        return "stolen (--steal)"
    if owner_is_dead(migration.owner):
        return "owner process is gone"
    expires = migration.lease_expires_at
    if expires is None or expires <= (now or datetime.now(UTC)):
        return "lease lapsed"
    return None
