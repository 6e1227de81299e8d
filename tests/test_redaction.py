"""Passwords in host URIs never reach the journal: not its rows, not any event, not a reason.

The hosts are real test hosts whose ``uri`` carries a password (as a host URI of a remote
driver would); the migration takes paths that journal probes and reasons naming the hosts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from migrator.drivers.test import TestDriver
from migrator.engine.coordinator import Coordinator
from migrator.inspect import export
from migrator.journal.store import Journal
from migrator.redaction import UNPARSEABLE, redact

SECRET = "s3cret-pw"


def host(tmp_path: Path, name: str) -> TestDriver:
    driver = TestDriver(f"test://{tmp_path / name}")
    driver.uri = f"test://bob:{SECRET}@{name}.example{tmp_path / name}"
    return driver


@pytest.mark.parametrize("protocol", [3, 2, 1])
def test_no_password_in_any_journaled_field(
    journal: Journal, tmp_path: Path, protocol: int
) -> None:
    src, dst = host(tmp_path, "a"), host(tmp_path, "b")
    src.define("vm1")
    dst.set_fault({3: "finish", 2: "finish2", 1: "finish1"}[protocol], "error")
    dst.set_fault("probe", "error", count=3)  # the first probes fail: error events name the host
    coordinator = Coordinator(journal, retry_backoff=0.0)
    m = coordinator.migrate("vm1", src=src, dst=dst, protocol=protocol)
    document = json.dumps(export(journal, m.id))
    assert any(e.step and e.step.value == "probe" for e in journal.history(m.id))
    assert "bob:***@" in document, "the hosts are journaled, redacted"
    assert SECRET not in document
    assert SECRET not in (m.reason or "")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://bob:s3cret@db.example/x", "postgresql+psycopg://bob:***@db.example/x"),
        ("test://bob:s3cret@a.example/srv/a", "test://bob:***@a.example/srv/a"),
        ("postgresql://bob:p%40ss@h:5432/x?sslmode=require", "postgresql://bob:***@h:5432/x?sslmode=require"),
        ("postgresql://bob@h/x", "postgresql://bob@h/x"),
        ("sqlite:///./migrator.db", "sqlite:///./migrator.db"),
        ("test:///srv/a", "test:///srv/a"),
    ],
)  # fmt: skip
def test_redact_hides_the_password_and_nothing_else(url: str, shown: str) -> None:
    assert redact(url) == shown


@pytest.mark.parametrize("text", ["bob:s3cret@db.example/x", "http://bob:s3cret@[::1/x"])
def test_a_text_that_is_not_a_url_but_may_hold_a_password_is_not_shown(text: str) -> None:
    assert redact(text) == UNPARSEABLE
