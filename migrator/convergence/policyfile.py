"""Named policy defaults from a TOML file, matched by host and domain name.

```toml
[defaults]                 # every migration, unless a named policy matches
max_downtime_ms = 500

[policy.busy-databases]    # the first matching table, in file order, over [defaults]
domain = "db-*"            # globs (fnmatch) on the domain name and the host URIs
src = "*//rack1-*"
stall_iterations = 5
action = "pause"
```

A table matches when every glob it names matches; the options of a migration (CLI or
library arguments) override what the file gives. The file is read with a size cap and
refused in one line if it is not a policy file (``bounded.py``).
"""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migrator import bounded
from migrator.convergence.policy import Policy, from_dict
from migrator.errors import UsageError

MAX_BYTES = 256 * 1024
MATCH_KEYS = ("domain", "src", "dst")


@dataclass(frozen=True, slots=True)
class Named:
    name: str
    match: dict[str, str]
    policy: Policy


@dataclass(frozen=True, slots=True)
class PolicyFile:
    defaults: Policy
    named: tuple[Named, ...]

    def lookup(self, *, domain: str, src: str, dst: str) -> tuple[str | None, Policy]:
        """The name of the first matching table (None: the defaults) and its policy."""
        subject = {"domain": domain, "src": src, "dst": dst}
        for entry in self.named:
            if all(fnmatch.fnmatchcase(subject[k], glob) for k, glob in entry.match.items()):
                return entry.name, entry.policy.over(self.defaults)
        return None, self.defaults


def load(path: Path) -> PolicyFile:
    """The policy file at ``path``; a UsageError names the file and what is wrong."""
    where = f"policy file {path}"
    try:
        text = bounded.read_text(path, max_bytes=MAX_BYTES)
    except (OSError, bounded.FileRefused) as exc:
        raise UsageError(f"{where}: {exc.strerror if isinstance(exc, OSError) else exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{where}: not TOML: {exc}") from None
    return parse(data, where=where)


def parse(data: Mapping[str, Any], *, where: str = "policy file") -> PolicyFile:
    extra = sorted(set(data) - {"defaults", "policy"})
    if extra:
        raise UsageError(f"{where}: unknown table {extra[0]!r}; expected [defaults], [policy.NAME]")
    defaults = from_dict(_table(data.get("defaults", {}), f"{where} [defaults]"))
    named = []
    for name, table in _table(data.get("policy", {}), f"{where} [policy]").items():
        here = f"{where} [policy.{name}]"
        values = dict(_table(table, here))
        match = {k: values.pop(k) for k in MATCH_KEYS if k in values}
        for key, glob in match.items():
            if not isinstance(glob, str) or not glob:
                raise UsageError(f"{here}: {key} must be a non-empty glob, not {glob!r}")
        named.append(Named(name, match, from_dict(values, where=here)))
    return PolicyFile(defaults, tuple(named))


def _table(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise UsageError(f"{where}: must be a table, not {type(value).__name__}")
    return value
