"""Rendering for people: tables and timelines, with every untrusted text made safe.

Text from drivers and cookies may hold terminal escape sequences, control characters,
invalid UTF-8 or megabytes of data. ``safe`` escapes and bounds it before it reaches
``rich``, which is given ``Text`` objects (never markup) for such data.
"""

from __future__ import annotations

import base64
import io
import json
import sys
import unicodedata
from datetime import datetime
from typing import IO, Any, Literal, TextIO, cast

from rich.console import Console
from rich.table import Table
from rich.text import Text

from migrator.records import EventKind

PREVIEW_MAX = 48
KIND_STYLE = {EventKind.INTENT: "", EventKind.OK: "", EventKind.ERROR: "red"}
TEXT_MAX = 400
PIPE_WIDTH = 320
"""The console's width when output is not a terminal: wide enough for a row on one line."""

STATE_STYLE = {
    "LOST": "bold red",
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
    text = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)
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


def migrations_table(rows: list[dict[str, Any]], *, header: bool = True) -> Table:
    table = Table(box=None, header_style="bold", show_header=header)
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


def step_side(step: str | None) -> str | None:
    """Which host runs a step: ``dst`` for Prepare and Finish (of any protocol), else ``src``.

    Decided by name so that steps added later (``prepare_tunnel``, ``finish2``) need no table.
    """
    if step is None or step == "probe":
        return None
    return "dst" if step.startswith(("prepare", "finish")) else "src"


def header(m: dict[str, Any]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in header_rows(m):
        grid.add_row(key, value)
    return grid


def header_rows(m: dict[str, Any]) -> list[tuple[str, Text | str]]:
    """The header of ``show``: what a person needs first, every untrusted text made safe."""
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
    ]
    events = m.get("events", [])
    failure = first_failure(m, events)
    if failure:
        rows.append(("failed at", Text(failure, style="red")))
    rows += [("recovered", Text(r, style="magenta")) for r in recoveries(events)]
    rows += [(label, Text(text, style="magenta")) for label, text in operator_actions(events)]
    rows += [
        ("started", _time(m["created_at"])),
        ("took", took(m)),
    ]
    if m.get("progress"):
        rows.append(("progress", Text(progress_text(m["progress"]))))
    if m.get("policy"):
        rows.append(("policy", Text(safe(policy_text(m["policy"]), 400))))
    rows += [("request", Text(request_text(r))) for r in m.get("requests", [])]
    rows.append(("owner", Text(safe(m["owner"])) if m["owner"] else "-"))
    owners = m.get("owners", [])
    if len(owners) > 1:  # it changed hands: who held it, from which event on
        rows += [
            ("owned by", Text(f"{safe(o['owner'])} from event {o['seq']} ({o['at']})"))
            for o in owners
        ]
    return rows


def took(m: dict[str, Any], now: datetime | None = None) -> str:
    """How long the migration took; for one not ended (queued, in flight, in doubt: no
    ``finished_at``), how long since it was created, its last event perhaps long ago."""
    if m["finished_at"] is not None:
        return f"{m['duration']:.3f} s"
    started = datetime.fromisoformat(m["created_at"])
    so_far = ((now or datetime.now(started.tzinfo)) - started).total_seconds()
    return f"{so_far:.3f} s so far (not ended; last event at {m['duration']:.3f} s)"


JOB_STATS = (
    ("remaining", "remaining {:.1f} MiB", 2**20),
    ("dirty_rate", "dirty {:.1f} MiB/s", 2**20),
    ("expected_downtime_ms", "expected downtime {:.0f} ms", 1),
    ("throttle_pct", "throttle {:.0f} %", 1),
    ("postcopy_requests", "post-copy requests {:.0f}", 1),
)
"""The job statistics of a progress sample that ``show`` prints, when a driver gave them."""


def progress_text(p: dict[str, Any]) -> str:
    """The last progress sample: ``12.0 / 64.0 MiB, pass 2, remaining 3.0 MiB, dirty 16.0
    MiB/s, ...`` (driver numbers, made safe)."""
    try:
        done, total = int(p["transferred"]) / 2**20, int(p["total"]) / 2**20
        parts = [f"{done:.1f} / {total:.1f} MiB", f"pass {int(p.get('passes', 1))}"]
        parts += [  # the remaining bytes while there are some: a finished Perform has none
            form.format(int(p[k]) / unit)
            for k, form, unit in JOB_STATS
            if p.get(k) is not None and (k != "remaining" or p[k])
        ]
        return ", ".join(parts)
    except (KeyError, TypeError, ValueError):
        return safe(json.dumps(p, sort_keys=True), 200)


def policy_text(policy: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(policy.items()))


def request_text(r: dict[str, Any]) -> str:
    """``3 downtime 5000: requested 04:55:01, applied 04:55:01.4 (applied)``."""
    value = "" if r["value"] is None else f" {r['value']}"
    applied = f"applied {_hms(r['applied_at'])}" if r["applied_at"] else "pending"
    outcome = f" ({safe(r['outcome'], 200)})" if r["outcome"] else ""
    return f"{r['id']} {r['kind']}{value}: requested {_hms(r['requested_at'])}, {applied}{outcome}"


def _hms(at: str) -> str:
    return at[11:23] if len(at) >= 23 else at


def host_of(m: dict[str, Any], e: dict[str, Any]) -> str:
    """``src`` or ``dst``: the host an event's step ran on (a probe says by its URI)."""
    if e["step"] == "probe" and e["uri"]:
        return "dst" if e["uri"] == m["dst"] else "src" if e["uri"] == m["src"] else ""
    return step_side(e["step"]) or ""


