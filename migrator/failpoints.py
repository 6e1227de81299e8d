"""Failpoints: deterministic crash injection for the crash matrix (a testing facility).

``MIGRATOR_FAILPOINTS="perform.intent=crash,finish.called=crash"`` makes the process die
with ``os._exit`` (no clean-up, like SIGKILL) when it reaches a named point:

- ``<step>.intent``: after the step's intent is committed, before the driver is called;
- ``<step>.called``: after the driver returned, before the outcome is committed;
- ``<step>.recorded``: after the outcome is committed.

Inert unless the variable is set: ``hit`` then costs one dictionary lookup.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

ENV_VAR = "MIGRATOR_FAILPOINTS"
CRASH_EXIT_CODE = 137
POINTS = ("intent", "called", "recorded")
ACTIONS = ("crash", "raise")


class Crash(BaseException):
    """Raised by a failpoint armed with ``raise``: an in-process stand-in for a crash.

    A BaseException, so no ``except Exception`` on the way up can mistake it for a failure
    to handle; tests catch it and then recover, as a restarted coordinator would.
    """


def parse(spec: str) -> dict[str, str]:
    """Parse ``name=action,...``; raise ValueError on anything else."""
    points: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, action = item.partition("=")
        if not sep or action not in ACTIONS or name.rpartition(".")[2] not in POINTS:
            raise ValueError(
                f"bad failpoint {item!r}; expected <step>.<intent|called|recorded>=crash|raise"
            )
        points[name] = action
    return points


def active(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    return parse((os.environ if environ is None else environ).get(ENV_VAR, ""))


def hit(name: str, armed: Mapping[str, str] | None = None) -> None:
    """Die at once if ``name`` is armed (in ``armed``, else in the environment)."""
    points = active() if armed is None else armed
    action = points.get(name)
    if action == "crash":
        os._exit(CRASH_EXIT_CODE)
    if action == "raise":
        raise Crash(name)
