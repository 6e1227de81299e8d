"""Write ``journal-0001.db``: a journal of every failure rule and some crash recoveries.

    python -m tests.replay_corpus.make_corpus

The file is committed and replayed by ``tests/test_replay.py``: each later engine must
make the same decisions on these recorded outcomes. Regenerate it only on purpose (a new
schema revision keeps the old file and adds a new one).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

# (name, faults as (host, step, mode), failpoint)
SCENARIOS: list[tuple[str, list[tuple[str, str, str]], str | None]] = [
    ("success", [], None),
    ("begin-fails", [("a", "begin", "error")], None),
    ("prepare-fails", [("b", "prepare", "error")], None),
    ("prepare-lost-reply", [("b", "prepare", "lost-reply")], None),
    ("perform-fails", [("a", "perform", "error")], None),
    ("perform-lost-reply", [("a", "perform", "lost-reply")], None),
    ("finish-no-domain", [("b", "finish", "no-domain")], None),
    ("finish-lost-reply", [("b", "finish", "lost-reply")], None),
    ("finish-error", [("b", "finish", "error")], None),
    ("finish-in-doubt", [("b", "finish", "error"), ("b", "probe", "error")], None),
    ("confirm-stuck", [("a", "confirm", "error")], None),
    ("crash-perform-intent", [], "perform.intent"),
    ("crash-perform-recorded", [], "perform.recorded"),
    ("crash-finish-called", [], "finish.called"),
    ("crash-confirm-intent", [], "confirm.intent"),
    ("crash-prepare-recorded-prepare-fails", [("b", "prepare", "error")], "prepare.recorded"),
]


def _cli(*args: str, env: dict[str, str]) -> int:
    proc = subprocess.run(
        [sys.executable, "-m", "migrator", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.returncode


def main() -> None:
    target = HERE / "journal-0001.db"
    target.unlink(missing_ok=True)
    env = {**os.environ, "MIGRATOR_DB": f"sqlite:///{target}"}
    env.pop("MIGRATOR_FAILPOINTS", None)
    with tempfile.TemporaryDirectory() as tmp:
        for name, faults, failpoint in SCENARIOS:
            a, b = f"test://{tmp}/{name}-a", f"test://{tmp}/{name}-b"
            _cli("test-host", "define", a, name, "--memory", "1", env=env)
            for host, step, mode in faults:
                _cli(
                    "test-host",
                    "fault",
                    a if host == "a" else b,
                    "--step",
                    step,
                    "--mode",
                    mode,
                    env=env,
                )
            run_env = {**env, "MIGRATOR_FAILPOINTS": f"{failpoint}=crash"} if failpoint else env
            _cli("migrate", name, "--src", a, "--dst", b, "--live", "--timeout", "5", env=run_env)
            if failpoint:
                _cli("recover", env=env)
            print(name)
    import sqlite3

    with sqlite3.connect(target) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()


if __name__ == "__main__":
    main()