def first_failure(m: dict[str, Any], events: list[dict[str, Any]]) -> str | None:
    """``perform on src test:///a: DriverError: text`` for the first step that raised."""
    for e in events:
        if e["kind"] == EventKind.ERROR and e["error"] and e["step"] != "probe":
            side = host_of(m, e)
            uri = m.get(side, "") if side else ""
            where = f"{e['step']} on {side} {safe(uri, 120)}".rstrip()
            return f"{where} (seq {e['seq']}): {error_text(e['error'])}"
    return None


def error_text(error: dict[str, Any]) -> str:
    return f"{safe(error['type'] or '?', 60)}: {safe(error['message'] or '')}"


def recoveries(events: list[dict[str, Any]]) -> list[str]:
    """One line per time recovery took the migration over: who, after which crash, the plan."""
    lines = []
    for i, e in enumerate(events):
        d = e["detail"] or {}
        if e["kind"] != EventKind.RECOVERY or "from_state" not in d:
            continue
        before = events[i - 1] if i else None
        crash = (
            f"after seq {before['seq']} ({before['step'] or '-'} {safe(before['kind'], 16)})"
            if before
            else "before any event"
        )
        lines.append(
            f"seq {e['seq']} by {safe(e['coordinator'] or '?', 80)}: coordinator "
            f"{safe(d.get('previous_owner') or '?', 80)} stopped in "
            f"{safe(d['from_state'], 32)} {crash}; claimed because "
            f"{safe(d.get('because') or '?', 120)}; plan: {safe(d.get('plan') or '?', 200)}"
        )
    return lines


def _cookie(value: str | None) -> bytes | None:
    return None if value is None else base64.b64decode(value)


def operator_actions(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """``resolved`` and ``aborted`` header lines: what an operator decided, and when."""
    out = []
    for e in events:
        who = safe(e["coordinator"] or "?", 80)
        if e["kind"] == EventKind.RESOLVE:
            where = safe((e["detail"] or {}).get("running_on"), 8)
            out.append(("resolved", f"seq {e['seq']} by {who}: the domain runs on {where}"))
        elif e["kind"] == EventKind.ABORT:
            out.append(("aborted", f"seq {e['seq']}: an operator's abort, honoured by {who}"))
    return out


def _special_note(e: dict[str, Any]) -> str | None:
    """The meaning of the events that are not a driver call."""
    d = e["detail"] or {}
    if e["kind"] == EventKind.RECOVERY and "from_state" in d:
        return (
            f"RECOVERY by {safe(e['coordinator'] or '?', 80)} after a crash in "
            f"{safe(d['from_state'], 32)} (previous owner {safe(d.get('previous_owner'), 80)}:"
            f" {safe(d.get('because'), 120)}); plan: {safe(d.get('plan'), 200)}"
        )
    if e["kind"] == EventKind.RECOVERY:
        return "RECOVERY " + safe(json.dumps(d, sort_keys=True), 200)
    if e["kind"] == EventKind.RESOLVE:
        return (
            f"OPERATOR resolved it with {safe(e['coordinator'] or '?', 80)}:"
            f" the domain runs on {safe(d.get('running_on'), 8)}"
        )
    if e["kind"] == EventKind.ABORT:
        return "OPERATOR asked to abort"
    if e["kind"] == EventKind.IN_DOUBT:
        return "gave up on an automatic end: `migrator resolve` decides"
    return None


def _event_note(e: dict[str, Any]) -> Text:
    special = _special_note(e)
    parts: list[str] = [special] if special else []
    if e["error"]:
        parts.append(error_text(e["error"]))
    if e["detail"] and special is None:
        parts.append(safe(json.dumps(e["detail"], sort_keys=True), 200))
    if e["attempt"] and e["attempt"] > 1:
        parts.append(f"attempt {e['attempt']}")
    for label in ("cookie_in", "cookie_out"):
        if e[label]:
            parts.append(f"{label.replace('_', ' ')} {preview(_cookie(e[label]))}")
    if e["uri"] and e["kind"] == EventKind.OK and (e["step"] or "").startswith("prepare"):
        parts.append(f"uri {safe(e['uri'], 120)}")
    style = "red" if e["error"] else "magenta" if special else ""
    return Text("; ".join(parts), style=style)


def timeline(m: dict[str, Any]) -> Table:
    start = datetime.fromisoformat(m["created_at"])
    table = Table(box=None, header_style="bold")
    for column in ("SEQ", "TIME", "+S", "STEP", "ON", "KIND", "STATE", "TOOK", "CANCEL"):
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
            host_of(m, e),
            Text(safe(e["kind"], 16), style=kind_style),
            _state(e["state"]),
            "" if e["duration"] is None else f"{e['duration'] * 1000:.1f} ms",
            "" if e["cancelled"] is None else ("yes" if e["cancelled"] else "no"),
            _event_note(e),
        )
    return table


def console(stderr: bool = False) -> Console:
    """A console; when output is not a terminal, wide enough that tables keep one line a row,
    and no line padded with spaces to that width."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr, highlight=False, soft_wrap=False)
    trimmed = cast("IO[str]", _Trimmed(stream))  # a TextIOBase, which typeshed keeps apart
    return Console(file=trimmed, highlight=False, soft_wrap=False, width=PIPE_WIDTH)


class _Trimmed(io.TextIOBase):
    """Writes to ``stream`` each line without its trailing spaces (rich pads every line of a
    table to the console's width)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._partial = ""

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", None) or "utf-8"

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self._stream.write(line.rstrip(" ") + "\n")
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        if self._partial:
            self._stream.write(self._partial.rstrip(" "))
            self._partial = ""
        super().close()
