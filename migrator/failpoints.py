"""Failpoints: deterministic crash injection for the crash matrix (a testing facility).

A :class:`Failpoints` maps point names to actions; the engine is handed one
(``Coordinator(journal, failpoints=...)``) and hits its points as it goes:

- ``<step>.intent``: after the step's intent is committed, before the driver is called;
- ``<step>.called``: after the driver returned, before the outcome is committed;
- ``<step>.recorded``: after the outcome is committed;
- ``perform.underway``, ``postcopy.underway``: at a progress report of a running Perform,
  before and after a switch to post-copy (docs/postcopy.md).

``crash`` makes the process die with ``os._exit`` (no clean-up, like SIGKILL); ``raise``
raises :class:`Crash`, an in-process stand-in; ``postcopy`` (on ``perform.underway``
only) asks a post-copy capable migration to switch as soon as its transfer is underway.
The command line builds its failpoints once, from
``MIGRATOR_FAILPOINTS="perform.intent=crash,finish.called=crash"``
(:meth:`Failpoints.from_env`); nothing else reads the environment. With none armed, a hit
costs one dictionary lookup.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from migrator.errors import UsageError

ENV_VAR = "MIGRATOR_FAILPOINTS"
CRASH_EXIT_CODE = 137
POINTS = ("intent", "called", "recorded")
UNDERWAY = "underway"
"""A point hit at Perform's progress reports (``perform.underway``, ``postcopy.underway``)."""
ACTIONS = ("crash", "raise", "postcopy")


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
        point = name.rpartition(".")[2]
        if not sep or action not in ACTIONS or point not in (*POINTS, UNDERWAY):
            raise ValueError(
                f"bad failpoint {item!r}; expected"
                " <step>.<intent|called|recorded|underway>=crash|raise|postcopy"
            )
        if action == "postcopy" and name != "perform.underway":
            raise ValueError(f"bad failpoint {item!r}: postcopy only on perform.underway")
        points[name] = action
    return points


def active(environ: Mapping[str, str]) -> dict[str, str]:
    """The failpoints ``environ`` arms (ValueError if its variable is malformed)."""
    return parse(environ.get(ENV_VAR, ""))


class Failpoints:
    """The armed points, by name; ``armed`` may be any mapping (replay counts hits)."""

    __slots__ = ("armed",)

    def __init__(self, armed: Mapping[str, str] | None = None) -> None:
        self.armed: Mapping[str, str] = {} if armed is None else armed

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Failpoints:
        """The failpoints ``MIGRATOR_FAILPOINTS`` arms; a malformed value is a UsageError."""
        try:
            return cls(active(os.environ if environ is None else environ))
        except ValueError as exc:
            raise UsageError(f"{ENV_VAR}: {exc}") from None

    def __bool__(self) -> bool:
        return bool(self.armed)

    def covers(self, step: str, point: str) -> bool:
        """Whether ``<step>.<point>`` is armed (counts no hit)."""
        if not self.armed:
            return False
        name = f"{step}.{point}"
        return any(key == name for key in self.armed)

    def asks(self, step: str, point: str, action: str) -> bool:
        """Whether ``<step>.<point>`` is armed with ``action`` (not a crash: a request)."""
        return bool(self.armed) and self.armed.get(f"{step}.{point}") == action

    def hit(self, step: str, point: str) -> None:
        """Die at once if ``<step>.<point>`` is armed with ``crash``; raise :class:`Crash` if
        with ``raise``. With none armed, no name is even built (the engine's hot path)."""
        if not self.armed:
            return
        name = f"{step}.{point}"
        action = self.armed.get(name)
        if action == "crash":
            os._exit(CRASH_EXIT_CODE)
        if action == "raise":
            raise Crash(name)


INERT = Failpoints()
"""No point armed: what a coordinator gets unless told otherwise."""
