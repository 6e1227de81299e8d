"""What a caller may pass: times, counts, names and URIs, checked at the public boundary.

The CLI's parameter types (``migrator.cli.options``) and the library's entry points call
these, so a value the journal cannot store, or a time that means nothing (zero, negative,
``nan``, ``inf``), is refused as a ``UsageError`` before anything is journaled
(``docs/errors.md``).
"""

from __future__ import annotations

import math
import re

from migrator.errors import UsageError

INT32_MAX = 2**31 - 1
"""The largest integer every journal column holds (PostgreSQL's ``integer``)."""
MAX_SECONDS = 1_000_000.0
"""The longest timeout or duration in seconds (about 11 days)."""
MAX_NAME_CHARS = 255
"""A domain name's longest length (the journal's ``String(255)``)."""
MAX_URI_CHARS = 2048
"""A host URI's longest length: longer is a mistake, and no file system takes the path."""

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", re.ASCII)
_INTEGER = re.compile(r"[+-]?\d+", re.ASCII)


def seconds(value: object, *, name: str, zero: bool = False, least: float | None = None) -> float:
    """``value`` as a number of seconds in (0, MAX_SECONDS] ([0, ...] with ``zero``,
    [least, ...] with ``least``); else a UsageError."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"{name} must be a number of seconds, not {value!r}")
    if least is not None:
        low, above_low = f"at least {least:g}", value >= least
    else:
        low = "at least 0" if zero else "more than 0"
        above_low = value >= 0 if zero else value > 0
    if not math.isfinite(value) or not above_low or value > MAX_SECONDS:
        raise UsageError(f"{name} must be {low} and at most {MAX_SECONDS:g} s, not {value!r}")
    return float(value)


def integer(value: object, *, name: str, low: int = 0, high: int = INT32_MAX) -> int:
    """``value`` as an int in [low, high]; else a UsageError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{name} must be a whole number, not {value!r}")
    if value < low:
        raise UsageError(f"{name} must be >= {low}, not {value}")
    if value > high:
        raise UsageError(f"{name} must be <= {high}, not {value}")
    return value


def text(value: object, *, name: str, max_chars: int) -> str:
    """Printable-safe text: non-empty, at most ``max_chars``, valid UTF-8, no NUL."""
    if not isinstance(value, str) or not value:
        raise UsageError(f"{name} must be non-empty text, not {value!r}")
    if len(value) > max_chars:
        raise UsageError(f"{name} is longer than {max_chars} characters")
    if "\x00" in value or not is_utf8(value):
        raise UsageError(f"{name} {value[:60]!r} is not valid UTF-8 text")
    return value


def domain_name(value: object, *, name: str = "domain name") -> str:
    return text(value, name=name, max_chars=MAX_NAME_CHARS)


def uri(value: object) -> str:
    return text(value, name="host URI", max_chars=MAX_URI_CHARS)


def is_utf8(value: str) -> bool:
    """False for text holding lone surrogates (bytes that were not UTF-8 on the command line)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_number(raw: str, *, name: str) -> float:
    """A decimal number written in ASCII digits (``1.5``, ``2e3``); else a UsageError."""
    if _NUMBER.fullmatch(raw.strip()) is None:
        raise UsageError(f"{name} {raw[:40]!r} is not a number (ASCII digits, e.g. 30 or 2.5)")
    if len(raw.strip()) > 40:
        raise UsageError(f"{name} {raw[:40]!r}... is out of range")
    return float(raw)


def parse_integer(raw: str, *, name: str) -> int:
    """A whole number written in ASCII digits; else a UsageError."""
    if _INTEGER.fullmatch(raw.strip()) is None:
        raise UsageError(f"{name} {raw[:40]!r} is not a whole number (ASCII digits)")
    if len(raw.strip()) > 30:
        raise UsageError(f"{name} {raw[:40]!r}... is out of range")
    return int(raw)
