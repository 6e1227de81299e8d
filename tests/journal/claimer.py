"""A claiming process for the claim tests: ``python -m tests.journal.claimer URL ID MAX GO``.

Waits until the file ``GO`` exists (so every claimer starts at once), then claims with
``--max-outgoing MAX`` until a claim finds nothing, and prints how many it took.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from migrator.hostlimits import HostLimits
from migrator.journal.queue import Queue
from migrator.journal.store import Journal


def main() -> None:
    url, worker_id, most, go = sys.argv[1:5]
    limits = HostLimits(max_outgoing=int(most))
    with Journal.open(url) as journal:
        queue = Queue(journal)
        while not Path(go).exists():
            time.sleep(0.01)
        taken = 0
        while queue.claim(worker_id, limits) is not None:
            taken += 1
    print(taken)


if __name__ == "__main__":
    main()
