"""schemathesis against the OpenAPI document, in process on the ASGI application over a
SQLite journal: every operation (the endless event stream aside, which ``test_stream.py``
covers), with requests generated to fit the document and to break it, and every check of
schemathesis: no 500, every response (status, content type, body, headers) as documented,
auth that is not ignored, requests that break the document refused.

The examples are derandomized: the same cases on every run. A random run once met a false
positive of schemathesis's negative mode (a nullable query integer, ``since``, "broken"
into a valid integer and then reported as accepted)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from migrator.drivers.api import Driver
from migrator.drivers.registry import connect
from migrator.engine.coordinator import Coordinator
from migrator.errors import InvalidURI
from migrator.journal.store import Journal
from migrator.journal.tokens import Scope, Tokens
from migrator.service.app import create_app
from tests.conftest import Hosts
from tests.service.test_openapi import COMMITTED

EXAMPLES = 20
VALIDATION = ("body", "query.", "path.", "header.")
"""How a 422 of the request's shape begins (``loc: msg``): a request that fits the
document is refused only for what no schema says (a host that is not there, a cursor
naming no migration), never for its shape. schemathesis's own check of that
(``positive_data_acceptance``) counts every 422 as a shape error, so it is this test's."""
OPERATIONS = [
    (method.upper(), path, mode)
    for path, operations in json.loads(COMMITTED.read_text())["paths"].items()
    for method, operation in operations.items()
    for mode in GenerationMode
    if path != "/v1/events"
    # A request that breaks the document needs something to break.
    and (mode.is_positive or "parameters" in operation or "requestBody" in operation)
]


def _hosts_under(root: Path) -> Any:
    """Hosts a generated request may reach: test hosts under ``root`` only, so that a
    generated ``test:///...`` URI can write nothing elsewhere."""

    def connect_here(uri: str) -> Driver:
        if not uri.startswith(f"test://{root}/"):
            raise InvalidURI(uri=uri[:60], reason="not a host of this test")
        return connect(uri)

    return connect_here


@pytest.mark.parametrize(("method", "path", "mode"), OPERATIONS)
def test_every_operation_answers_as_documented(
    tmp_path: Path, method: str, path: str, mode: GenerationMode
) -> None:
    with Journal.open(f"sqlite:///{tmp_path / 'journal.db'}") as journal:
        _made, token = Tokens(journal).create(Scope.OPERATE)
        app = create_app(journal, connect=_hosts_under(tmp_path))
        operation = schemathesis.openapi.from_asgi("/openapi.json", app)[path][method]

        @given(operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES, deadline=None, derandomize=True,
            suppress_health_check=list(HealthCheck),
        )  # fmt: skip
        def answers_as_documented(case: Any) -> None:
            response = case.call(headers={"Authorization": f"Bearer {token}"})
            case.validate_response(response, excluded_checks=[positive_data_acceptance])
            if mode.is_positive and response.status_code == 422:
                assert not response.json()["detail"].startswith(VALIDATION), response.text

        answers_as_documented()


def test_sequences_of_calls_linked_by_their_answers_answer_as_documented(
    tmp_path: Path, hosts: Hosts
) -> None:
    """Stateful: schemathesis chains the operations by the ids their answers give (a listed
    or queued migration is then shown, aborted, resolved), on a journal that holds a
    queued and a confirmed migration to start from."""
    with Journal.open(f"sqlite:///{tmp_path / 'journal.db'}") as journal:
        coordinator = Coordinator(journal)
        try:
            hosts.src.define("vm2", memory_mib=4)
            coordinator.migrate("vm1", src=hosts.src, dst=hosts.dst)
            coordinator.submit("vm2", src=hosts.src, dst=hosts.dst)
        finally:
            coordinator.close()
        _made, token = Tokens(journal).create(Scope.OPERATE)
        app = create_app(journal, connect=_hosts_under(tmp_path))
        machine = schemathesis.openapi.from_asgi("/openapi.json", app).as_state_machine()

        found: list[str] = []

        class Calls(machine):  # type: ignore[misc,valid-type]
            def after_call(self, response: Any, case: Any) -> None:
                if response.status_code < 300 and "{migration_id}" in case.path:
                    found.append(case.path_parameters["migration_id"])

            def get_call_kwargs(self, case: Any) -> dict[str, Any]:
                return {"headers": {"Authorization": f"Bearer {token}"}}

            def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
                case.validate_response(response, excluded_checks=[positive_data_acceptance])

        Calls.run(
            settings=settings(
                max_examples=EXAMPLES, deadline=None, stateful_step_count=6,
                suppress_health_check=list(HealthCheck),
                derandomize=True,  # the same sequences each run: some reach a migration by id
            )
        )  # fmt: skip
        known = {m.id for m in journal.list()}
    assert found, "no call reached a migration by an id an answer gave"
    assert set(found) <= known
