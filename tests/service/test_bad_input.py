"""Requests without a token, with a read token on an action, with a body of 10 MB or with
malformed JSON or unknown fields get 401, 403, 413 and 422 as problem documents, and
change nothing in the journal."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import Hosts
from tests.service.conftest import Api, dump

TEN_MB = 10 * 1024 * 1024


def _queue(api: Api, hosts: Hosts) -> str:
    made = api.client.post("/v1/migrations", json=api.request_for(hosts), headers=api.headers())
    assert made.status_code == 201
    return str(made.json()["id"])


Send = Callable[[Api, Hosts, str], httpx.Response]

CASES: dict[str, tuple[int, Send, str]] = {
    "no token": (
        401,
        lambda api, hosts, _mid: api.client.post("/v1/migrations", json=api.request_for(hosts)),
        "a bearer token is required",
    ),
    "a token the journal does not hold": (
        401,
        lambda api, hosts, mid: api.client.post(
            f"/v1/migrations/{mid}/abort", headers={"Authorization": "Bearer mgr_x_guess"}
        ),
        "the bearer token is not valid",
    ),
    "no token on a read": (
        401,
        lambda api, _hosts, _mid: api.client.get("/v1/migrations"),
        "a bearer token is required",
    ),
    "a read token on submit": (
        403,
        lambda api, hosts, _mid: api.client.post(
            "/v1/migrations", json=api.request_for(hosts), headers=api.headers("read")
        ),
        "this token's scope is read: the action needs operate",
    ),
    "a read token on abort": (
        403,
        lambda api, _hosts, mid: api.client.post(
            f"/v1/migrations/{mid}/abort", headers=api.headers("read")
        ),
        "this token's scope is read: the action needs operate",
    ),
    "a body of 10 MB": (
        413,
        lambda api, _hosts, _mid: api.client.post(
            "/v1/migrations",
            content=b"{" + b" " * TEN_MB + b"}",
            headers={**api.headers(), "Content-Type": "application/json"},
        ),
        "the request body is over 65536 bytes",
    ),
    "a body of 10 MB sent without a length": (
        413,
        lambda api, _hosts, _mid: api.client.post(
            "/v1/migrations",
            content=iter([b"{", b" " * TEN_MB, b"}"]),
            headers={**api.headers(), "Content-Type": "application/json"},
        ),
        "the request body is over 65536 bytes",
    ),
    "malformed JSON": (
        422,
        lambda api, _hosts, _mid: api.client.post(
            "/v1/migrations",
            content=b'{"domain": "vm1", "src":',
            headers={**api.headers(), "Content-Type": "application/json"},
        ),
        "JSON decode error",
    ),
    "an unknown field": (
        422,
        lambda api, hosts, _mid: api.client.post(
            "/v1/migrations", json={**api.request_for(hosts), "force": True}, headers=api.headers()
        ),
        "body.force: Extra inputs are not permitted",
    ),
    "an unknown field on resolve": (
        422,
        lambda api, _hosts, mid: api.client.post(
            f"/v1/migrations/{mid}/resolve",
            json={"running_on": "src", "really": 1},
            headers=api.headers(),
        ),
        "body.really: Extra inputs are not permitted",
    ),
    "an unknown query parameter": (
        422,
        lambda api, _hosts, _mid: api.client.get(
            "/v1/migrations", params={"stat": "QUEUED"}, headers=api.headers()
        ),
        "query.stat: unknown query parameter",
    ),
    "a filter given twice": (
        422,
        lambda api, _hosts, _mid: api.client.get(
            "/v1/migrations?domain=a&domain=b", headers=api.headers()
        ),
        "query.domain: given more than once",
    ),
    "an unknown flag": (
        422,
        lambda api, hosts, _mid: api.client.post(
            "/v1/migrations",
            json={**api.request_for(hosts), "flags": ["warp"]},
            headers=api.headers(),
        ),
        "flags: unknown flag 'warp'",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_request_is_refused_as_a_problem_and_changes_nothing(
    api: Api, hosts: Hosts, case: str
) -> None:
    status, send, detail = CASES[case]
    mid = _queue(api, hosts)
    before = dump(api.journal)
    got = send(api, hosts, mid)
    assert got.status_code == status, got.text
    assert got.headers["content-type"] == "application/problem+json"
    body = json.loads(got.content)
    assert body["status"] == status
    assert detail in body["detail"]
    assert dump(api.journal) == before


def test_an_unexpected_error_is_a_problem_document_too(api: Api) -> None:
    app = api.client.app
    app.state.service.coordinator.abort = None  # type: ignore[attr-defined] # a route that breaks
    with TestClient(app, raise_server_exceptions=False) as client:
        got = client.post("/v1/migrations/abc/abort", headers=api.headers())
    assert got.status_code == 500
    assert got.headers["content-type"] == "application/problem+json"
    assert got.json()["detail"] == "unexpected TypeError (the server's log has where)"
