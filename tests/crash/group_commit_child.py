"""A process migrating in many threads at once, for ``test_group_commit_kill``.

    python -m tests.crash.group_commit_child DB SIDE_FILE THREADS

Every thread shares one ``Coordinator`` and migrates domains between its own two
``null://`` hosts, over and over, until the process is killed. Each driver hook appends
``hook MIGRATION STEP ATTEMPT`` to ``SIDE_FILE`` when it is called, and an observer
appends ``event MIGRATION SEQ`` for each event it is told was committed: each line with one
``write`` on an ``O_APPEND`` descriptor, so a line written before a SIGKILL is in the file.
"""

from __future__ import annotations

import os
import sys
import threading
import uuid
from typing import Any

from migrator import Coordinator, Journal
from migrator.drivers.null import NullDriver
from migrator.engine.observers import HookEvent


class Recording(NullDriver):
    """A ``null://`` host whose every hook is written down before it does anything."""

    side: int = -1

    def _called(self, ctx: Any) -> None:
        os.write(self.side, f"hook {ctx.migration_id} {ctx.step} {ctx.attempt}\n".encode())

    def begin(self, ctx: Any, *args: Any) -> Any:
        self._called(ctx)
        return super().begin(ctx, *args)

    def prepare(self, ctx: Any, *args: Any) -> Any:
        self._called(ctx)
        return super().prepare(ctx, *args)

    def perform(self, ctx: Any, *args: Any) -> Any:
        self._called(ctx)
        return super().perform(ctx, *args)

    def finish(self, ctx: Any, *args: Any) -> Any:
        self._called(ctx)
        return super().finish(ctx, *args)

    def confirm(self, ctx: Any, *args: Any) -> Any:
        self._called(ctx)
        return super().confirm(ctx, *args)


def main() -> None:
    db, side, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    Recording.side = os.open(side, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def observed(hook_event: HookEvent) -> None:
        event = hook_event.event
        os.write(Recording.side, f"event {event.migration_id} {event.seq}\n".encode())

    journal = Journal.open(db)
    coordinator = Coordinator(journal, hooks=[observed])

    def work() -> None:
        src, dst = Recording(f"null://{uuid.uuid4()}"), Recording(f"null://{uuid.uuid4()}")
        n = 0
        while True:
            n += 1
            src.define(f"vm{n}")
            coordinator.migrate(f"vm{n}", src=src, dst=dst)

    for _ in range(threads):
        threading.Thread(target=work, daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
