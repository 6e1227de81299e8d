"""The shape of a test host's state files, checked when they are read (what every hook
relies on; an arriving v1 domain has no memory size or checksum yet): a hand-edited file
(``{"state": 5}``, a fault without its ``count``) is refused in one line naming what is
wrong, never found later as a ``KeyError`` in the middle of a step."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from migrator.drivers.api import DomainState
from migrator.drivers.test.faults import FaultMode

_STATES = frozenset(str(s) for s in DomainState)
_MODES = frozenset(str(m) for m in FaultMode)


def problem(data: Mapping[str, Any]) -> str | None:
    """What is wrong with a state file's domains and faults, or None."""
    for name, dom in data.get("domains", {}).items():
        found = _domain_problem(dom)
        if found is not None:
            return f"domain {_short(name)}: {found}"
    for step, fault in data.get("faults", {}).items():
        found = _fault_problem(fault)
        if found is not None:
            return f"fault of {_short(step)}: {found}"
    return None


def _domain_problem(dom: Mapping[str, Any]) -> str | None:
    if dom.get("state") not in _STATES:
        return (
            f"'state' must be one of {', '.join(sorted(_STATES))}, not {_short(dom.get('state'))}"
        )
    memory = dom.get("memory_mib")
    if memory is not None and not _whole(memory, low=1):
        return f"'memory_mib' must be a whole number >= 1 or null, not {_short(memory)}"
    if not isinstance(dom.get("image"), str):
        return f"'image' must be text, not {_short(dom.get('image'))}"
    if dom.get("checksum") is not None and not isinstance(dom.get("checksum"), str):
        return f"'checksum' must be text or null, not {_short(dom.get('checksum'))}"
    lease = dom.get("lease")
    if not isinstance(lease, dict) or not isinstance(lease.get("held"), bool):
        return f"'lease' must be an object with 'held' true or false, not {_short(lease)}"
    if dom.get("job") is not None and not isinstance(dom.get("job"), str):
        return f"'job' must be a migration id or null, not {_short(dom.get('job'))}"
    return None


def _fault_problem(fault: Any) -> str | None:
    if not isinstance(fault, dict):
        return f"a JSON object expected, not {_short(fault)}"
    if fault.get("mode") not in _MODES:
        return f"'mode' must be one of {', '.join(sorted(_MODES))}, not {_short(fault.get('mode'))}"
    missing = {"seconds", "message", "count"} - set(fault)
    if missing:
        return f"{', '.join(sorted(missing))} missing"
    seconds, count = fault["seconds"], fault["count"]
    if seconds is not None and not _seconds(seconds):
        return f"'seconds' must be a number >= 0 or null, not {_short(seconds)}"
    if count is not None and not _whole(count, low=1):
        return f"'count' must be a whole number >= 1 or null, not {_short(count)}"
    if fault["message"] is not None and not isinstance(fault["message"], str):
        return f"'message' must be text or null, not {_short(fault['message'])}"
    return None


def _whole(value: Any, *, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _seconds(value: Any) -> bool:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and math.isfinite(value) and value >= 0


def _short(value: Any) -> str:
    """A value as the message shows it: its repr, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
