"""Every case of docs/errors.md holds: its exit code, its one line on stderr, never a
traceback, and after exit 2 a journal and hosts byte-for-byte as before."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from migrator.drivers.test import TestDriver
from migrator.engine.coordinator import Coordinator
from migrator.hostlimits import HostLimits
from migrator.journal.schema import SCHEMA_HEAD
from migrator.journal.store import Journal
from migrator.workers import Worker
from tests.cli.errors_catalogue import CASES, LONG, Case, markdown
from tests.conftest import ROOT, run_cli

SEED_ID_FILE = "seed-id"


@dataclass(frozen=True)
class Scratch:
    """A copy of the seeded directory: journal.db, host-a (vm1 runs there), host-b."""

    tmp: Path

    @property
    def values(self) -> dict[str, str]:
        return {
            "{db}": f"sqlite:///{self.tmp / 'journal.db'}",
            "{src}": f"test://{self.tmp / 'host-a'}",
            "{dst}": f"test://{self.tmp / 'host-b'}",
            "{tmp}": str(self.tmp),
            "{id}": (self.tmp / SEED_ID_FILE).read_text(),
            "{long}": LONG,
            "{head}": SCHEMA_HEAD,
        }

    def fill(self, text: str) -> str:
        for key, value in self.values.items():
            text = text.replace(key, value)
        return text

    def snapshot(self) -> dict[str, bytes]:
        """Every file's bytes, the journal as its SQL dump (its WAL may be checkpointed)."""
        files = {}
        for path in sorted(self.tmp.rglob("*")):
            if path.is_file() and not path.name.startswith("journal.db"):
                files[str(path)] = path.read_bytes()
        conn = sqlite3.connect(self.tmp / "journal.db")
        try:
            files["journal"] = "\n".join(conn.iterdump()).encode()
        finally:
            conn.close()
        return files


@pytest.fixture(scope="module")
def seeded_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("catalogue-seed")
    src = TestDriver(f"test://{root / 'host-a'}")
    dst = TestDriver(f"test://{root / 'host-b'}")
    src.define("vm1", memory_mib=1)
    src.define("old", memory_mib=1)
    with Journal.open(f"sqlite:///{root / 'journal.db'}") as journal:
        coordinator = Coordinator(journal)
        try:
            old = coordinator.migrate("old", src=src, dst=dst)
        finally:
            coordinator.close()
    (root / SEED_ID_FILE).write_text(old.id)
    return root


def _vm1_on_dst(s: Scratch) -> None:
    TestDriver(s.values["{dst}"]).define("vm1", memory_mib=1)


def _host_json_list(s: Scratch) -> None:
    (s.tmp / "list-host").mkdir()
    (s.tmp / "list-host" / "host.json").write_text("[1, 2]")


def _list_host_json(s: Scratch) -> Path:
    (s.tmp / "list-host").mkdir()
    return s.tmp / "list-host" / "host.json"


def _host_json_domains_5(s: Scratch) -> None:
    _list_host_json(s).write_text('{"domains": 5}')


def _host_json_deep(s: Scratch) -> None:
    _list_host_json(s).write_text("[" * 200_000 + "]" * 200_000)


def _host_json_dev_zero(s: Scratch) -> None:
    _list_host_json(s).symlink_to("/dev/zero")


def _host_json_fifo(s: Scratch) -> None:
    os.mkfifo(_list_host_json(s))


def _domain_state_5(s: Scratch) -> None:
    [shard] = (s.tmp / "host-a" / "domains").glob("vm1.*.json")
    data = json.loads(shard.read_text())
    data["domains"]["vm1"]["state"] = 5
    shard.write_text(json.dumps(data))


def _fault_without_count(s: Scratch) -> None:
    path = s.tmp / "host-a" / "host.json"
    data = json.loads(path.read_text())
    data["faults"] = {"begin": {"mode": "error"}}
    path.write_text(json.dumps(data))


def _limits_files(s: Scratch) -> None:
    (s.tmp / "hosts-5.json").write_text('{"hosts": {"x": 5}}')
    (s.tmp / "true.toml").write_text("max_outgoing = true\n")
    (s.tmp / "unknown.toml").write_text("[hosts.x]\nmax_outgong = 1\n")
    (s.tmp / "top.toml").write_text("max_ingoing = 2\n")
    os.mkfifo(s.tmp / "fifo.toml")
    (s.tmp / "zero.json").symlink_to("/dev/zero")


