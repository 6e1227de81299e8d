"""The dashboard at ``/``: static HTML, JavaScript and CSS shipped in the package
(``dashboard/``), no build step and nothing from another site. It reads the API and the
event stream like any client, with the token the operator types in (kept in the page's
session storage)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

ROOT = Path(str(resources.files("migrator.service") / "dashboard"))
router = APIRouter(include_in_schema=False)
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self';"
    " connect-src 'self'; frame-ancestors 'none'"
)


@router.get("/")
def index() -> FileResponse:
    return FileResponse(ROOT / "index.html", headers={"Content-Security-Policy": CSP})


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/dashboard", StaticFiles(directory=ROOT), name="dashboard")
