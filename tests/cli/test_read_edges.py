"""The read commands' rough edges: no journal is created by reading one, no line is padded
to the console's width in a pipe, ``took`` of a migration in flight is the time so far, and
a host URI's password is shown as ``***`` as docs/libvirt.md says."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from migrator.engine.coordinator import Coordinator
from migrator.journal.schema import events, migrations
from migrator.journal.store import Journal
from tests.conftest import ROOT, Hosts, run_cli

sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
ID = "0123abcd"
READS = [
    ("list",),
    ("list", "--json"),
    ("show", ID),
    ("export", ID),
    ("stats",),
    ("diagram", ID),
    ("replay", ID),
    ("workers",),
]


@pytest.mark.parametrize("command", READS, ids=" ".join)
def test_a_read_command_never_creates_a_journal(tmp_path: Path, command: tuple[str, ...]) -> None:
    missing = tmp_path / "nothing-here.db"
    proc = run_cli(*command, db=f"sqlite:///{missing}")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (
        f"migrator: error: no journal at {missing}: nothing was journaled there (--db or"
        " MIGRATOR_DB names the journal; a migration or `migrator db upgrade` creates it)\n"
    )
    assert not missing.exists()


def migrated(db_url: str, hosts: Hosts) -> str:
    with Journal.open(db_url) as journal:
        coordinator = Coordinator(journal)
        try:
            return coordinator.migrate("vm1", src=hosts.src, dst=hosts.dst).id
        finally:
            coordinator.close()


@sqlite_only
def test_list_and_show_pad_no_line_in_a_pipe(db_url: str, hosts: Hosts) -> None:
    mid = migrated(db_url, hosts)
    for command in (("list",), ("show", mid), ("stats",)):
        proc = run_cli(*command, db=db_url)
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert len(lines) >= 2
        assert [line for line in lines if line.endswith(" ")] == [], command


def in_flight(db_url: str, hosts: Hosts, *, ago: timedelta) -> str:
    """A migration queued, not ended, whose every row and event is ``ago`` old."""
    with Journal.open(db_url) as journal:
        coordinator = Coordinator(journal)
        try:
            mid = coordinator.submit("vm1", src=hosts.src, dst=hosts.dst).id
        finally:
            coordinator.close()
        with journal.engine.begin() as conn:
            m, e = migrations.c, events.c
            [(created, updated)] = conn.execute(
                sa.select(m.created_at, m.updated_at).where(m.id == mid)
            ).all()
            conn.execute(
                migrations.update()
                .where(m.id == mid)
                .values(created_at=created - ago, updated_at=updated - ago)
            )
            for seq, at in conn.execute(sa.select(e.seq, e.at).where(e.migration_id == mid)):
                conn.execute(
                    events.update().where(e.migration_id == mid, e.seq == seq).values(at=at - ago)
                )
    return mid


def test_took_of_a_migration_in_flight_is_the_time_so_far(db_url: str, hosts: Hosts) -> None:
    mid = in_flight(db_url, hosts, ago=timedelta(hours=1))
    proc = run_cli("show", mid, db=db_url)
    assert proc.returncode == 0, proc.stderr
    [took] = [line for line in proc.stdout.splitlines() if line.startswith("took")]
    found = re.fullmatch(r"took\s+([\d.]+) s so far \(not ended; last event at ([\d.]+) s\)", took)
    assert found, took
    assert float(found[1]) >= 3600 > float(found[2])


@sqlite_only
def test_show_prints_a_hosts_user_and_hides_its_password(db_url: str, hosts: Hosts) -> None:
    """docs/libvirt.md: "A password in a URI is never kept: the journal, `show` and every
    message print it as `***`. A user name is kept"."""
    hosts.src.uri = f"test://bob:s3cret@a.example{hosts.src.uri.removeprefix('test://')}"
    mid = migrated(db_url, hosts)
    shown = run_cli("show", mid, db=db_url).stdout + run_cli("list", db=db_url).stdout
    assert "test://bob:***@a.example" in shown and "s3cret" not in shown
    exported = json.loads(run_cli("export", mid, db=db_url).stdout)
    assert exported["migration"]["src"].startswith("test://bob:***@a.example")
    docs = (ROOT / "docs" / "libvirt.md").read_text()
    assert "A password in a URI is never kept: the journal, `show` and every message" in docs
    assert "print it as `***`.\nA user name is kept" in docs
