"""Webhooks: the journal's committed events POSTed to configured URLs, signed, in order,
at least once (docs/webhooks.md).

``Webhooks`` delivers (``deliverer.py``), ``load`` reads the endpoints of a configuration
file (``config.py``), ``verify`` checks a signature as a receiver does (``signing.py``).
"""

from __future__ import annotations

from migrator.webhooks.config import Endpoint, load
from migrator.webhooks.deliverer import DeliveryFailed, Webhooks
from migrator.webhooks.signing import HEADER, sign, verify

__all__ = ["HEADER", "DeliveryFailed", "Endpoint", "Webhooks", "load", "sign", "verify"]
