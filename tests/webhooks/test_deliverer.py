"""The webhook deliverer against a real HTTP receiver on 127.0.0.1: every committed event
POSTed once, signed, in position order, with the migration's traceparent; failures retried
with backoff; the cursor kept in the journal; passwords in URLs never logged."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from migrator.engine.coordinator import Coordinator
from migrator.journal.store import Journal
from migrator.records import EventKind
from migrator.traceids import traceparent
from migrator.webhooks import Endpoint, Webhooks
from tests.conftest import Hosts, readable_events
from tests.webhooks.receiver import receiving

SECRET = b"s3cret-key"


def migrated(journal: Journal, hosts: Hosts, domains: list[str]) -> list[str]:
    coordinator = Coordinator(journal)
    ids = []
    for domain in domains:
        if domain != "vm1":
            hosts.src.define(domain, memory_mib=1)
        ids.append(coordinator.migrate(domain, src=hosts.src, dst=hosts.dst).id)
    coordinator.close()
    return ids


@contextmanager
def delivering(journal: Journal, *endpoints: Endpoint, **options: float) -> Iterator[Webhooks]:
    webhooks = Webhooks(journal, endpoints, poll=0.02, first_wait=0.01, **options)
    webhooks.start()
    try:
        yield webhooks
    finally:
        webhooks.stop(timeout=30)


def test_every_event_is_posted_once_signed_in_position_order(db_url: str, hosts: Hosts) -> None:
    with Journal.open(db_url) as journal, receiving(SECRET) as receiver:
        ids = migrated(journal, hosts, ["vm1", "vm2"])
        committed = readable_events(journal)
        with delivering(journal, Endpoint("ops", receiver.url, SECRET, start="start")):
            got = receiver.wait_for(len(committed))
        traces = journal.trace_ids(ids)
        assert journal.webhook_position("ops") == committed[-1].position
    assert all(r.signed for r in got)
    assert [r.body["position"] for r in got] == [e.position for e in committed]
    assert [(r.body["migration_id"], r.body["seq"]) for r in got] == [
        (e.event.migration_id, e.event.seq) for e in committed
    ]
    last = got[-1].body
    assert last["kind"] == "ok" and last["state"] == "CONFIRMED" and last["step"] == "confirm"
    assert last["event"]["seq"] == last["seq"] and last["time"] == last["event"]["at"]
    for r in got:
        assert r.headers["migrator-event-id"] == str(r.body["position"])
        assert r.headers["traceparent"] == traceparent(traces[r.body["migration_id"]])


def test_a_failing_endpoint_is_retried_until_it_takes_the_event(tmp_path, hosts: Hosts) -> None:
    """500, 500, then 200: the first event is sent three times, the next ones after it."""
    journal = Journal.open(f"sqlite:///{tmp_path / 'j.db'}")
    with journal, receiving(SECRET, answers=[500, 503]) as receiver:
        migrated(journal, hosts, ["vm1"])
        committed = readable_events(journal)
        with delivering(journal, Endpoint("ops", receiver.url, SECRET, start="start")):
            got = receiver.wait_for(len(committed) + 2)
    statuses = [r.headers["status"] for r in got]
    assert statuses[:3] == ["500", "503", "200"]
    positions = [r.body["position"] for r in got]
    first = committed[0].position
    assert positions[:3] == [first] * 3
    assert positions[2:] == [e.position for e in committed]


def test_a_new_endpoint_starts_now_and_an_old_one_from_its_cursor(tmp_path, hosts: Hosts) -> None:
    with Journal.open(f"sqlite:///{tmp_path / 'j.db'}") as journal, receiving(SECRET) as receiver:
        [before] = migrated(journal, hosts, ["vm1"])
        endpoint = Endpoint("ops", receiver.url, SECRET)
        with delivering(journal, endpoint):
            assert receiver.taken() == []
            cursor = _wait_cursor(journal, "ops")
        [after] = migrated(journal, hosts, ["vm2"])
        with delivering(journal, endpoint):
            got = receiver.wait_for(len(journal.history(after)))
    assert {r.body["migration_id"] for r in got} == {after}
    assert before != after and got[0].body["position"] > cursor


def test_only_the_kinds_asked_for_are_posted(tmp_path, hosts: Hosts) -> None:
    kinds = frozenset({EventKind.INTENT})
    with Journal.open(f"sqlite:///{tmp_path / 'j.db'}") as journal, receiving(SECRET) as receiver:
        [mid] = migrated(journal, hosts, ["vm1"])
        intents = [e for e in journal.history(mid) if e.kind is EventKind.INTENT]
        with delivering(journal, Endpoint("ops", receiver.url, SECRET, kinds, "start")):
            got = receiver.wait_for(len(intents))
            last = readable_events(journal)[-1].position
            _wait_cursor(journal, "ops", last)
    assert [r.body["seq"] for r in got] == [e.seq for e in intents]


def test_a_password_in_the_url_is_sent_as_basic_auth_and_never_logged(
    tmp_path, hosts: Hosts, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="migrator.webhooks")
    journal = Journal.open(f"sqlite:///{tmp_path / 'j.db'}")
    with journal, receiving(SECRET, answers=[500]) as receiver:
        url = receiver.url.replace("http://", "http://bob:hunter2@")
        migrated(journal, hosts, ["vm1"])
        with delivering(journal, Endpoint("ops", url, SECRET, start="start")):
            got = receiver.wait_for(2)
    assert got[1].headers["authorization"] == "Basic " + base64.b64encode(b"bob:hunter2").decode()
    assert "not delivered" in caplog.text and "bob:***@" in caplog.text
    assert "hunter2" not in caplog.text


def _wait_cursor(journal: Journal, endpoint: str, at_least: int = 0) -> int:
    deadline = time.monotonic() + 30
    while (found := journal.webhook_position(endpoint)) is None or found < at_least:
        assert time.monotonic() < deadline, "the cursor was not saved"
        time.sleep(0.02)
    return found


def test_an_endpoint_that_keeps_failing_holds_back_no_other(tmp_path, hosts: Hosts) -> None:
    journal = Journal.open(f"sqlite:///{tmp_path / 'j.db'}")
    with journal, receiving(SECRET, [500] * 10_000) as down, receiving(SECRET) as up:
        migrated(journal, hosts, ["vm1"])
        committed = readable_events(journal)
        a = Endpoint("down", down.url, SECRET, start="start")
        b = Endpoint("up", up.url, SECRET, start="start")
        with delivering(journal, a, b, max_wait=0.05):
            got = up.wait_for(len(committed))
            assert len(down.wait_for(3)) >= 3
        assert journal.webhook_position("down") == 0
    assert [r.body["position"] for r in got] == [e.position for e in committed]
    assert {r.body["position"] for r in down.taken()} == {committed[0].position}
