"""The dashboard in a real browser: Debian's Chromium driven by Playwright against
``migrator serve`` and a ``migrator worker`` on loopback. A migration started through the
API shows in the table, its bar moves and reaches 100 % and its state CONFIRMED; another's
failure reason shows; its timeline and the path it took are drawn; a screenshot is kept as
the test's artifact; the state and host filters narrow the table.

Without Chromium the test skips, unless ``MIGRATOR_REQUIRE_BROWSER=1`` makes that a
failure (CI sets it: ``.ci/run``)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from migrator.drivers.test import TestDriver
from migrator.journal.store import Journal
from migrator.journal.tokens import Scope, Tokens
from tests.conftest import ROOT
from tests.service.server import Server

CHROMIUM = os.environ.get("MIGRATOR_CHROMIUM", "/usr/bin/chromium")
REQUIRE = os.environ.get("MIGRATOR_REQUIRE_BROWSER") == "1"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOT = os.environ.get("MIGRATOR_DASHBOARD_SCREENSHOT")
"""Also copy the screenshot here (docs/dashboard.png is made so)."""
WAIT_MS = 60_000


@pytest.fixture
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).is_file():
        if REQUIRE:
            pytest.fail(
                f"a browser is required (MIGRATOR_REQUIRE_BROWSER=1) but {CHROMIUM} is missing"
            )
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def worker_process(tmp_path: Path) -> Iterator[str]:
    db = f"sqlite:///{tmp_path / 'journal.db'}"
    Journal.open(db).close()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "migrator", "--db", db, "worker", "--poll", "0.05", "--quiet"]
    process = subprocess.Popen(command, env=env, cwd=ROOT)
    yield db
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def test_a_migration_started_through_the_api_reaches_100_percent_and_confirmed(
    browser: Any, worker_process: str, tmp_path: Path
) -> None:
    db = worker_process
    src = TestDriver(f"test://{tmp_path / 'host-a'}")
    dst = TestDriver(f"test://{tmp_path / 'host-b'}")
    src.define("web-1", memory_mib=48)
    with Journal.open(db) as journal:
        _made, token = Tokens(journal).create(Scope.OPERATE, name="dashboard test")
    server = Server(db).start()
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(server.base + "/")
        page.fill("#token", token)
        page.click("#auth button")
        page.wait_for_selector("#live.on", timeout=WAIT_MS)
        auth = {"Authorization": f"Bearer {token}"}
        src.define("db-1", memory_mib=4)
        request = {"domain": "db-1", "src": src.uri, "dst": dst.uri, "bandwidth": 1}
        dropped = httpx.post(f"{server.base}/v1/migrations", json=request, headers=auth)
        aborted = httpx.post(
            f"{server.base}/v1/migrations/{dropped.json()['id']}/abort", headers=auth
        )
        assert aborted.status_code == 202, aborted.text
        request = {"domain": "web-1", "src": src.uri, "dst": dst.uri, "live": True, "bandwidth": 16}
        made = httpx.post(f"{server.base}/v1/migrations", json=request, headers=auth, timeout=30)
        assert made.status_code == 201, made.text
        row = f'tr[data-id="{made.json()["id"]}"]'
        page.wait_for_selector(row, timeout=WAIT_MS)
        seen = _bar_values(page, row)
        assert page.inner_text(f"{row} .state") == "CONFIRMED"
        assert page.inner_text(f"{row} .pct") == "100 %"
        assert any(0 < v < 100 for v in seen), seen
        failed = f'tr[data-id="{dropped.json()["id"]}"]'
        url = f"{server.base}/v1/migrations/{dropped.json()['id']}"
        _until(lambda: httpx.get(url, headers=auth).json()["state"] in {"FAILED", "ROLLED_BACK"})
        ended = httpx.get(url, headers=auth).json()  # aborted while queued, or running
        _until(lambda: page.inner_text(f"{failed} .state") == ended["state"])
        assert page.inner_text(f"{failed} .reason") == ended["reason"]
        page.click(row)
        _until(lambda: page.locator("#diagram").evaluate("img => img.naturalWidth") > 0)
        steps = page.eval_on_selector_all(
            "#timeline tbody tr td:nth-child(3)", "cs => cs.map(c => c.textContent)"
        )
        assert {"prepare", "perform", "finish", "confirm"} <= set(steps)
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        page.select_option("#state", "CONFIRMED")
        _until(lambda: _shown(page) == [made.json()["id"]])
        page.select_option("#state", "")
        page.fill("#host", "no-such-host")
        _until(lambda: _shown(page) == [])
        page.fill("#host", "host-a")
        _until(lambda: len(_shown(page)) == 2)
    finally:
        server.kill()
    assert shot.stat().st_size > 10_000
    if SCREENSHOT:
        shutil.copyfile(shot, SCREENSHOT)


def _shown(page: Any) -> list[str]:
    return list(
        page.eval_on_selector_all("#migrations tbody tr", "rs => rs.map(r => r.dataset.id)")
    )


def _until(done: Any) -> None:
    """Poll ``done`` from here: the page's CSP forbids the eval ``wait_for_function`` uses."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while not done():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def _bar_values(page: Any, row: str) -> list[int]:
    """Every value the row's bar shows until it reaches 100, as the page updates it."""
    seen: list[int] = []
    deadline = time.monotonic() + WAIT_MS / 1000
    while not seen or seen[-1] < 100:
        assert time.monotonic() < deadline, seen
        value = int(page.get_attribute(f"{row} progress", "value") or 0)
        if not seen or seen[-1] != value:
            seen.append(value)
        page.wait_for_timeout(30)
    return seen
