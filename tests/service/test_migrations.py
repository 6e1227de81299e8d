"""``/v1/migrations``: a migration queued through the API is driven by a worker and read
back as the commands read it; ``Idempotency-Key`` never queues a second one; pages."""

from __future__ import annotations

import hashlib
import threading
import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from migrator import inspect
from migrator.journal.queue import Queue
from migrator.journal.revisions import SCHEMA_HEAD
from migrator.journal.schema import api_idempotency
from migrator.journal.tokens import Tokens
from migrator.service import models
from migrator.states import State
from migrator.workers import Worker
from tests.conftest import Hosts
from tests.service.conftest import Api, dump


def test_a_queued_migration_is_driven_by_a_worker_and_reads_as_show_reads_it(
    api: Api, hosts: Hosts, worker: Worker
) -> None:
    made = api.client.post("/v1/migrations", json=api.request_for(hosts), headers=api.headers())
    assert made.status_code == 201, made.text
    assert made.json()["state"] == "QUEUED"
    assert made.headers["Location"] == f"/v1/migrations/{made.json()['id']}"
    ended = api.wait_for_end(made.json()["id"])
    assert ended["state"] == "CONFIRMED"
    assert hosts.states("vm1") == ("absent", "running")
    assert list(ended["phases"]) == ["begin", "prepare", "perform", "finish", "confirm"]
    timeline = api.client.get(f"/v1/migrations/{ended['id'][:8]}/events", headers=api.headers())
    shown = inspect.show(api.journal, ended["id"])
    assert timeline.json()["events"] == shown["events"]


