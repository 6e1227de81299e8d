"""Worker processes under chaos (SIGKILL, SIGSTOP past the lease of owners mid-copy) keep
every invariant, the hosts' files included (``tests/workers/chaos.py``).
``MIGRATOR_CHAOS_MIGRATIONS`` makes the PostgreSQL run longer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from migrator.journal.store import Journal
from tests.workers.chaos import Rig, chaos, check_all

MIGRATIONS = int(os.environ.get("MIGRATOR_CHAOS_MIGRATIONS", "60"))


@pytest.mark.timeout(120 + MIGRATIONS)
def test_three_workers_on_postgres_survive_kills_and_stops(pg_url: str, tmp_path: Path) -> None:
    Journal.open(pg_url, upgrade=True).close()
    rig = Rig(pg_url, tmp_path)
    kills = max(10, MIGRATIONS // 6)
    figures = chaos(rig, migrations=MIGRATIONS, kills=kills, deadline=60 + MIGRATIONS / 2)
    check_all(rig, figures)
    print(figures.line())
    assert figures.kills >= min(kills, 5)
    assert figures.stops_in_perform >= 1


def test_two_workers_on_one_sqlite_file_survive_kills_and_stops(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'journal.db'}"
    Journal.open(url, upgrade=True).close()
    rig = Rig(url, tmp_path)
    figures = chaos(rig, migrations=24, kills=4, workers=2, kill_every=1.5, deadline=60)
    check_all(rig, figures)
    print(figures.line())
    assert figures.stops_in_perform >= 1
