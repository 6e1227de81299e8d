"""Throughput against concurrency, one panel per database, as a PNG (matplotlib: ``bench`` extra).

    python -m tests.benchmarks.plot RESULTS.json OUT.png

redraws the picture from a ``bench_all --json`` file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

STYLE = {
    "engine": ("migrator engine", "o-"),
    "ceiling": ("raw INSERT+COMMIT ceiling (10 commits)", "s--"),
    "dbos": ("DBOS Transact, five-step workflow", "^-."),
}
TITLE = {"sqlite": "SQLite (file, synchronous=FULL)", "postgresql": "PostgreSQL (local)"}


def draw(throughput: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in ("sqlite", "postgresql") if n in throughput]
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.5), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for kind, (label, fmt) in STYLE.items():
            by = throughput[name].get(kind)
            if not by:
                continue
            points = sorted((int(t), float(v)) for t, v in by.items())
            ax.plot([t for t, _ in points], [v for _, v in points], fmt, label=label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(throughput["threads"], [str(t) for t in throughput["threads"]])
        ax.set_xlabel("threads (migrations in flight in one process)")
        ax.set_ylabel("migrations (workflows) per second")
        ax.set_title(TITLE[name])
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    draw(json.loads(Path(sys.argv[1]).read_text())["throughput"], Path(sys.argv[2]))
