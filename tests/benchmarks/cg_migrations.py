"""N sequential migrations between two ``null://`` hosts, for callgrind (run on demand).

    valgrind --tool=callgrind python -m tests.benchmarks.cg_migrations N URL

The instructions per migration are the difference between two runs (say N = 40 and 140)
divided by the difference of N: start-up and imports cancel out (docs/performance.md).
"""

from __future__ import annotations

import sys
import uuid

from migrator import Coordinator, Journal
from migrator.drivers.null import NullDriver


def main() -> None:
    n, url = int(sys.argv[1]), sys.argv[2]
    with Journal.open(url, upgrade=True) as journal:
        coordinator = Coordinator(journal)
        tag = uuid.uuid4().hex[:6]
        src, dst = NullDriver(f"null://a-{tag}"), NullDriver(f"null://b-{tag}")
        try:
            for k in range(n):
                src.define(f"vm{k}")
                coordinator.migrate(f"vm{k}", src=src, dst=dst)
        finally:
            coordinator.close()


if __name__ == "__main__":
    main()
