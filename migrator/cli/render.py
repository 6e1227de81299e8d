"""Rendering for people: tables and timelines, with every untrusted text made safe.

Text from drivers and cookies may hold terminal escape sequences, control characters,
invalid UTF-8 or megabytes of data. ``safe`` escapes and bounds it before it reaches
``rich``, which is given ``Text`` objects (never markup) for such data.
"""

from __future__ import annotations

import base64
import json
import sys
import unicodedata
from datetime import datetime
from typing import Any, Literal

from rich.console import Console
from rich.table import Table
from rich.text import Text

PREVIEW_MAX = 48
KIND_STYLE = {"intent": "", "ok": "", "error": "red"}
TEXT_MAX = 400

STATE_STYLE = {
    "CONFIRMED": "green",
    "ROLLED_BACK": "yellow",
    "FAILED": "red",
    "IN_DOUBT": "bold red",
}


def _escape_char(ch: str) -> str:
    if ch in "\n\t":
        return " "
    if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") or ch == "\ufffd":
        code = ord(ch)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return ch


def safe(value: object, limit: int = TEXT_MAX) -> str:
    """``value`` as one printable line of at most ``limit`` characters (plus a count)."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    cut = text[:limit]
    out = "".join(_escape_char(ch) for ch in cut)
    if len(text) > limit:
        out += f"… (+{len(text) - limit} chars)"
    return out


def preview(cookie: bytes | None) -> str:
    if cookie is None:
        return ""
    return f"{len(cookie)} B {safe(cookie, PREVIEW_MAX)}" if cookie else "0 B"


def _time(value: str | None) -> str:
    if value is None:
        return ""
    return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S")


def _state(state: str) -> Text:
    return Text(state, style=STATE_STYLE.get(state, "cyan"))


def migrations_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("ID", "DOMAIN", "SOURCE → DESTINATION", "STATE", "CREATED", "REASON"):
        table.add_column(column)
    for m in rows:
        table.add_row(
            m["id"][:8],
            Text(safe(m["domain"], 40)),
            Text(f"{safe(m['src'], 40)} → {safe(m['dst'], 40)}"),
            _state(m["state"]),
            _time(m["created_at"]),
            Text(safe(m["reason"] or "", 80)),
        )
    return table


def header(m: dict[str, Any]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    domain = safe(m["domain"]) + (f" → {safe(m['dname'])}" if m["dname"] else "")
    rows: list[tuple[str, Text | str]] = [
        ("migration", m["id"]),
        ("domain", Text(domain)),
        ("source", Text(safe(m["src"]))),
        ("destination", Text(safe(m["dst"]))),
        ("protocol", f"v{m['protocol']}"),
        ("flags", ", ".join(m["flag_names"]) or "none"),
        ("bandwidth", f"{m['bandwidth']} MiB/s" if m["bandwidth"] else "unlimited"),
        ("state", _state(m["state"])),
        ("reason", Text(safe(m["reason"] or "-"))),
        ("started", _time(m["created_at"])),
        ("took", f"{m['duration']:.3f} s"),
        ("owner", Text(safe(m["owner"] or "-")) if m["owner"] else "-"),
    ]
    for key, value in rows:
        grid.add_row(key, value)
    return grid


def _cookie(value: str | None) -> bytes | None:
    return None if value is None else base64.b64decode(value)


def _event_note(e: dict[str, Any]) -> Text:
    parts: list[str] = []
    if e["error"]:
        parts.append(f"{safe(e['error']['type'], 60)}: {safe(e['error']['message'])}")
    if e["detail"]:
        parts.append(safe(json.dumps(e["detail"], sort_keys=True), 200))
    for label in ("cookie_in", "cookie_out"):
        if e[label]:
            parts.append(f"{label.replace('_', ' ')} {preview(_cookie(e[label]))}")
    if e["uri"] and e["kind"] == "ok" and e["step"] == "prepare":
        parts.append(f"uri {safe(e['uri'], 120)}")
    return Text("; ".join(parts), style="red" if e["error"] else "")


def timeline(m: dict[str, Any]) -> Table:
    start = datetime.fromisoformat(m["created_at"])
    table = Table(box=None, header_style="bold")
    for column in ("SEQ", "TIME", "+S", "STEP", "KIND", "STATE", "TOOK", "CANCEL"):
        justify: Literal["left", "right"] = "right" if column in ("SEQ", "+S", "TOOK") else "left"
        table.add_column(column, justify=justify, no_wrap=True)
    table.add_column("DETAIL", overflow="fold", min_width=30)
    for e in m["events"]:
        at = datetime.fromisoformat(e["at"])
        kind_style = KIND_STYLE.get(e["kind"], "magenta")
        table.add_row(
            str(e["seq"]),
            at.strftime("%H:%M:%S.%f")[:-3],
            f"{(at - start).total_seconds():.3f}",
            e["step"] or "",
            Text(e["kind"], style=kind_style),
            _state(e["state"]),
            "" if e["duration"] is None else f"{e['duration'] * 1000:.1f} ms",
            "" if e["cancelled"] is None else ("yes" if e["cancelled"] else "no"),
            _event_note(e),
        )
    return table


def console(stderr: bool = False) -> Console:
    """A console; when output is not a terminal, wide enough that tables keep one line a row."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 200
    return Console(stderr=stderr, highlight=False, soft_wrap=False, width=width)
