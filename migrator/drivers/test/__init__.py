"""``test:///ABS/DIR``: a simulated host whose whole state lives in DIR, with fault injection.

Like libvirt's test driver, but persistent: the state outlives every process, so a
coordinator can be killed and restarted against the same hosts, and ``migrator test-host``
can inspect them meanwhile. ``DIR/host.json`` holds the identity and the faults::

    {"host_id": uuid, "faults": {step: {mode, seconds, message, count}}}

and ``DIR/domains/<name>.<hash>.json`` one domain name each: the domain and the records of
the unfinished migrations that act on it here (``shards.py``)::

    {"domains": {name: {state, memory_mib, image, checksum, lease: {token, held}, job,
                        state_before_job, outgoing: {migration id: "completed"}, ...}},
     "calls": {memo key: recorded result}, "fences": {migration id: highest fence},
     "departed": {migration id: name}, "ended": {migration id: age}}

Every read-modify-write holds an exclusive ``flock`` on ``DIR/.lock`` and replaces the file
it changes atomically; long work (the copy in Perform, the sleeps of faults) runs without
the lock. A domain's memory is an image file under ``DIR/images/``; Perform copies
it to the destination's ``images/incoming-<migration id>.img`` and Finish checks its sha256.

The URI may restrict the protocols the host speaks: ``test:///ABS/DIR?protocols=1,2``
(default ``1,2,3``; v3 comes with tunnelling). The v2 and v1 hooks share the v3 machinery:
their Perform ends (removes) the source domain once it sent it, remembering the transfer
as ``"completed"`` for ``probe``, and resumes it on failure.

Fault modes, per step (``begin``... ``confirm``, ``probe``): ``error`` raises having done
nothing; ``lost-reply`` does the work, then raises; ``no-domain`` (Finish only) makes
Finish(cancelled=0) drop the incoming copy and report no domain; ``hang`` never returns
before ``ctx.deadline`` + 1 s; ``slow`` sleeps ``seconds`` first. A fault with a ``count``
fires that many times, else until cleared.

Modules: ``shards.py`` (the state files, ``forget``), ``checks.py`` (their shape, checked
on every read), ``host.py`` (domains, faults, fences,
the ``test-host`` helpers), ``v3.py`` (the five steps), ``driver.py`` (tunnelled v3, v2, v1,
``probe``), ``transfer.py`` (images and their copies), ``faults.py`` (fault modes).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from migrator.drivers.test.driver import TestDriver
    from migrator.drivers.test.faults import FaultMode

_HOMES = {
    "FaultMode": "migrator.drivers.test.faults",
    "TestDriver": "migrator.drivers.test.driver",
}
"""Imported on first use: the CLI names ``FaultMode`` without loading the driver."""

__all__ = ["FaultMode", "TestDriver"]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
