"""What the crash tests share: fresh hosts and journals, the real CLI, and the invariants.

The invariants are those of docs/recovery.md, checked against what the test hosts really hold and
what the journal says, after a coordinator died at some instant and ``recover`` ran:

- the migration ended CONFIRMED, ROLLED_BACK or FAILED (IN_DOUBT only where a test says
  why it is legitimate);
- the domain runs (running or paused) on exactly one host: the destination after
  CONFIRMED, the source after ROLLED_BACK or FAILED; never on both;
- every Confirm's ``cancelled`` flag agrees with what the journal knew of the destination:
  the last Finish outcome (``detail.running``), or after a Finish that raised, the probe
  of the destination; only a Finish(cancelled=0) can start the domain there;
- the events' seq runs 1..N without a gap;
- a ``recovery`` event names the crashed owner, written by another coordinator, which
  wrote every event after it.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migrator import failpoints
from migrator.drivers.test import TestDriver
from migrator.inspect import show
from migrator.journal.store import Journal
from migrator.records import Event, Migration
from tests.conftest import ROOT, Hosts, host_files, state_of
from tests.crash.forkserver import SERVER

STEPS = ("begin", "prepare", "perform", "finish", "confirm")
FAILPOINTS = tuple(f"{step}.{point}" for step in STEPS for point in failpoints.POINTS)
TERMINAL = ("CONFIRMED", "ROLLED_BACK", "FAILED")
ACTIVE = ("running", "paused")
CLI_TIMEOUT = 60.0


@dataclass(frozen=True)
class Scenario:
    """Host faults armed before the migration and left armed for recovery: they model how
    the host behaves, so a replayed step meets the same fault the first call met."""

    name: str
    faults: tuple[tuple[str, str, str], ...]  # (host "src" | "dst", step, mode)
    title: str


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("success", (), "success"),
        Scenario("prepare-fails", (("dst", "prepare", "error"),), "Prepare fails"),
        Scenario("perform-fails", (("src", "perform", "error"),), "Perform fails"),
        Scenario("finish-no-domain", (("dst", "finish", "no-domain"),), "Finish reports no domain"),
        Scenario(
            "finish-raises",
            (("dst", "finish", "lost-reply"),),
            "Finish raises (dst started it)",
        ),
    )
}


def reaches(scenario: str, failpoint: str) -> bool:
    """Whether a migration under ``scenario`` gets to ``failpoint`` at all."""
    return not (scenario == "prepare-fails" and failpoint.startswith("perform."))


def expected_end(scenario: str, failpoint: str) -> str:
    """The end state after a crash at ``failpoint`` and ``recover`` (docs/recovery.md).

    Before the transfer completed, recovery only goes back; after it, the migration goes
    forward and ends as the destination's Finish says: running (success, or a Finish whose
    reply was lost) -> CONFIRMED; no domain -> ROLLED_BACK.
    """
    if scenario in ("prepare-fails", "perform-fails", "finish-no-domain"):
        return "ROLLED_BACK"
    if failpoint.partition(".")[0] in ("begin", "prepare") or failpoint == "perform.intent":
        return "ROLLED_BACK"
    return "CONFIRMED"


# -- rigs: a journal and two hosts -------------------------------------------------------------


@dataclass
class Rig:
    db: str
    hosts: Hosts
    domain: str = "vm1"

    def cli(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = CLI_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """``migrator ARGS`` in a new process (forked, see ``forkserver.py``)."""
        proc = SERVER.run(list(args), env=cli_env(self.db, env), cwd=ROOT, timeout=timeout)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    def cli_json(self, *args: str) -> tuple[int, Any]:
        proc = self.cli(*args, "--json")
        return proc.returncode, json.loads(proc.stdout)

    def migrate_argv(self, *extra: str) -> list[str]:
        return [
            "migrate", self.domain, "--src", self.hosts.src_uri, "--dst", self.hosts.dst_uri,
            *extra,
        ]  # fmt: skip

    def arm(self, scenario: Scenario) -> None:
        for host, step, mode in scenario.faults:
            driver = self.hosts.src if host == "src" else self.hosts.dst
            driver.set_fault(step, mode)

    def migrations(self) -> list[Migration]:
        with Journal.open(self.db) as journal:
            return journal.list()

    def only_migration(self) -> Migration:
        [m] = self.migrations()
        return m

    def view(self, migration_id: str) -> dict[str, Any]:
        """What ``migrator show ID --json`` prints (the same library call)."""
        with Journal.open(self.db) as journal:
            return show(journal, migration_id)

    def snapshot(self) -> tuple[list[tuple[Migration, list[Event]]], bytes, bytes]:
        """Every journal row and both hosts' state files, byte for byte."""
        with Journal.open(self.db) as journal:
            rows = [(m, journal.history(m.id)) for m in journal.list()]
        return rows, host_bytes(self.hosts.src), host_bytes(self.hosts.dst)


def host_bytes(host: TestDriver) -> bytes:
    return host_files(host.dir) or b""


def make_rig(db: str, root: Path, domain: str = "vm1", memory_mib: int = 4) -> Rig:
    src = TestDriver(f"test://{root / 'host-a'}")
    dst = TestDriver(f"test://{root / 'host-b'}")
    src.define(domain, memory_mib=memory_mib)
    return Rig(db, Hosts(src, dst), domain)


def backend_rig(backend: str, root: Path, request: Any, memory_mib: int = 4) -> Rig:
    """A rig journaled in SQLite under ``root``, or (``postgres``) in the test run's
    PostgreSQL schema (the ``pg_url`` fixture, taken from ``request``)."""
    if backend == "sqlite":
        return make_rig(sqlite_url(root), root, memory_mib=memory_mib)
    url = request.getfixturevalue("pg_url")
    Journal.open(url, upgrade=True).close()
    return make_rig(url, root, memory_mib=memory_mib)


