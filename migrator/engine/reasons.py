"""What the journal keeps of a failure: driver text made storable, and the one-line reasons
a migration ends with. Shared by every protocol's driving code."""

from __future__ import annotations

from migrator.drivers.uri import redact_uri

ERROR_TEXT_MAX = 64 * 1024
REASON_MAX = 500


def storable(text: str, limit: int = ERROR_TEXT_MAX) -> str:
    """Driver text as the journal can keep it on every backend, bounded.

    PostgreSQL text cannot hold NUL and neither backend takes lone surrogates, so both are
    written as backslash escapes; everything else is kept as the driver gave it.
    """
    text = text[:limit].replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_text(exc: BaseException) -> str:
    return storable(str(exc) or type(exc).__name__)


def step_failed(step: str, exc: BaseException) -> str:
    """``"<step> failed: <first line of the error>"``, bounded."""
    first = error_text(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{step} failed: {first}"[:REASON_MAX]


def cleanup_failed(cause: str | None, dst_uri: str) -> str:
    """The reason of a rollback whose cleanup of the destination never succeeded."""
    note = (
        "destination cleanup failed; an incoming copy that never ran may remain on "
        + redact_uri(dst_uri)
    )
    return f"{cause or 'finish failed'}; {note}"[:REASON_MAX]


def with_note(cause: str | None, note: str) -> str:
    return f"{cause or 'cancelled'}; {note}"[:REASON_MAX]


def operator_disagrees(migration_id: str) -> str:
    """The reason when the destination runs the domain an operator placed on the source."""
    return (
        "resolved to the source, but the destination still reports the domain running after"
        " Finish(cancelled=1): check where it runs; if on the destination,"
        f" `migrator resolve {migration_id[:8]} --running-on dst`"
    )
