"""Who may drive a migration: whether its owner provably died, or its lease lapsed
(docs/journal.md, "Ownership: leases, heartbeats and fences").

An owner's id is ``HOSTNAME:PID:RANDOM:PLACE``, where ``PLACE`` names the PID namespace the
process runs in (the boot's id and the namespace's inode): a PID means the same process
only to a process of the same namespace on the same boot. Two containers of one machine
share its host name but not their PID namespace, so an owner is judged dead by its PID
only from the namespace it ran in; from anywhere else (or for an id without ``PLACE``,
written by an older version), by its lease alone. ``by_lease_only`` judges by the lease
everywhere (``recover --by-lease-only``, ``worker --by-lease-only``).
"""

from __future__ import annotations

import functools
import os
import socket
import uuid
from datetime import UTC, datetime

from migrator.engine.flows.base import RECOVERABLE
from migrator.records import Migration

BOOT_ID = "/proc/sys/kernel/random/boot_id"
PID_NAMESPACE = "/proc/self/ns/pid"


@functools.cache
def place() -> str:
    """This process's PID namespace on this boot, as ``BOOT8-INODE``; ``unknown`` where
    /proc does not tell (then no owner is ever judged dead by its PID)."""
    try:
        with open(BOOT_ID, encoding="ascii") as f:
            boot = f.read(64).strip().replace("-", "")[:8]
        inode = os.stat(PID_NAMESPACE).st_ino
    except (OSError, UnicodeDecodeError):
        return "unknown"
    return f"{boot}-{inode}" if boot.isalnum() else "unknown"


def new_owner_id() -> str:
    """An id for a coordinator or worker of this process: ``HOSTNAME:PID:RANDOM:PLACE``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}:{place()}"


def owner_is_dead(
    owner: str | None, *, hostname: str | None = None, by_lease_only: bool = False
) -> bool:
    """True only when the owner provably died: it ran on this host, in this PID namespace
    on this boot, and its process is gone. Never with ``by_lease_only``."""
    if not owner:
        return True
    host, pid_text, _random, where = [*owner.split(":", 3), "", "", ""][:4]
    if by_lease_only or host != (hostname or socket.gethostname()) or not pid_text.isdigit():
        return False
    if where != place() or where == "unknown":
        return False  # another container, another boot, or an older id: the lease tells
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def claimable(
    migration: Migration,
    *,
    steal: bool = False,
    now: datetime | None = None,
    by_lease_only: bool = False,
) -> str | None:
    """Why ``migration`` may be claimed now ("lease lapsed", ...), or None if it may not."""
    if migration.state not in RECOVERABLE:
        return None
    return left_behind(migration, steal=steal, now=now, by_lease_only=by_lease_only)


def left_behind(
    migration: Migration,
    *,
    steal: bool = False,
    now: datetime | None = None,
    by_lease_only: bool = False,
) -> str | None:
    """Why ``migration``'s owner counts as gone ("lease lapsed", ...), whatever its state,
    or None if it may still be at work."""
    if steal:
        return "stolen (--steal)"
    if owner_is_dead(migration.owner, by_lease_only=by_lease_only):
        return "owner process is gone"
    expires = migration.lease_expires_at
    if expires is None or expires <= (now or datetime.now(UTC)):
        return "lease lapsed"
    return None
