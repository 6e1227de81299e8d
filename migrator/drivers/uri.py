"""Host URIs: which driver scheme serves one, and what of it the journal may keep.

``redact_uri`` is ``migrator.redaction.redact``, the one function that hides passwords,
under the name the drivers layer uses.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

from migrator.errors import InvalidURI
from migrator.redaction import redact

LEGACY_QMP_SCHEME = "qemu"
QMP_SCHEME = "qmp"
LIBVIRT_PATHS = frozenset({"/system", "/session", "/embed"})
"""Paths of libvirt's own ``qemu:///`` URIs; any other absolute path is a QMP host."""


def redact_uri(uri: str) -> str:
    """``uri`` with any password replaced by ``***``: what the journal and logs keep.

    A driver that needs credentials should read them from its own configuration, since
    recovery reconnects to hosts from the journaled (redacted) URIs.
    """
    return redact(uri)


def is_legacy_qmp(parts: SplitResult) -> bool:
    """True for ``qemu:///ABS/DIR``, which named a QMP host before ``qemu://`` meant libvirt.

    Journals keep such hosts, and recovery, ``show`` and replay reconnect to them, so the
    QMP driver still serves them; ``qemu:///system``, ``qemu:///session`` and every URI
    with a host, query or fragment are libvirt's.
    """
    return (
        parts.scheme == LEGACY_QMP_SCHEME
        and not parts.netloc
        and parts.path.startswith("/")
        and parts.path.rstrip("/") not in LIBVIRT_PATHS
        and not parts.query
        and not parts.fragment
    )


def driver_scheme(uri: str) -> str:
    """The scheme whose driver serves ``uri``: its own, or ``qmp`` for a legacy QMP host."""
    try:
        parts = urlsplit(uri)
    except ValueError as exc:
        raise InvalidURI(uri=uri, reason=str(exc)) from None
    if not parts.scheme:
        raise InvalidURI(uri=uri, reason="no scheme (expected e.g. test:///ABS/DIR)")
    return QMP_SCHEME if is_legacy_qmp(parts) else parts.scheme
