"""Workers: processes (or threads of a controller) that claim queued migrations from a
shared journal and drive them, under per-host limits, taking over the migrations of
workers that died or stalled (docs/workers.md).

Modules: ``worker.py`` (``Worker``: the claim loop, takeover, graceful stop),
``jobs.py`` (one migration driven or taken over on its own thread) and ``fleet.py`` (the
workers as ``migrator workers`` lists them: running, stopping or dead; forgetting dead
ones).
"""

from __future__ import annotations

from migrator.workers.worker import Worker

__all__ = ["Worker"]
