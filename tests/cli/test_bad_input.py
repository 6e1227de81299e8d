"""Bad input, end to end: the real CLI refuses it with one line on stderr and exit 2
(docs/cli.md, "Exit codes"), without a traceback, and changes nothing: the journal and the hosts are
byte-for-byte as before. Also: Ctrl-C in the middle of a step.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from migrator.engine.coordinator import Coordinator
from migrator.journal.store import Journal
from migrator.states import State
from tests.conftest import ROOT, Hosts, host_files, run_cli

EXIT_USAGE, EXIT_INTERRUPTED = 2, 130


@dataclass
class Seeded:
    """A SQLite journal holding one earlier migration, and the two hosts it ran between."""

    url: str
    path: Path
    hosts: Hosts

    def snapshot(self) -> tuple[list[str] | None, bytes | None, bytes | None]:
        """The journal's full SQL dump and both hosts' state files, byte for byte."""
        dump = None
        if self.path.exists():
            conn = sqlite3.connect(self.path)
            try:
                dump = list(conn.iterdump())
            finally:
                conn.close()
        return dump, _host_bytes(self.hosts.src.dir), _host_bytes(self.hosts.dst.dir)


def _host_bytes(host_dir: Path) -> bytes | None:
    return host_files(host_dir)


@pytest.fixture
def seeded(tmp_path: Path, hosts: Hosts) -> Seeded:
    """``vm1`` runs on the source; ``old`` was migrated to the destination, journaled."""
    path = tmp_path / "journal.db"
    url = f"sqlite:///{path}"
    hosts.src.define("old", memory_mib=1)
    with Journal.open(url) as journal:
        coordinator = Coordinator(journal)
        try:
            old = coordinator.migrate("old", src=hosts.src, dst=hosts.dst)
        finally:
            coordinator.close()
    assert old.state is State.CONFIRMED
    return Seeded(url, path, hosts)


def assert_refused(proc: subprocess.CompletedProcess[str], *, mentions: str) -> None:
    """Exit 2 and one line on stderr, ``migrator: error: ...``, naming what is wrong."""
    assert "Traceback" not in proc.stderr
    assert proc.returncode == EXIT_USAGE, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("migrator: error: "), lines[0]
    assert mentions in lines[0]
    assert proc.stdout == ""


def refused_unchanged(seeded: Seeded, *args: str, mentions: str) -> None:
    """Run the CLI on the seeded journal; it must refuse, and change nothing."""
    before = seeded.snapshot()
    proc = run_cli(*args, db=seeded.url)
    assert_refused(proc, mentions=mentions)
    assert seeded.snapshot() == before


def migrate_args(seeded: Seeded, domain: str = "vm1", **uris: str) -> list[str]:
    src = uris.get("src", seeded.hosts.src_uri)
    dst = uris.get("dst", seeded.hosts.dst_uri)
    return ["migrate", domain, "--src", src, "--dst", dst]


# -- migrate ---------------------------------------------------------------------------------


def test_unknown_uri_scheme_is_refused(seeded: Seeded) -> None:
    args = migrate_args(seeded, src="ftp:///srv/host-a")
    refused_unchanged(seeded, *args, mentions="unknown scheme 'ftp'")


def test_relative_test_host_path_is_refused(seeded: Seeded) -> None:
    args = migrate_args(seeded, dst="test://relative/x")
    refused_unchanged(seeded, *args, mentions="must be absolute")
    assert not (ROOT / "relative").exists()


def test_domain_missing_on_source_is_refused(seeded: Seeded) -> None:
    refused_unchanged(seeded, *migrate_args(seeded, "ghost"), mentions="'ghost' not found")


def test_domain_already_on_destination_is_refused(seeded: Seeded) -> None:
    seeded.hosts.dst.define("vm1", memory_mib=1)
    refused_unchanged(seeded, *migrate_args(seeded), mentions="'vm1' already exists")


def test_same_source_and_destination_is_refused(seeded: Seeded) -> None:
    args = migrate_args(seeded, dst=seeded.hosts.src_uri)
    refused_unchanged(seeded, *args, mentions="same host")


def test_negative_bandwidth_is_refused(seeded: Seeded) -> None:
    args = [*migrate_args(seeded), "--bandwidth", "-5"]
    refused_unchanged(seeded, *args, mentions="--bandwidth must be >= 0")


def test_unknown_option_is_refused(seeded: Seeded) -> None:
    args = [*migrate_args(seeded), "--frobnicate"]
    refused_unchanged(seeded, *args, mentions="No such option '--frobnicate'")


# -- read commands -----------------------------------------------------------------------------


def test_unknown_state_for_list_is_refused(seeded: Seeded) -> None:
    refused_unchanged(seeded, "list", "--state", "HALFWAY", mentions="'HALFWAY' is not one of")


def _ids(url: str) -> list[str]:
    with Journal.open(url) as journal:
        return [m.id for m in journal.list()]


def test_id_prefix_matching_nothing_is_refused(seeded: Seeded) -> None:
    taken = {mid[0] for mid in _ids(seeded.url)}
    prefix = next(c for c in "0123456789abcdef" if c not in taken)
    refused_unchanged(seeded, "show", prefix, mentions=f"no migration matches '{prefix}'")


def test_ambiguous_id_prefix_is_refused(seeded: Seeded) -> None:
    # Record NEW migrations until two ids share their first hex digit (at most 17).
    with Journal.open(seeded.url) as journal:
        ids = [m.id for m in journal.list()]
        while len({mid[0] for mid in ids}) == len(ids):
            new = journal.create(
                domain="vm1", src=seeded.hosts.src_uri, dst=seeded.hosts.dst_uri,
                protocol=3, flags=0, bandwidth=0, owner="test",
            )  # fmt: skip
            ids.append(new.id)
    digit = next(mid[0] for mid in ids if sum(other[0] == mid[0] for other in ids) > 1)
    count = sum(mid[0] == digit for mid in ids)
    refused_unchanged(seeded, "show", digit, mentions=f"matches {count} migrations")


# -- the journal itself ---------------------------------------------------------------------


def test_journal_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(bytes(range(256)) * 8)
    before = garbage.read_bytes()
    proc = run_cli("list", db=f"sqlite:///{garbage}")
    assert_refused(proc, mentions="not a database")
    assert garbage.read_bytes() == before


def stamp_newer(seeded: Seeded) -> None:
    """Stamp the journal with revision 9999, as a newer migrator would have."""
    conn = sqlite3.connect(seeded.path)
    with conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    conn.close()


def test_journal_newer_than_the_code_is_refused(seeded: Seeded) -> None:
    stamp_newer(seeded)
    before = seeded.snapshot()
    proc = run_cli("list", db=seeded.url)
    assert_refused(proc, mentions="9999")
    assert_advises_upgrading_migrator(proc.stderr)
    assert seeded.snapshot() == before


def assert_advises_upgrading_migrator(stderr: str) -> None:
    """A journal newer than the code needs a newer migrator: `db upgrade` cannot help."""
    assert "newer than this migrator" in stderr, stderr
    assert stderr.rstrip().endswith("upgrade migrator"), stderr
    assert "db upgrade" not in stderr, stderr


def test_db_upgrade_of_a_newer_journal_is_refused_cleanly(seeded: Seeded) -> None:
    stamp_newer(seeded)
    before = seeded.snapshot()
    proc = run_cli("db", "upgrade", db=seeded.url)
    assert_refused(proc, mentions="9999")
    assert_advises_upgrading_migrator(proc.stderr)
    assert seeded.snapshot() == before


def test_db_current_of_a_newer_journal_advises_upgrading_migrator(seeded: Seeded) -> None:
    stamp_newer(seeded)
    proc = run_cli("db", "current", db=seeded.url)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("9999 (newer than this migrator"), proc.stdout
    assert_advises_upgrading_migrator(proc.stdout.rstrip().rstrip(")"))


def test_postgres_schema_never_upgraded_is_refused(pg_url: str) -> None:
    proc = run_cli("list", db=pg_url)
    assert_refused(proc, mentions="migrator db upgrade")
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert sa.inspect(conn).get_table_names() == []  # nothing was created
    finally:
        engine.dispose()


# -- Ctrl-C in the middle of a step -------------------------------------------------------------


def _sigint_default() -> None:
    # A test run started in the background of a non-interactive shell has SIGINT ignored,
    # and a child that inherits that never sees Ctrl-C: give it the default back.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_during_perform(
    db_url: str, hosts: Hosts, signum: int = signal.SIGINT
) -> tuple[int, str, str]:
    """Start ``migrate`` with a 3 s Perform, Ctrl-C it (or send ``signum``) once it is
    PERFORMING."""
    Journal.open(db_url).close()
    hosts.src.set_fault("perform", "slow", seconds=3)
    env = {k: v for k, v in os.environ.items() if k != "MIGRATOR_FAILPOINTS"}
    env["MIGRATOR_DB"] = db_url
    args = ["migrate", "vm1", "--src", hosts.src_uri, "--dst", hosts.dst_uri, "--json"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "migrator", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env, cwd=ROOT, preexec_fn=_sigint_default,
    )  # fmt: skip
    try:
        with Journal.open(db_url) as journal:
            deadline = time.monotonic() + 20
            while [m.state for m in journal.list()] != [State.PERFORMING]:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "never reached PERFORMING"
                time.sleep(0.05)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, err


def test_ctrl_c_mid_step_exits_130_and_leaves_the_journal_consistent(
    db_url: str, hosts: Hosts
) -> None:
    code, _, err = interrupt_during_perform(db_url, hosts)
    assert code == EXIT_INTERRUPTED, err
    assert "Traceback" not in err
    assert "migrator recover" in err
    with Journal.open(db_url) as journal:
        [m] = journal.list()
        history = journal.history(m.id)
    assert m.id in err
    # The intent of Perform is committed, its outcome never started: nothing half-written.
    assert m.state is State.PERFORMING
    assert [e.seq for e in history] == list(range(1, len(history) + 1))
    assert m.last_seq == len(history)
    assert [(e.step, e.kind) for e in history] == [
        ("begin", "intent"), ("begin", "ok"),
        ("prepare", "intent"), ("prepare", "ok"),
        ("perform", "intent"),
    ]  # fmt: skip
    assert history[-1].state is State.PERFORMING


def test_sigterm_mid_step_names_the_migration_as_ctrl_c_does(tmp_path: Path, hosts: Hosts) -> None:
    url = f"sqlite:///{tmp_path / 'journal.db'}"
    code, _, err = interrupt_during_perform(url, hosts, signal.SIGTERM)
    assert code == 143, err
    assert "Traceback" not in err
    with Journal.open(url) as journal:
        [m] = journal.list()
    assert [line for line in err.splitlines() if line] == [
        f"migrator: terminated: migration {m.id} left in PERFORMING;"
        " `migrator recover` brings it to a safe end"
    ]