def _webhook_files(s: Scratch) -> None:
    os.mkfifo(s.tmp / "fifo.json")
    url = '"url": "http://127.0.0.1:9/hook"'
    (s.tmp / "bad.toml").write_text("url http://127.0.0.1:9/hook\n")
    (s.tmp / "no-secret.json").write_text(f'{{"endpoints": [{{{url}}}]}}')
    (s.tmp / "ftp.toml").write_text('[[endpoints]]\nurl = "ftp://x/y"\nsecret = "s"\n')
    (s.tmp / "password.json").write_text(
        '{"endpoints": [{"url": "http://bob:hunter2@[::1/hook", "secret": "s"}]}'
    )
    for name, more in (("unknown", '"retries": 3'), ("kinds", '"kinds": ["done"]')):
        (s.tmp / f"{name}.json").write_text(f'{{"endpoints": [{{{url}, "secret": "s", {more}}}]}}')
    one = f'{{"name": "ops", {url}, "secret": "s"}}'
    (s.tmp / "twice.json").write_text(f'{{"endpoints": [{one}, {one}]}}')
    (s.tmp / "zero-secret.json").write_text(
        f'{{"endpoints": [{{{url}, "secret_file": "/dev/zero"}}]}}'
    )


def _running_worker(s: Scratch) -> None:
    """A worker ``w1`` registered, running under ``--max-outgoing 1``."""
    (s.tmp / "host-override.toml").write_text('[hosts."test:///big"]\nmax_outgoing = 4\n')
    with Journal.open(s.values["{db}"]) as journal:
        Worker(journal, worker_id="w1", limits=HostLimits(max_outgoing=1)).register()


def _two_stamps(s: Scratch) -> None:
    conn = sqlite3.connect(s.tmp / "journal.db")
    with conn:
        conn.execute("INSERT INTO alembic_version VALUES ('0003')")
    conn.close()


def _empty_stamp_old_tables(s: Scratch) -> None:
    conn = sqlite3.connect(s.tmp / "journal.db")
    with conn:
        conn.execute("DELETE FROM alembic_version")
        conn.execute("DROP INDEX ix_migration_events_step_kind_duration")
    conn.close()


def _foreign_sqlite(s: Scratch) -> None:
    conn = sqlite3.connect(s.tmp / "other.db")
    with conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.execute("INSERT INTO notes VALUES ('mine')")
    conn.close()


def _garbage_file(s: Scratch) -> None:
    (s.tmp / "garbage.db").write_bytes(bytes(range(256)) * 8)


def _newer_schema(s: Scratch) -> None:
    conn = sqlite3.connect(s.tmp / "journal.db")
    with conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    conn.close()


SETUPS: dict[str, Callable[[Scratch], None]] = {
    "vm1-on-dst": _vm1_on_dst,
    "host-json-list": _host_json_list,
    "host-json-domains-5": _host_json_domains_5,
    "host-json-deep": _host_json_deep,
    "host-json-dev-zero": _host_json_dev_zero,
    "host-json-fifo": _host_json_fifo,
    "domain-state-5": _domain_state_5,
    "fault-without-count": _fault_without_count,
    "limits-files": _limits_files,
    "webhook-files": _webhook_files,
    "running-worker": _running_worker,
    "two-stamps": _two_stamps,
    "empty-stamp-old-tables": _empty_stamp_old_tables,
    "foreign-sqlite": _foreign_sqlite,
    "garbage-file": _garbage_file,
    "newer-schema": _newer_schema,
}


def _record(case: Case, scratch: Scratch, code: int, lines: list[str]) -> None:
    """With ``ERRORS_CATALOGUE_RECORD=FILE``, append what a case got (to write new cases)."""
    target = os.environ.get("ERRORS_CATALOGUE_RECORD")
    if not target:
        return
    text = "\n".join(lines)
    for key, value in sorted(scratch.values.items(), key=lambda kv: -len(kv[1])):
        text = text.replace(value, key)
    with open(target, "a") as f:
        f.write(json.dumps([CASES.index(case), code, text]) + "\n")


def case_id(case: Case) -> str:
    return " ".join(case.args)[:70].encode("ascii", "backslashreplace").decode()


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_case_gets_its_exit_code_and_message(case: Case, seeded_dir: Path, tmp_path: Path) -> None:
    scratch = Scratch(tmp_path / "s")
    shutil.copytree(seeded_dir, scratch.tmp)
    if case.setup:
        SETUPS[case.setup](scratch)
    before = scratch.snapshot()
    proc = run_cli(*(scratch.fill(a) for a in case.args), db=scratch.values["{db}"])
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    _record(case, scratch, proc.returncode, lines)
    assert len(lines) == 1, proc.stderr
    assert (proc.returncode, lines[0]) == (case.code, scratch.fill(case.message))
    if case.code == 2:
        assert proc.stdout == ""
        assert scratch.snapshot() == before


def test_errors_md_is_what_the_catalogue_prints() -> None:
    assert (ROOT / "docs" / "errors.md").read_text() == markdown(), (
        "regenerate it: python -m tests.cli.errors_catalogue > docs/errors.md"
    )


def test_the_catalogue_has_at_least_sixty_cases() -> None:
    assert len(CASES) >= 60