def test_a_retried_request_with_the_same_key_returns_the_same_migration(
    api: Api, hosts: Hosts
) -> None:
    headers = {**api.headers(), "Idempotency-Key": "retry-1"}
    answers: list[tuple[int, str]] = []

    def post() -> None:
        got = api.client.post("/v1/migrations", json=api.request_for(hosts), headers=headers)
        answers.append((got.status_code, got.json()["id"]))

    threads = [threading.Thread(target=post) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(code for code, _ in answers) == [200, 200, 200, 201]
    assert len({mid for _, mid in answers}) == 1
    assert len(api.journal.list()) == 1


def test_a_key_reused_for_another_request_is_refused_and_queues_nothing(
    api: Api, hosts: Hosts
) -> None:
    headers = {**api.headers(), "Idempotency-Key": "k"}
    first = api.client.post("/v1/migrations", json=api.request_for(hosts), headers=headers)
    hosts.src.define("vm2", memory_mib=4)
    other = api.client.post("/v1/migrations", json=api.request_for(hosts, "vm2"), headers=headers)
    assert first.status_code == 201
    assert other.status_code == 422
    assert other.headers["content-type"] == "application/problem+json"
    assert "different request" in other.json()["detail"]
    assert [m.id for m in api.journal.list()] == [first.json()["id"]]


def test_a_refused_request_frees_its_key_for_a_corrected_retry(api: Api, hosts: Hosts) -> None:
    headers = {**api.headers(), "Idempotency-Key": "k2"}
    wrong = {**api.request_for(hosts), "domain": "nowhere"}
    refused = api.client.post("/v1/migrations", json=wrong, headers=headers)
    assert refused.status_code == 422
    assert "domain 'nowhere' not found" in refused.json()["detail"]
    retried = api.client.post("/v1/migrations", json=wrong, headers=headers)
    assert retried.status_code == 422
    assert api.journal.list() == []


def test_pages_follow_the_cursor_through_every_migration_once(api: Api, hosts: Hosts) -> None:
    for n in range(5):
        hosts.src.define(f"p{n}", memory_mib=4)
        got = api.client.post(
            "/v1/migrations", json=api.request_for(hosts, f"p{n}"), headers=api.headers()
        )
        assert got.status_code == 201
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.client.get("/v1/migrations", params=params, headers=api.headers("read"))
        seen += [m["id"] for m in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == [m.id for m in api.journal.list()]


def test_state_and_host_filter_as_list_filters(api: Api, hosts: Hosts) -> None:
    made = api.client.post("/v1/migrations", json=api.request_for(hosts), headers=api.headers())
    read = api.headers("read")
    queued = api.client.get("/v1/migrations", params={"state": "QUEUED"}, headers=read)
    confirmed = api.client.get("/v1/migrations", params={"state": "CONFIRMED"}, headers=read)
    elsewhere = api.client.get("/v1/migrations", params={"host": "no-such-host"}, headers=read)
    assert [m["id"] for m in queued.json()["items"]] == [made.json()["id"]]
    assert confirmed.json()["items"] == []
    assert elsewhere.json()["items"] == []


def test_abort_of_a_queued_migration_fails_it_and_a_second_abort_is_a_conflict(
    api: Api, hosts: Hosts
) -> None:
    made = api.client.post("/v1/migrations", json=api.request_for(hosts), headers=api.headers())
    mid = made.json()["id"]
    aborted = api.client.post(f"/v1/migrations/{mid}/abort", headers=api.headers())
    again = api.client.post(f"/v1/migrations/{mid}/abort", headers=api.headers())
    assert aborted.status_code == 202
    assert aborted.json()["state"] == "FAILED"
    assert aborted.json()["reason"] == "aborted while queued"
    assert again.status_code == 422
    assert "only a migration that has not finished Perform" in again.json()["detail"]


def test_resolve_of_a_migration_that_is_not_in_doubt_is_refused(api: Api, hosts: Hosts) -> None:
    made = api.client.post("/v1/migrations", json=api.request_for(hosts), headers=api.headers())
    mid = made.json()["id"]
    got = api.client.post(
        f"/v1/migrations/{mid}/resolve", json={"running_on": "src"}, headers=api.headers()
    )
    assert got.status_code == 422
    assert got.json()["detail"] == f"migration {mid} is QUEUED, not IN_DOUBT"


def test_workers_stats_health_and_metrics_answer(api: Api, worker: Worker) -> None:
    read = api.headers("read")
    workers = api.client.get("/v1/workers", headers=read).json()
    assert worker.id in [w["id"] for w in workers]
    assert api.client.get("/v1/stats", headers=read).json()["total"] == 0
    assert api.client.get("/healthz").json() == {"status": "ok"}
    assert api.client.get("/readyz").json()["revision"] == SCHEMA_HEAD
    metrics = api.client.get("/metrics", headers=read)
    assert "migrator_queue_depth 0.0" in metrics.text


def test_a_retry_after_the_first_request_died_queues_the_reserved_id_once(
    api: Api, hosts: Hosts
) -> None:
    """The first request reserved the key with its migration's id, then its server died
    before queuing it: once the reservation is stale a retry queues that very id, and a
    later retry returns it."""
    body = models.MigrationRequest.model_validate(api.request_for(hosts))
    request_hash = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
    reserved = "00000000-0000-4000-8000-000000000001"
    Tokens(api.journal).reserve("died", request_hash, reserved)
    with api.journal.engine.begin() as conn:
        conn.execute(
            sa.update(api_idempotency).values(created_at=datetime.now(UTC) - timedelta(minutes=5))
        )
    headers = {**api.headers(), "Idempotency-Key": "died"}
    first = api.client.post("/v1/migrations", json=api.request_for(hosts), headers=headers)
    again = api.client.post("/v1/migrations", json=api.request_for(hosts), headers=headers)
    assert (first.status_code, first.json()["id"]) == (201, reserved)
    assert (again.status_code, again.json()["id"]) == (200, reserved)
    assert [m.id for m in api.journal.list()] == [reserved]


def test_queue_submit_with_a_journaled_id_returns_it_and_writes_nothing(
    api: Api, hosts: Hosts
) -> None:
    queue = Queue(api.journal)
    chosen = "00000000-0000-4000-8000-000000000002"
    fields = {"src": hosts.src_uri, "dst": hosts.dst_uri, "protocol": 3, "flags": 0}
    first = queue.submit(domain="vm1", bandwidth=0, migration_id=chosen, **fields)
    before = dump(api.journal)
    second = queue.submit(domain="other", bandwidth=0, migration_id=chosen, **fields)
    assert second == first
    assert dump(api.journal) == before


def test_a_downtime_request_through_the_api_lets_a_busy_migration_complete(
    api: Api, hosts: Hosts, worker: Worker
) -> None:
    """``vm2`` dirties its memory twice as fast as the link carries it: Perform never ends
    until the downtime the request allows covers a whole pass (docs/convergence.md)."""
    hosts.src.define("vm2", memory_mib=4, dirty_mib_s=16)
    body = {**api.request_for(hosts, "vm2"), "bandwidth": 8}
    made = api.client.post("/v1/migrations", json=body, headers=api.headers()).json()
    deadline = time.monotonic() + 30
    while api.journal.get(made["id"]).state is not State.PERFORMING:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    path = f"/v1/migrations/{made['id']}/downtime"
    assert api.client.post(path, json={"ms": 1}, headers=api.headers("read")).status_code == 403
    assert api.client.post(path, json={"ms": 0}, headers=api.headers()).status_code == 422
    asked = api.client.post(path, json={"ms": 100_000}, headers=api.headers())
    assert asked.status_code == 202, asked.text
    assert asked.json()["kind"] == "downtime" and asked.json()["value"] == 100_000
    assert api.wait_for_end(made["id"])["state"] == "CONFIRMED"
    [applied] = inspect.show(api.journal, made["id"])["requests"]
    assert applied["id"] == asked.json()["id"] and applied["outcome"] == "applied"
    before = {k: rows for k, rows in dump(api.journal).items() if k != "workers"}
    late = api.client.post(
        f"/v1/migrations/{made['id']}/speed", json={"mib": 5}, headers=api.headers()
    )
    assert late.status_code == 422 and "not in Perform" in late.json()["detail"]
    assert {k: rows for k, rows in dump(api.journal).items() if k != "workers"} == before
