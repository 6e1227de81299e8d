"""The OpenAPI document of the running application, as committed in docs/openapi.json.

Regenerate it: ``python -m tests.service.openapi > docs/openapi.json``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from migrator.journal.store import Journal
from migrator.service.app import create_app


def document() -> dict[str, Any]:
    """The document a server on any journal serves (it does not depend on the journal)."""
    with tempfile.TemporaryDirectory() as tmp, Journal.open(f"sqlite:///{Path(tmp) / 'j.db'}") as j:
        return create_app(j).openapi()


def text() -> str:
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(text())
