"""``GET /v1/events``: every committed event once, in position order, each with its position
as its id; a client that resumes with ``Last-Event-ID`` after the server was killed
(SIGKILL) and restarted loses no event and sees none twice, on SQLite and on PostgreSQL
(where concurrent migrations commit out of position order)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from migrator.engine.coordinator import Coordinator
from migrator.journal.store import Journal
from migrator.service.app import create_app
from migrator.states import TERMINAL
from migrator.workers import Worker
from tests.conftest import Hosts
from tests.service.server import Message, Server, free_port, messages

MIGRATIONS = 6
WAIT = 60.0


def _queue(db_url: str, hosts: Hosts, n: int) -> list[str]:
    ids = []
    with Journal.open(db_url) as journal:
        submitter = Coordinator(journal)
        try:
            for i in range(n):
                hosts.src.define(f"s{i}", memory_mib=4)
                ids.append(submitter.submit(f"s{i}", src=hosts.src, dst=hosts.dst).id)
        finally:
            submitter.close()
    return ids


def _journal_order(db_url: str) -> list[tuple[int, str, int]]:
    with Journal.open(db_url) as journal:
        return [
            (e.position, e.event.migration_id, e.event.seq)
            for e in journal.events_after(None, 100_000)
        ]


def _all_ended(db_url: str, ids: list[str]) -> bool:
    with Journal.open(db_url) as journal:
        return all(journal.get(m).state in TERMINAL for m in ids)


def _read(server: Server, last_id: str | None, until: int) -> Iterator[Message]:
    headers = {} if last_id is None else {"Last-Event-ID": last_id}
    with httpx.stream("GET", f"{server.base}/v1/events", headers=headers, timeout=WAIT) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for n, message in enumerate(messages(r), 1):
            yield message
            if n >= until:
                return


def test_a_client_resuming_after_the_server_was_killed_gets_every_event_once_in_order(
    db_url: str, hosts: Hosts
) -> None:
    ids = _queue(db_url, hosts, MIGRATIONS)
    server = Server(db_url).start()
    got: list[Message] = []
    with Journal.open(db_url) as journal:
        worker = Worker(journal, poll=0.02, concurrency=3).start()
        try:
            got += _read(server, None, until=10)
            server.kill()
            server = Server(db_url, port=server.port).start()
            deadline = time.monotonic() + WAIT
            while not _all_ended(db_url, ids) or len(got) < len(_journal_order(db_url)):
                assert time.monotonic() < deadline, "the stream did not catch up"
                missing = len(_journal_order(db_url)) - len(got)
                if missing > 0:
                    got += _read(server, got[-1].id, until=missing)
                else:
                    time.sleep(0.05)
        finally:
            worker.stop()
            assert worker.join(WAIT)
            server.kill()
    journal_order = _journal_order(db_url)
    assert [(int(m.id or 0), m.data["migration_id"], m.data["seq"]) for m in got] == journal_order
    assert {m.data["migration_id"] for m in got} == set(ids)
    assert all(m.event == "message" for m in got)


@pytest.mark.no_replay
def test_a_stream_of_one_migration_holds_only_its_events_and_an_unknown_id_is_404(
    tmp_path: Path, hosts: Hosts
) -> None:
    db = f"sqlite:///{tmp_path}/journal.db"
    Journal.open(db).close()
    ids = _queue(db, hosts, 2)
    server = Server(db).start()
    try:
        with Journal.open(db) as journal:
            worker = Worker(journal, poll=0.02).start()
            deadline = time.monotonic() + WAIT
            while not _all_ended(db, ids):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            worker.stop()
            assert worker.join(WAIT)
            wanted = len(journal.history(ids[1]))
        got = list(_read_one(server, ids[1][:8], wanted))
        missing = httpx.get(f"{server.base}/v1/events", params={"migration": "ffff"}, timeout=5)
    finally:
        server.kill()
    assert [m.data["seq"] for m in got] == list(range(1, wanted + 1))
    assert {m.data["migration_id"] for m in got} == {ids[1]}
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


def _read_one(server: Server, migration: str, until: int) -> Iterator[Message]:
    url = f"{server.base}/v1/events"
    with httpx.stream("GET", url, params={"migration": migration}, timeout=WAIT) as r:
        for n, message in enumerate(messages(r), 1):
            yield message
            if n >= until:
                return


def test_progress_samples_come_as_progress_messages_without_an_id(
    tmp_path: Path, hosts: Hosts
) -> None:
    db = f"sqlite:///{tmp_path}/journal.db"
    hosts.src.define("big", memory_mib=8)
    with Journal.open(db) as journal:
        submitter = Coordinator(journal)
        try:
            mid = submitter.submit("big", src=hosts.src, dst=hosts.dst, bandwidth=4).id
        finally:
            submitter.close()
        server = Server(db).start()
        worker = Worker(journal, poll=0.02).start()
        got: list[Message] = []
        try:
            url = f"{server.base}/v1/events"
            params = {"migration": mid, "progress": "true"}
            with httpx.stream("GET", url, params=params, timeout=WAIT) as r:
                for message in messages(r):
                    got.append(message)
                    if message.data.get("state") == "CONFIRMED" and message.event == "message":
                        break
        finally:
            worker.stop()
            assert worker.join(WAIT)
            server.kill()
    samples = [m for m in got if m.event == "progress"]
    assert samples and all(m.id is None for m in samples)
    assert {m.data["migration_id"] for m in samples} == {mid}
    assert any(0 < s.data["progress"]["transferred"] < s.data["progress"]["total"] for s in samples)


def test_a_quiet_stream_sends_heartbeat_comments(tmp_path: Path) -> None:
    with Journal.open(f"sqlite:///{tmp_path}/journal.db") as journal:
        app = create_app(journal, heartbeat=0.1, poll=0.02)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            while not server.started:
                time.sleep(0.02)
            lines = []
            with httpx.stream("GET", f"http://127.0.0.1:{port}/v1/events", timeout=WAIT) as r:
                for line in r.iter_lines():
                    lines.append(line)
                    if lines.count(": heartbeat") == 2:
                        break
        finally:
            server.should_exit = True
            thread.join(WAIT)
    assert lines[0] == "retry: 1000"
    assert [line for line in lines if line] == ["retry: 1000", ": heartbeat", ": heartbeat"]
