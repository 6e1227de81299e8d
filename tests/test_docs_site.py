"""The built docs site in a real browser: each Mermaid diagram is a drawn ``<svg>``, and no
page asks anything of a host other than the local server it is loaded from.

The site is built with ``mkdocs build --strict``, served by ``http.server`` on 127.0.0.1 and
loaded in headless Chromium (Debian's ``/usr/bin/chromium``) through Playwright. Without
Chromium the tests skip, unless ``MIGRATOR_REQUIRE_BROWSER=1`` makes that a failure.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from migrator.machine import machine
from tests.conftest import ROOT
from tests.test_docs import DOCS, fenced_blocks

REQUIRE_BROWSER = os.environ.get("MIGRATOR_REQUIRE_BROWSER") == "1"
CHROMIUM = os.environ.get("MIGRATOR_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
LOCAL = "127.0.0.1"
PAGES = sorted(p.name for p in DOCS.glob("*.md") if fenced_blocks(p.read_text(), "mermaid"))

pytestmark = pytest.mark.slow


def _boxes(source: str) -> set[str]:
    """The node names graphviz gives the drawing of one Mermaid diagram (its ``<title>``s)."""
    if source.startswith("stateDiagram"):
        table = machine().table
        return {str(s) for t in table for s in (t.source, t.dest)} | {"start"}
    return set(re.findall(r'^\s*(\w+)\["', source, re.M))


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("docs") / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def server(site: Path) -> Iterator[str]:
    httpd = ThreadingHTTPServer((LOCAL, 0), functools.partial(_Quiet, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{LOCAL}:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = None
    if shutil.which(CHROMIUM) is None:
        missing = f"{CHROMIUM} not found (Debian: apt-get install chromium)"
    else:
        try:
            from playwright.sync_api import sync_playwright
        except ImportError as exc:
            missing = f"Python playwright not installed: {exc}"
    if missing is not None:
        if REQUIRE_BROWSER:
            pytest.fail(f"a browser is required (MIGRATOR_REQUIRE_BROWSER=1): {missing}")
        pytest.skip(missing)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def test_the_docs_have_diagrams_to_draw() -> None:
    assert {"architecture.md", "states.md"} <= set(PAGES)


@pytest.mark.parametrize("name", PAGES)
def test_each_diagram_is_a_drawn_svg_and_nothing_leaves_the_local_host(
    name: str, server: str, browser: Any
) -> None:
    sources = fenced_blocks((DOCS / name).read_text(), "mermaid")
    url = f"{server}/{Path(name).stem}/"
    requests: list[str] = []
    page = browser.new_page()
    try:
        page.on("request", lambda request: requests.append(request.url))
        response = page.goto(url, wait_until="networkidle")
        assert response is not None and response.ok, url
        figures = page.locator("figure.diagram > svg")
        assert figures.count() == len(sources), "one drawn diagram per Mermaid block"
        for n, source in enumerate(sources):
            svg = figures.nth(n)
            box = svg.bounding_box()
            assert box is not None and box["width"] > 50 and box["height"] > 50, box
            assert svg.is_visible()
            titles = set(svg.locator("g.node > title").all_text_contents())
            assert titles == _boxes(source), f"diagram {n + 1} of {name} draws other boxes"
            assert svg.locator("g.edge").count() > 0
        # No Mermaid text left as code where a picture should be.
        assert page.locator("code.language-mermaid, pre.mermaid").count() == 0
    finally:
        page.close()
    assert requests, "the page made no request at all"
    remote = [
        u for u in requests if urlsplit(u).scheme not in ("data", "blob") and
        urlsplit(u).hostname != LOCAL
    ]  # fmt: skip
    assert remote == [], f"{name} asked hosts other than {LOCAL}"


def _hook() -> Any:
    spec = importlib.util.spec_from_file_location("diagrams_hook", DOCS / "hooks" / "diagrams.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_state_diagram_other_than_the_machines_fails_the_build() -> None:
    hook = _hook()
    with pytest.raises(hook.DiagramError, match=r"x\.md:3: a state diagram must be"):
        hook.draw("stateDiagram-v2\n    [*] --> NEW\n", "x.md:3")


def test_a_flowchart_line_that_is_no_box_or_arrow_fails_the_build() -> None:
    hook = _hook()
    with pytest.raises(hook.DiagramError, match=r"x\.md:1: line 3: not a box or an arrow"):
        hook.flowchart_dot('flowchart TD\n    a["A"]\n    a -.-> b\n', "x.md:1")
    dot = hook.flowchart_dot('flowchart LR\n    a["A<br/>B\\C &amp; D"]\n    a -->|go| b\n', "x")
    assert 'a [label="A\\nB\\\\C & D"];' in dot and 'a -> b [label="go"];' in dot
    assert "rankdir=LR;" in dot
