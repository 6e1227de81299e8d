"""Migration flags, by name on the CLI, and what each does on real test hosts.

LIVE (the source keeps running while the data goes), PAUSED (the domain stays paused on
the destination; added by itself for a paused source), PERSIST_DEST and UNDEFINE_SOURCE
(where the definition stays), CHANGE_PROTECTION (no configuration change while the
migration runs), ABORT_ON_ERROR (an I/O error during Perform fails it) and ``--dname``;
every other flag is refused before Begin.
Flag behaviour belongs to the driver, so these run on SQLite only; every journal is
replayed afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrator import failpoints
from migrator.drivers.test import TestDriver
from migrator.errors import DriverError
from migrator.flags import MigrateFlags, cli_name
from migrator.journal.store import Journal
from tests.cli.test_failure_rules import view
from tests.conftest import ROOT, Hosts, assert_replays_consistently, run_cli, state_of


@pytest.fixture
def db(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'journal.db'}"
    Journal.open(url, upgrade=True).close()
    yield url
    assert_replays_consistently(url)


def migrate(db: str, src: TestDriver, dst: TestDriver, *args: str, domain: str = "vm1") -> Any:
    proc = run_cli("migrate", domain, "--src", src.uri, "--dst", dst.uri, "--json", *args, db=db)
    assert "Traceback" not in proc.stderr, proc.stderr
    outcome = json.loads(proc.stdout)
    return view(db, outcome["id"])


def record(host: TestDriver, name: str) -> dict[str, Any]:
    [dom] = [d for d in host.domains() if d["name"] == name]
    return dom


@pytest.mark.parametrize("protocol", ["3", "2"])
def test_persist_dest_makes_the_destination_copy_persistent(
    db: str, hosts: Hosts, protocol: str
) -> None:
    m = migrate(db, hosts.src, hosts.dst, "--protocol", protocol, "--flag", "persist-dest")
    assert m["state"] == "CONFIRMED"
    assert m["flag_names"] == ["persist-dest"]
    assert record(hosts.dst, "vm1")["persistent"] is True
    back = migrate(db, hosts.dst, hosts.src, "--protocol", protocol)
    assert back["state"] == "CONFIRMED"
    assert record(hosts.src, "vm1")["persistent"] is False, "without the flag: transient"


@pytest.mark.parametrize("protocol", ["3", "2", "1"])
def test_a_persistent_source_keeps_its_definition_unless_undefine_source(
    db: str, tmp_path: Path, protocol: str
) -> None:
    a, b, c = (TestDriver(f"test://{tmp_path / n}") for n in ("a", "b", "c"))
    a.define("vm1", persistent=True)
    m = migrate(db, a, b, "--protocol", protocol, "--flag", "persist-dest")
    assert m["state"] == "CONFIRMED"
    assert record(a, "vm1")["state"] == "shutoff", "the definition stays on the source"
    assert record(b, "vm1")["state"] == "running"
    m = migrate(db, b, c, "--protocol", protocol, "--flag", "undefine-source")
    assert m["state"] == "CONFIRMED"
    assert state_of(b, "vm1") == "absent", "UNDEFINE_SOURCE removed it"


def test_migrating_onto_a_shut_off_definition_replaces_it_or_restores_it(
    db: str, tmp_path: Path
) -> None:
    a, b = TestDriver(f"test://{tmp_path / 'a'}"), TestDriver(f"test://{tmp_path / 'b'}")
    a.define("vm1", persistent=True)
    assert migrate(db, a, b, "--flag", "persist-dest")["state"] == "CONFIRMED"
    left = record(a, "vm1")
    # Back to a, where the shut-off definition waits: a failed attempt leaves it as it was.
    a.set_fault("finish", "no-domain", count=1)
    failed = migrate(db, b, a, "--flag", "persist-dest")
    assert failed["state"] == "ROLLED_BACK"
    assert record(a, "vm1") == left
    assert record(b, "vm1")["state"] == "running"
    ok = migrate(db, b, a, "--flag", "persist-dest")
    assert ok["state"] == "CONFIRMED"
    assert record(a, "vm1")["state"] == "running"
    images = sorted(p.name for p in (a.dir / "images").iterdir())
    assert len(images) == 1, f"the replaced definition's image is gone: {images}"


@pytest.mark.parametrize("failpoint", ["begin.recorded", "perform.intent"])
def test_change_protection_refuses_configuration_changes_until_the_end(
    db: str, hosts: Hosts, failpoint: str
) -> None:
    crashed = run_cli(
        "migrate", "vm1", "--src", hosts.src_uri, "--dst", hosts.dst_uri,
        "--flag", "change-protection", "--json",
        db=db, env={failpoints.ENV_VAR: f"{failpoint}=crash"},
    )  # fmt: skip
    assert crashed.returncode == failpoints.CRASH_EXIT_CODE
    assert record(hosts.src, "vm1")["protected"] is True
    with pytest.raises(DriverError, match="protected against configuration changes"):
        hosts.src.set_memory("vm1", 8)
    recovered = run_cli("recover", "--json", db=db)
    assert recovered.returncode == 0, recovered.stderr
    assert json.loads(recovered.stdout)[0]["result"] == "ROLLED_BACK"
    hosts.src.set_memory("vm1", 8)
    assert record(hosts.src, "vm1")["memory_mib"] == 8


def test_without_change_protection_changes_are_allowed_mid_migration(db: str, hosts: Hosts) -> None:
    crashed = run_cli(
        "migrate", "vm1", "--src", hosts.src_uri, "--dst", hosts.dst_uri,
        db=db, env={failpoints.ENV_VAR: "perform.intent=crash"},
    )  # fmt: skip
    assert crashed.returncode == failpoints.CRASH_EXIT_CODE
    hosts.src.set_memory("vm1", 8)
    assert run_cli("recover", db=db).returncode == 0


@pytest.mark.parametrize("protocol", ["3", "2"])
def test_an_io_error_during_perform_fails_it_only_with_abort_on_error(
    db: str, tmp_path: Path, protocol: str
) -> None:
    step = "perform" if protocol == "3" else "perform2"
    a, b = TestDriver(f"test://{tmp_path / 'a'}"), TestDriver(f"test://{tmp_path / 'b'}")
    a.define("vm1")
    a.set_fault(step, "io-error", count=1)
    m = migrate(db, a, b, "--protocol", protocol)
    assert m["state"] == "CONFIRMED"
    performed = next(e for e in m["events"] if e["step"] == step and e["kind"] == "ok")
    assert performed["detail"]["io_errors"] == 1
    b.set_fault(step, "io-error", count=1)
    m = migrate(db, b, a, "--protocol", protocol, "--flag", "abort-on-error")
    assert m["state"] == "ROLLED_BACK"
    assert m["reason"] == f"{step} failed: I/O error during migration: aborted (abort-on-error)"
    assert (state_of(b, "vm1"), state_of(a, "vm1")) == ("running", "absent")


def test_io_error_fault_applies_to_perform_steps_only(hosts: Hosts) -> None:
    with pytest.raises(ValueError, match="io-error applies only to perform steps"):
        hosts.src.set_fault("finish", "io-error")


@pytest.mark.parametrize("protocol", ["3", "2", "1"])
def test_a_paused_source_stays_paused_on_the_destination(
    db: str, tmp_path: Path, protocol: str
) -> None:
    a, b = TestDriver(f"test://{tmp_path / 'a'}"), TestDriver(f"test://{tmp_path / 'b'}")
    a.define("vm1", paused=True)
    m = migrate(db, a, b, "--protocol", protocol)
    assert m["state"] == "CONFIRMED"
    assert "paused" in m["flag_names"], "PAUSED is added for a paused source"
    assert (state_of(a, "vm1"), state_of(b, "vm1")) == ("absent", "paused")


@pytest.mark.parametrize("protocol", ["3", "2", "1"])
def test_dname_renames_the_domain_on_the_destination(db: str, hosts: Hosts, protocol: str) -> None:
    m = migrate(db, hosts.src, hosts.dst, "--protocol", protocol, "--dname", "vm1-new")
    assert (m["state"], m["dname"]) == ("CONFIRMED", "vm1-new")
    assert [d["name"] for d in hosts.dst.domains()] == ["vm1-new"]
    assert hosts.src.domains() == []


def watch_source(db: str, a: TestDriver, b: TestDriver, *args: str) -> set[tuple[str, bool]]:
    """Migrate (16 MiB at 8 MiB/s: two seconds of transfer) and sample the source domain's
    (state, protected) while its copy is on the way (before the transfer completed, after
    which even a live migration pauses the source for the switch-over)."""
    a.define("vm1", memory_mib=16)
    argv = ["migrate", "vm1", "--src", a.uri, "--dst", b.uri, "--bandwidth", "8", *args]
    proc = subprocess.Popen(
        [sys.executable, "-m", "migrator", *argv],
        env={**os.environ, "MIGRATOR_DB": db},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    seen: set[tuple[str, bool]] = set()
    try:
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            # The copy is on the way while its temporary file exists on the destination
            # (looked at first: the source is paused, if it is, before that file is made).
            copying = any((b.dir / "images").glob(".incoming-*.tmp"))
            src = {d["name"]: d for d in a.domains()}.get("vm1")
            if src is not None and copying and not a.probe("vm1").transfers:
                seen.add((src["state"], src["protected"]))
            time.sleep(0.05)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    return seen


@pytest.mark.parametrize(("flags", "during"), [([], "paused"), (["--live"], "running")])
def test_live_keeps_the_source_running_while_the_data_goes(
    db: str, tmp_path: Path, flags: list[str], during: str
) -> None:
    a, b = TestDriver(f"test://{tmp_path / 'a'}"), TestDriver(f"test://{tmp_path / 'b'}")
    seen = watch_source(db, a, b, *flags)
    assert {state for state, _ in seen} == {during}, seen


def test_v2_protects_the_source_while_perform_runs(db: str, tmp_path: Path) -> None:
    """v2 has no Begin: its job, and the protection, last through Perform."""
    a, b = TestDriver(f"test://{tmp_path / 'a'}"), TestDriver(f"test://{tmp_path / 'b'}")
    seen = watch_source(db, a, b, "--protocol", "2", "--live", "--flag", "change-protection")
    assert seen == {("running", True)}


HONOURED_BY_TEST_HOSTS = {
    "live", "tunnelled", "persist-dest", "undefine-source", "paused", "change-protection",
    "abort-on-error", "postcopy",
}  # fmt: skip
NOT_CARRIED = {"postcopy-resume"}  # refused by the engine for every driver
UNHONOURED_BY_TEST_HOSTS = sorted(
    cli_name(f)
    for f in MigrateFlags
    if f and cli_name(f) not in HONOURED_BY_TEST_HOSTS | NOT_CARRIED
)


@pytest.mark.parametrize("flag", UNHONOURED_BY_TEST_HOSTS)
def test_a_flag_the_test_driver_does_not_honour_is_refused_before_begin(
    db: str, hosts: Hosts, flag: str
) -> None:
    proc = run_cli(
        "migrate", "vm1", "--src", hosts.src_uri, "--dst", hosts.dst_uri, "--live",
        "--flag", flag, db=db,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (
        f"migrator: error: flag {flag} is not honoured by the test driver ({hosts.src_uri});"
        " it honours: live, tunnelled, persist-dest, undefine-source, paused,"
        " change-protection, abort-on-error, postcopy\n"
    )
    with Journal.open(db) as journal:
        assert journal.list() == [], "nothing is journaled"
    assert hosts.states("vm1") == ("running", "absent")
    assert record(hosts.src, "vm1")["job"] is None, "Begin never ran"


def test_13_of_the_21_flags_are_refused_by_test_hosts() -> None:
    """12 by the driver, and postcopy-resume by the engine for every driver."""
    assert len(UNHONOURED_BY_TEST_HOSTS) == 12
    assert len(UNHONOURED_BY_TEST_HOSTS) + len(NOT_CARRIED) + len(HONOURED_BY_TEST_HOSTS) == 21


def test_tunnelled_is_honoured_only_by_test_hosts_that_speak_v3(tmp_path: Path) -> None:
    v3 = TestDriver(f"test://{tmp_path / 'a'}")
    older = TestDriver(f"test://{tmp_path / 'b'}?protocols=1,2")
    assert v3.honoured_flags & MigrateFlags.TUNNELLED
    assert not older.honoured_flags & MigrateFlags.TUNNELLED
    v3_only = MigrateFlags.TUNNELLED | MigrateFlags.POSTCOPY
    assert older.honoured_flags | v3_only == v3.honoured_flags


def test_postcopy_resume_is_refused_before_anything_is_journaled_or_called(db: str) -> None:
    """Resuming post-copy is the engine's own business: refused for every driver, before a
    host is reached (these addresses answer nothing)."""
    src, dst = "qemu+tcp://10.77.254.1/system", "qemu+tcp://10.77.254.2/system"
    proc = run_cli("migrate", "vm1", "--src", src, "--dst", dst, "--flag", "postcopy-resume", db=db)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "migrator: error: flag postcopy-resume is refused: migrator resumes a paused post-copy"
        " migration itself; migrate with postcopy alone"
    ]
    with Journal.open(db) as journal:
        assert journal.list() == []


def test_postcopy_is_refused_by_a_host_without_the_feature(db: str, tmp_path: Path) -> None:
    """A host that cannot switch and resume (here one speaking only v1 and v2): one line,
    exit 2, nothing journaled or called."""
    a = TestDriver(f"test://{tmp_path / 'a'}?protocols=1,2")
    b = TestDriver(f"test://{tmp_path / 'b'}?protocols=1,2")
    a.define("vm1", memory_mib=1)
    proc = run_cli("migrate", "vm1", "--src", a.uri, "--dst", b.uri, "--flag", "postcopy", db=db)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"migrator: error: flag postcopy is refused: host {a.uri} cannot switch a migration"
        " to post-copy and resume it after a failure; migrate without it"
    ]
    with Journal.open(db) as journal:
        assert journal.list() == []
    assert record(a, "vm1")["job"] is None


def test_postcopy_is_refused_when_tunnelled(db: str, hosts: Hosts) -> None:
    proc = run_cli(
        "migrate", "vm1", "--src", hosts.src_uri, "--dst", hosts.dst_uri, "--flag", "postcopy",
        "--flag", "tunnelled", db=db,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "post-copy needs protocol v3 without tunnelled" in proc.stderr
    with Journal.open(db) as journal:
        assert journal.list() == []
