"""Webhook signatures: ``Migrator-Signature: t=<unix time>,v1=<hex HMAC-SHA256>``.

The HMAC is over ``f"{t}.{body}"`` with the endpoint's secret, as Stripe signs its
webhooks: a receiver recomputes it and compares in constant time, and refuses a ``t``
too far from its clock, so that a captured request cannot be replayed later
(docs/webhooks.md).
"""

from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "Migrator-Signature"
TOLERANCE = 300.0
"""Seconds a receiver accepts between ``t`` and its own clock (``verify``'s default)."""


def digest(secret: bytes, t: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``f"{t}.{body}"`` under ``secret``."""
    return hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: bytes, body: bytes, *, t: int | None = None) -> str:
    """The signature header's value for ``body`` sent at ``t`` (now, if None)."""
    t = int(time.time()) if t is None else t
    return f"t={t},v1={digest(secret, t, body)}"


def verify(
    secret: bytes,
    body: bytes,
    header: str,
    *,
    tolerance: float = TOLERANCE,
    now: float | None = None,
) -> bool:
    """Whether ``header`` signs ``body`` with ``secret``, at a time within ``tolerance``
    seconds of ``now``: what a receiver does (any ``v1`` of the header may match)."""
    fields = [part.partition("=") for part in header.split(",")]
    stamps = [value for key, _, value in fields if key.strip() == "t"]
    if len(stamps) != 1 or not stamps[0].isdigit():
        return False
    t = int(stamps[0])
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    expected = digest(secret, t, body)
    return any(
        key.strip() == "v1" and hmac.compare_digest(value.strip(), expected)
        for key, _, value in fields
    )
