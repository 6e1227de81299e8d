"""Hooks: observers given each committed hook event, and ``CommandHook``.

What a hook is told (:class:`HookEvent`, which hook names one journal event gives) is the
engine's (``migrator/engine/observers.py``; ``migrator.HookEvent`` and ``migrator.HookName``
for embedders), and so is the
delivery thread that tells it (``engine/delivery.py``); this module adds the hook behind
``--hook-command``. A hook observes, it never steers: see ``docs/embedding.md``.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess

from migrator.engine.observers import HookEvent
from migrator.errors import HookCommandFailed
from migrator.traceids import traceparent

COMMAND_TIMEOUT = 10.0
"""Seconds a hook command may run. It delays no step (hooks are called by the delivery
thread), only the delivery of the hook events after it."""
STDERR_MAX = 500


class CommandHook:
    """Run a command for each hook event, like libvirt's hook scripts.

    The command (split as a shell would, but run without a shell) gets two more
    arguments, the hook name and the migration id, and the event as JSON on stdin (the
    shape of :meth:`HookEvent.as_dict`). Text from drivers reaches it only on stdin,
    never on its command line. Its environment holds ``TRACEPARENT``, the W3C trace
    context of the migration's trace (docs/tracing.md).
    """

    def __init__(self, command: str, *, timeout: float = COMMAND_TIMEOUT) -> None:
        self.argv = shlex.split(command)
        if not self.argv:
            raise ValueError("the hook command is empty")
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"CommandHook({shlex.join(self.argv)!r})"

    def __call__(self, hook_event: HookEvent) -> None:
        payload = json.dumps(hook_event.as_dict(), ensure_ascii=True) + "\n"
        argv = [*self.argv, str(hook_event.name), hook_event.migration.id]
        env = dict(os.environ)
        parent = traceparent(hook_event.migration.trace_id)
        if parent is not None:
            env["TRACEPARENT"] = parent
        try:
            proc = subprocess.run(
                argv,
                env=env,
                input=payload.encode("ascii"),
                capture_output=True,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise HookCommandFailed(f"{self.argv[0]}: timed out after {self.timeout} s") from None
        except OSError as exc:
            raise HookCommandFailed(f"{self.argv[0]}: {exc.strerror or exc}") from None
        if proc.returncode != 0:
            said = proc.stderr.decode("utf-8", "replace").strip()[:STDERR_MAX]
            raise HookCommandFailed(f"{self.argv[0]}: exit {proc.returncode}: {said}")
