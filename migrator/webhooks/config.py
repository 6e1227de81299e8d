"""The webhook endpoints, read from a configuration file (JSON or TOML) with a bound.

```toml
[[endpoints]]
name = "ops"                          # the cursor's key in the journal; default: from the URL
url = "https://hooks.example.com/migrator"
secret_file = "/etc/migrator/ops.secret"   # or: secret = "..."
kinds = ["ok", "error", "in_doubt"]   # optional: only these event kinds
from = "now"                          # a new endpoint: "now" (default) or "start"
```

A file that cannot be read, or that says something wrong, is a ``UsageError`` whose one
line names the file and the fault, never a secret.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from migrator.bounded import FileRefused, loads, read_text
from migrator.errors import UsageError
from migrator.records import EventKind
from migrator.redaction import redact

MAX_CONFIG_BYTES = 1 << 20
"""The largest configuration file read."""
MAX_SECRET_BYTES = 4096
"""The largest secret file read."""
MAX_ENDPOINTS = 100
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_KEYS = {"name", "url", "secret", "secret_file", "kinds", "from"}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One URL that every committed event (of ``kinds``, if given) is POSTed to."""

    name: str
    url: str
    secret: bytes
    kinds: frozenset[EventKind] | None = None
    start: str = "now"

    def __repr__(self) -> str:  # never the secret, nor a password in the URL
        return f"Endpoint({self.name!r}, {redact(self.url)!r})"

    def wants(self, kind: EventKind) -> bool:
        return self.kinds is None or kind in self.kinds


def load(path: Path) -> list[Endpoint]:
    """The endpoints of the file ``path`` (``.toml``: TOML; otherwise JSON)."""
    try:
        text = read_text(path, max_bytes=MAX_CONFIG_BYTES)
        data = _parse(text, toml=path.suffix == ".toml")
    except FileRefused as exc:
        raise UsageError(f"webhook configuration {path}: {exc}") from None
    except OSError as exc:
        raise UsageError(f"webhook configuration {path}: {exc.strerror or exc}") from None
    try:
        return endpoints(data, base=path.parent)
    except ValueError as exc:
        raise UsageError(f"webhook configuration {path}: {exc}") from None


def _parse(text: str, *, toml: bool) -> Any:
    if not toml:
        return loads(text)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FileRefused(f"not valid TOML: {exc}") from None


def endpoints(data: Any, *, base: Path) -> list[Endpoint]:
    """The endpoints of parsed configuration ``data`` (``{"endpoints": [...]}``); relative
    secret files are found under ``base``. ValueError says what is wrong."""
    if not isinstance(data, Mapping) or set(data) != {"endpoints"}:
        raise ValueError('expected one key, "endpoints", a list of endpoints')
    found = data["endpoints"]
    if not isinstance(found, list) or not 1 <= len(found) <= MAX_ENDPOINTS:
        raise ValueError(f'"endpoints" must be a list of 1 to {MAX_ENDPOINTS} endpoints')
    made = [_endpoint(item, k, base) for k, item in enumerate(found, 1)]
    names = [e.name for e in made]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"endpoint name {name!r} is used twice")
    return made


def _endpoint(item: Any, k: int, base: Path) -> Endpoint:
    if not isinstance(item, Mapping):
        raise ValueError(f"endpoint {k} is not a table/object")
    unknown = sorted(set(item) - _KEYS)
    if unknown:
        raise ValueError(f"endpoint {k}: unknown key {unknown[0]!r}")
    url = _url(item.get("url"), k)
    name = item.get("name", "url-" + hashlib.sha256(url.encode()).hexdigest()[:16])
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"endpoint {k}: name must be 1-64 letters, digits, '_', '.' or '-'")
    start = item.get("from", "now")
    if start not in ("now", "start"):
        raise ValueError(f'endpoint {k}: "from" must be "now" or "start"')
    return Endpoint(name, url, _secret(item, k, base), _kinds(item.get("kinds"), k), start)


def _url(url: Any, k: int) -> str:
    if not isinstance(url, str):
        raise ValueError(f"endpoint {k}: url is missing")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"endpoint {k}: url is not a URL: {redact(url)}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"endpoint {k}: url must be http:// or https:// with a host")
    return url


def _secret(item: Mapping[str, Any], k: int, base: Path) -> bytes:
    if ("secret" in item) == ("secret_file" in item):
        raise ValueError(f"endpoint {k}: give one of secret and secret_file")
    if "secret" in item:
        secret = item["secret"]
        if not isinstance(secret, str) or not secret:
            raise ValueError(f"endpoint {k}: secret must be a non-empty string")
        return secret.encode()
    where = item["secret_file"]
    if not isinstance(where, str) or not where:
        raise ValueError(f"endpoint {k}: secret_file must be a path")
    try:
        text = read_text(base / where, max_bytes=MAX_SECRET_BYTES).strip()
    except FileRefused as exc:
        raise ValueError(f"endpoint {k}: secret_file {where}: {exc}") from None
    except OSError as exc:
        raise ValueError(f"endpoint {k}: secret_file {where}: {exc.strerror or exc}") from None
    if not text:
        raise ValueError(f"endpoint {k}: secret_file {where} is empty")
    return text.encode()


def _kinds(kinds: Any, k: int) -> frozenset[EventKind] | None:
    if kinds is None:
        return None
    names = [kind.value for kind in EventKind]
    if not isinstance(kinds, list) or not kinds or not all(x in names for x in kinds):
        raise ValueError(f"endpoint {k}: kinds must be a list of event kinds ({', '.join(names)})")
    return frozenset(EventKind(x) for x in kinds)
