"""``migrator serve`` and ``migrator token``: tokens made on the command line are what the
server checks; no listening beyond loopback without tokens; bad options are one line and
exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from migrator.journal.store import Journal
from migrator.journal.tokens import Scope, Tokens
from tests.conftest import run_cli
from tests.service.server import Server


def _db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'journal.db'}"
    Journal.open(url).close()
    return url


def test_a_created_token_is_printed_once_and_only_its_hash_is_kept(tmp_path: Path) -> None:
    db = _db(tmp_path)
    made = run_cli("token", "create", "--scope", "read", "--name", "dash", "--db", db)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("mgr_")
    assert "it is not shown again" in made.stderr
    assert token.encode() not in (tmp_path / "journal.db").read_bytes()
    with Journal.open(db) as journal:
        assert Tokens(journal).scope_of(token) is Scope.READ
        assert [t.name for t in Tokens(journal).list()] == ["dash"]


def test_serve_refuses_a_non_loopback_address_without_tokens(tmp_path: Path) -> None:
    got = run_cli("serve", "--db", _db(tmp_path), "--listen", "0.0.0.0:8080")
    assert got.returncode == 2
    assert got.stderr.count("\n") == 1
    assert "refusing to listen on 0.0.0.0 without tokens" in got.stderr


def test_serve_refuses_a_listen_address_that_is_not_host_and_port(tmp_path: Path) -> None:
    got = run_cli("serve", "--db", _db(tmp_path), "--listen", "localhost")
    assert got.returncode == 2
    assert got.stderr == (
        "migrator: error: --listen 'localhost': give HOST:PORT, e.g. 127.0.0.1:8080\n"
    )


def test_a_server_with_tokens_answers_only_a_request_that_carries_one(tmp_path: Path) -> None:
    db = _db(tmp_path)
    token = run_cli("token", "create", "--scope", "operate", "--db", db).stdout.strip()
    server = Server(db).start()
    try:
        bare = httpx.get(f"{server.base}/v1/migrations", timeout=5)
        bearing = httpx.get(
            f"{server.base}/v1/migrations", headers={"Authorization": f"Bearer {token}"}, timeout=5
        )
    finally:
        server.kill()
    assert bare.status_code == 401
    assert bare.headers["www-authenticate"] == 'Bearer realm="migrator"'
    assert bearing.json() == {"items": [], "next_cursor": None}


def test_a_revoked_token_is_listed_no_more_and_refused_at_once(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from migrator.service.app import create_app

    db = _db(tmp_path)
    kept = run_cli("token", "create", "--scope", "read", "--name", "kept", "--db", db)
    gone = run_cli("token", "create", "--scope", "operate", "--name", "gone", "--db", db)
    gone_id = gone.stdout.strip().split("_")[1]
    with Journal.open(db) as journal, TestClient(create_app(journal)) as client:
        bearer = {"Authorization": f"Bearer {gone.stdout.strip()}"}
        before = client.get("/v1/migrations", headers=bearer).status_code
        revoked = run_cli("token", "revoke", gone_id, "--db", db)
        after = client.get("/v1/migrations", headers=bearer).status_code
    listed = json.loads(run_cli("token", "list", "--json", "--db", db).stdout)
    again = run_cli("token", "revoke", gone_id, "--db", db)
    assert (before, after) == (200, 401)
    assert revoked.stdout == f"token {gone_id} revoked\n"
    assert [(t["name"], t["scope"]) for t in listed] == [("kept", "read")]
    assert kept.stdout.strip().split("_")[1] == listed[0]["id"]
    assert again.returncode == 2
    assert again.stderr == (
        f"migrator: error: no token '{gone_id}' in the journal (`migrator token list`)\n"
    )
