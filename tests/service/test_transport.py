"""TLS through uvicorn's options, and CORS off unless origins are configured."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from migrator.journal.store import Journal
from migrator.service.app import create_app
from tests.service.server import Server

PREFLIGHT = {"Origin": "https://console.example", "Access-Control-Request-Method": "GET"}


def _certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_the_server_speaks_https_with_the_certificate_it_was_given(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'journal.db'}"
    Journal.open(db).close()
    cert, _key = _certificate(tmp_path)
    server = Server(db, certificate=str(cert)).start()
    try:
        got = httpx.get(f"{server.base}/healthz", verify=str(cert), timeout=10)
        with_http = _plain(server.port)
    finally:
        server.kill()
    assert got.json() == {"status": "ok"}
    assert with_http is None


def _plain(port: int) -> int | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code
    except httpx.TransportError:
        return None


def test_cross_origin_requests_are_refused_unless_the_origin_is_configured(tmp_path: Path) -> None:
    with Journal.open(f"sqlite:///{tmp_path / 'journal.db'}") as journal:
        with TestClient(create_app(journal)) as closed:
            refused = closed.options("/v1/migrations", headers=PREFLIGHT)
        app = create_app(journal, cors_origins=["https://console.example"])
        with TestClient(app) as opened:
            allowed = opened.options("/v1/migrations", headers=PREFLIGHT)
    assert "access-control-allow-origin" not in refused.headers
    assert allowed.headers["access-control-allow-origin"] == "https://console.example"
