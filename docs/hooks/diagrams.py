"""MkDocs hook: every Mermaid diagram of the docs drawn as an SVG picture when the site is built.

The pages keep their diagrams as Mermaid text (readable in any Markdown viewer, checked
by the tests against the code); the built site shows each one as an inline ``<svg>``
drawn by graphviz's ``dot`` on the build machine, so the site loads no script and no
asset from anywhere else:

- a ``stateDiagram-v2`` must be the machine's own (``migrator.diagram.mermaid()``): it
  is drawn from the machine by ``migrator.diagram.render``, never from the page's text;
- a ``flowchart`` (or ``graph``) of plain boxes and arrows (``id["label"]``,
  ``a --> b``, ``a -->|label| b``) is translated to graphviz's language here.

Any other diagram fails the build with the page and line. Without ``dot`` the Mermaid
text stays as code and a warning is logged (``mkdocs build --strict`` then fails).
"""

from __future__ import annotations

import html
import logging
import re
import textwrap
from typing import Any

from mkdocs.exceptions import PluginError

from migrator.diagram import Format as DiagramFormat
from migrator.diagram import GraphvizMissing, graphviz, mermaid, render

log = logging.getLogger(f"mkdocs.plugins.{__name__}")

FENCE = re.compile(r"^```mermaid[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
DIRECTIONS = {"TD": "TB", "TB": "TB", "BT": "BT", "LR": "LR", "RL": "RL"}
NODE = re.compile(r'^(\w+)\["([^"]*)"\]$')
EDGE = re.compile(r"^(\w+)\s*-->\s*(?:\|([^|]*)\|\s*)?(\w+)$")
LABEL_WIDTH = 60
"""Label lines wrap at this many characters, as a Mermaid renderer wraps them."""
TOKEN = "MIGRATORDIAGRAM{n}"
SVG_STYLE = 'style="max-width:100%;height:auto" role="img"'

_pending: dict[str, list[tuple[str, str]]] = {}
"""Per page (its source path): the (svg, mermaid source) of each diagram, in order."""


class DiagramError(PluginError):
    """A Mermaid diagram this hook cannot draw (the message names the page and line)."""


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _label(text: str) -> str:
    lines = [w for line in re.split(r"<br\s*/?>", text) for w in textwrap.wrap(line, LABEL_WIDTH)]
    return "\\n".join(_quoted(html.unescape(line))[1:-1] for line in lines)


def flowchart_dot(source: str, where: str) -> str:
    """A Mermaid flowchart of boxes and arrows in graphviz's language."""
    lines = [line.strip() for line in source.splitlines()]
    head = lines[0].split()
    if len(head) != 2 or head[1] not in DIRECTIONS:
        raise DiagramError(f"{where}: line 1: expected 'flowchart TD|TB|BT|LR|RL'")
    out = [
        "digraph diagram {",
        f"    rankdir={DIRECTIONS[head[1]]};",
        '    node [shape=box, style="rounded,filled", fillcolor="#f5f7ff", fontname=Helvetica];',
        "    edge [fontname=Helvetica, fontsize=10];",
    ]
    for number, line in enumerate(lines[1:], start=2):
        if not line or line.startswith("%%"):
            continue
        if node := NODE.match(line):
            out.append(f'    {node[1]} [label="{_label(node[2])}"];')
        elif edge := EDGE.match(line):
            label = f' [label="{_label(edge[2])}"]' if edge[2] else ""
            out.append(f"    {edge[1]} -> {edge[3]}{label};")
        else:
            raise DiagramError(f"{where}: line {number}: not a box or an arrow: {line!r}")
    out.append("}")
    return "\n".join(out) + "\n"


def draw(source: str, where: str) -> str:
    """The diagram as an inline ``<svg>`` element (no XML prolog)."""
    kind = source.split(None, 1)[0] if source.strip() else ""
    if kind == "stateDiagram-v2":
        if source != mermaid():
            raise DiagramError(
                f"{where}: a state diagram must be `migrator diagram`'s output, drawn from the"
                " machine; this one differs"
            )
        svg = render(DiagramFormat.SVG).decode()
    elif kind in ("flowchart", "graph"):
        svg = graphviz(flowchart_dot(source, where)).decode()
    else:
        raise DiagramError(f"{where}: no drawing for a Mermaid {kind!r} diagram")
    svg = svg[svg.index("<svg") :]
    return svg.replace("<svg", f"<svg {SVG_STYLE}", 1)


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    where = page.file.src_uri
    found: list[tuple[str, str]] = []

    def replace(match: re.Match[str]) -> str:
        line = markdown.count("\n", 0, match.start()) + 1
        try:
            svg = draw(match[1], f"{where}:{line}")
        except GraphvizMissing as e:
            log.warning("%s:%d: diagram left as Mermaid text: %s", where, line, e)
            return match[0]
        found.append((svg, match[1]))
        return "\n" + TOKEN.format(n=len(found) - 1) + "\n"

    markdown = FENCE.sub(replace, markdown)
    _pending[where] = found
    return markdown


def on_page_content(content: str, page: Any, **_: Any) -> str:
    for n, (svg, source) in enumerate(_pending.pop(page.file.src_uri, [])):
        token = TOKEN.format(n=n)
        figure = (
            f'<figure class="diagram">{svg}</figure>\n'
            "<details><summary>Mermaid source</summary>"
            f"<pre><code>{html.escape(source)}</code></pre></details>"
        )
        if f"<p>{token}</p>" not in content:
            raise DiagramError(f"{page.file.src_uri}: diagram {n + 1} lost in the page's HTML")
        content = content.replace(f"<p>{token}</p>", figure)
    return content
