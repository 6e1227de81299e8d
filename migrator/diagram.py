"""The state machine drawn from the one state table: Mermaid text, or SVG/PNG via graphviz.

Every state and transition comes from the machine (``machine.machine()``, built from
``states.TRANSITIONS``), so states and steps added there appear here with no change. With
a path (the states one migration went through), its states and the transitions it took
are highlighted.
"""

from __future__ import annotations

import enum
import shutil
import subprocess

from migrator.errors import MigratorError, UsageError
from migrator.machine import machine
from migrator.states import TERMINAL, State, Transition

DOT_TIMEOUT = 30.0
TAKEN_FILL = "#cfe8ff"
TAKEN_LINE = "#1565c0"


class Format(enum.StrEnum):
    MERMAID = "mermaid"
    DOT = "dot"
    SVG = "svg"
    PNG = "png"


class GraphvizMissing(UsageError):
    def __init__(self, *, fmt: str) -> None:
        super().__init__(
            f"--format {fmt} needs graphviz's `dot` on PATH (Debian: apt-get install graphviz);"
            " --format mermaid needs nothing"
        )


def _table() -> tuple[Transition, ...]:
    return machine().table


def _states() -> list[State]:
    used = {t.source for t in _table()} | {t.dest for t in _table()}
    return [s for s in State if s in used]


def dot(path: list[State] | None = None) -> str:
    """The machine in graphviz's language; ``path`` highlighted."""
    taken = set(path or [])
    steps = set(zip(path or [], (path or [])[1:], strict=False))
    lines = [
        "digraph migration {",
        "    rankdir=TB;",
        '    node [shape=box, style="rounded,filled", fillcolor=white, fontname=Helvetica];',
        "    edge [fontname=Helvetica, fontsize=10];",
        '    start [shape=point, label=""];',
        f"    start -> {State.NEW};",
    ]
    for state in _states():
        attrs = ["peripheries=2"] if state in TERMINAL else []
        if state in taken:
            attrs += [f'fillcolor="{TAKEN_FILL}"', f'color="{TAKEN_LINE}"', "penwidth=2"]
        lines.append(f"    {state} [{', '.join(attrs)}];" if attrs else f"    {state};")
    for t in _table():
        attrs = [f'label="{t.trigger}"']
        if (t.source, t.dest) in steps:
            attrs += [f'color="{TAKEN_LINE}"', "penwidth=2.5"]
        lines.append(f"    {t.source} -> {t.dest} [{', '.join(attrs)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def mermaid(path: list[State] | None = None) -> str:
    """The machine as a Mermaid state diagram; states on ``path`` are highlighted."""
    lines = ["stateDiagram-v2", f"    [*] --> {State.QUEUED}", f"    [*] --> {State.NEW}"]
    lines += [f"    {t.source} --> {t.dest}: {t.trigger}" for t in _table()]
    lines += [f"    {state} --> [*]" for state in sorted(TERMINAL)]
    if path:
        lines.append(f"    classDef taken fill:{TAKEN_FILL},stroke:{TAKEN_LINE},stroke-width:2px")
        lines += [f"    class {state} taken" for state in dict.fromkeys(path)]
    return "\n".join(lines) + "\n"


def render(fmt: Format, path: list[State] | None = None) -> bytes:
    """The diagram in ``fmt``; SVG and PNG raise GraphvizMissing without ``dot``."""
    if fmt is Format.MERMAID:
        return mermaid(path).encode()
    source = dot(path)
    if fmt is Format.DOT:
        return source.encode()
    return graphviz(source, fmt)


def graphviz(source: str, fmt: Format = Format.SVG) -> bytes:
    """Any graph in graphviz's language drawn by ``dot`` in ``fmt`` (SVG or PNG)."""
    binary = shutil.which("dot")
    if binary is None:
        raise GraphvizMissing(fmt=str(fmt))
    proc = subprocess.run(
        [binary, f"-T{fmt}"],
        input=source.encode(),
        capture_output=True,
        timeout=DOT_TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        said = proc.stderr.decode("utf-8", "replace").strip()[:300]
        raise MigratorError(f"graphviz's dot failed (exit {proc.returncode}): {said}")
    return proc.stdout
