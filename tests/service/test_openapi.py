"""The OpenAPI 3.1 document committed in docs/openapi.json is the one the server serves."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from migrator.journal.store import Journal
from migrator.service.app import create_app
from tests.conftest import ROOT
from tests.service import openapi

COMMITTED = ROOT / "docs" / "openapi.json"


def test_the_committed_document_is_the_running_servers(db_url: str) -> None:
    with Journal.open(db_url) as journal, TestClient(create_app(journal)) as client:
        served = client.get("/openapi.json").json()
    assert served["openapi"].startswith("3.1")
    assert json.loads(COMMITTED.read_text()) == served, (
        "docs/openapi.json is out of date: python -m tests.service.openapi > docs/openapi.json"
    )
    assert openapi.text() == COMMITTED.read_text()


def test_every_route_under_v1_declares_its_problems_and_bearer_auth() -> None:
    document = openapi.document()
    for path, operations in document["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            assert operation["security"] == [{"HTTPBearer": []}], (method, path)
            assert "application/problem+json" in operation["responses"]["401"]["content"]