def sqlite_url(root: Path) -> str:
    root.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{root / 'journal.db'}"
    Journal.open(url, upgrade=True).close()  # created up front: each run pays for its work
    return url


def cli_env(db: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a command: ours, the journal, no failpoint unless ``env`` arms one."""
    full = {**os.environ, **(env or {}), "MIGRATOR_DB": db}
    if env is None or failpoints.ENV_VAR not in env:
        full.pop(failpoints.ENV_VAR, None)
    return full


# -- invariants --------------------------------------------------------------------------------


def where(m: dict[str, Any], hosts: Hosts) -> tuple[str, str]:
    return state_of(hosts.src, m["domain"]), state_of(hosts.dst, m["dname"] or m["domain"])


def check_seq(m: dict[str, Any]) -> None:
    seqs = [e["seq"] for e in m["events"]]
    assert seqs == list(range(1, len(seqs) + 1)), f"seq has a gap: {seqs}"
    if m["events"]:
        assert m["events"][-1]["state"] == m["state"]


def check_confirm_flags(m: dict[str, Any]) -> None:
    """Each Confirm's ``cancelled`` is "the destination does not run the domain", as the
    journal knew it then (or as an operator decided, for ``resolve``).

    Only a Finish(cancelled=0) can start the domain on the destination: before any, nothing
    runs there; once one is asked, the destination is unknown until a Finish outcome
    (``detail.running``) or a probe of the destination says. A Finish(cancelled=1) that is
    asked, or fails, starts nothing, so what was known stands.
    """
    dst_runs: bool | None = False
    for e in m["events"]:
        if e["step"] == "finish":
            assert e["cancelled"] is not None, f"Finish without its flag: {e}"
            if e["kind"] == "ok":
                dst_runs = bool(e["detail"]["running"])
            elif not e["cancelled"]:
                dst_runs = None
        elif e["step"] == "probe" and e["kind"] == "ok" and e["detail"]["host"] == m["dst"]:
            dst_runs = e["detail"]["state"] in ACTIVE
        elif e["step"] == "confirm":
            resolved = (e["detail"] or {}).get("resolved")
            if resolved is not None:  # an operator's word replaces what the journal knew
                dst_runs = resolved == "dst"
            assert dst_runs is not None, f"Confirm with the destination unknown: {e}"
            assert e["cancelled"] is (not dst_runs), f"Confirm flag disagrees: {e}"


def cleanup_failed(m: dict[str, Any]) -> bool:
    """The journal's last Finish(cancelled=1) failed: the destination may keep an incoming
    copy (one that never ran), and the source was resumed all the same."""
    cleanups = [e for e in m["events"] if e["step"] == "finish" and e["cancelled"]]
    return bool(cleanups) and cleanups[-1]["kind"] == "error"


def check_hosts(m: dict[str, Any], hosts: Hosts) -> None:
    src, dst = where(m, hosts)
    assert not (src == "running" and dst == "running"), "both copies run"
    kept = "paused" if "paused" in m["flag_names"] else "running"
    state = m["state"]
    if state == "CONFIRMED":
        assert (src, dst) == ("absent", kept), f"CONFIRMED: runs on dst only, not {src, dst}"
    elif state in ("ROLLED_BACK", "FAILED"):
        assert src == kept, f"{state}: runs on src, not {src}"
        leftovers = ("absent", "incoming") if cleanup_failed(m) else ("absent",)
        assert dst in leftovers, f"{state}: dst cleaned up, not {dst}"
    elif state == "IN_DOUBT":
        assert src == "paused", "IN_DOUBT: the source is kept paused"
        assert dst != "absent", "IN_DOUBT: the destination's copy is not destroyed"
    else:
        raise AssertionError(f"not a safe end: {state} ({m['reason']})")


def check_files(host: TestDriver) -> None:
    """The host's files hold only the guests it holds: no image, partial or whole, of a
    migration that did not end there (a stalled owner's copy that landed late, a copy cut
    short by a kill, the temporary file of either)."""
    held = {dom["image"] for shard in host._shards() for dom in shard["domains"].values()}
    folder = host.dir / "images"
    files = {f"images/{p.name}" for p in folder.iterdir()} if folder.exists() else set()
    assert files == held, f"{host.uri}: {sorted(files ^ held)} on the host or its domains alone"


def check_invariants(m: dict[str, Any], hosts: Hosts, *, in_doubt_ok: bool = False) -> None:
    assert m["state"] in TERMINAL or (in_doubt_ok and m["state"] == "IN_DOUBT"), m["state"]
    check_seq(m)
    check_hosts(m, hosts)
    check_confirm_flags(m)
    check_files(hosts.src)
    check_files(hosts.dst)


def check_recovered_by_another(m: dict[str, Any], crashed_owner: str) -> dict[str, Any]:
    """The one recovery claim: by a coordinator other than ``crashed_owner``, which wrote
    every event after it. Returns the recovery event."""
    claims = [
        e
        for e in m["events"]
        if e["kind"] == "recovery" and "previous_owner" in (e["detail"] or {})
    ]
    assert len(claims) == 1, f"expected one recovery claim, got {claims}"
    [claim] = claims
    assert claim["detail"]["previous_owner"] == crashed_owner
    assert claim["coordinator"] not in (None, crashed_owner)
    after = {e["coordinator"] for e in m["events"] if e["seq"] > claim["seq"]}
    assert after <= {claim["coordinator"]}, f"events after the claim by {after}"
    assert m["owner"] == claim["coordinator"]
    return claim
