"""The post-mortem commands end to end, as a user runs them: ``export`` (validated against
``docs/export.schema.json``), ``list`` filters, ``stats``, ``prune``, ``diagram --format``,
``--hook-command``, and ``show`` of hostile cookies and recovered migrations."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from migrator.drivers.api import BeginResult, MigrationParams, PerformResult
from migrator.drivers.null import NullDriver
from migrator.engine.coordinator import Coordinator
from migrator.journal.store import Journal
from migrator.records import StepContext
from tests.conftest import ROOT, Hosts, run_cli

SCHEMA = json.loads((ROOT / "docs" / "export.schema.json").read_text())
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def ok(*args: str, db: str, env: dict[str, str] | None = None) -> str:
    proc = run_cli(*args, db=db, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def usage_error(*args: str, db: str, env: dict[str, str] | None = None) -> str:
    """Run a command that must fail as bad usage: exit 2, one line on stderr, no stdout."""
    proc = run_cli(*args, db=db, env=env)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stdout == ""
    [line] = proc.stderr.splitlines()
    assert line.startswith("migrator: error: ")
    return line


def migrate(hosts: Hosts, db: str, domain: str = "vm1", *extra: str) -> dict[str, Any]:
    proc = run_cli(
        "migrate", domain, "--src", hosts.src_uri, "--dst", hosts.dst_uri, "--json", *extra, db=db
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    outcome: dict[str, Any] = json.loads(proc.stdout)
    return outcome


@pytest.fixture
def two(db_url: str, hosts: Hosts) -> tuple[str, str, str]:
    """A journal with a CONFIRMED migration of vm1, then a ROLLED_BACK one of vm2."""
    hosts.src.define("vm2", memory_mib=1)
    first = migrate(hosts, db_url)
    hosts.src.set_fault("perform", "error", message="disk on fire", count=1)
    second = migrate(hosts, db_url, "vm2")
    assert (first["state"], second["state"]) == ("CONFIRMED", "ROLLED_BACK")
    return db_url, first["id"], second["id"]


# -- export -----------------------------------------------------------------------------------


def test_export_validates_against_the_schema(two: tuple[str, str, str]) -> None:
    db, _, rolled_back = two
    doc = json.loads(ok("export", rolled_back[:8], db=db))
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)
    assert doc["migration"]["id"] == rolled_back
    assert doc["migration"]["reason"] == "perform failed: disk on fire"
    assert len(doc["events"]) == doc["migration"]["last_seq"] == 10


def test_export_schema_rejects_a_document_with_a_field_it_does_not_know(
    two: tuple[str, str, str],
) -> None:
    db, confirmed, _ = two
    doc = json.loads(ok("export", confirmed, db=db))
    assert doc["stats"]["transfer"]["bytes"] == 4 * 2**20  # the test host's Perform statistics
    assert doc["stats"]["recoveries"] == 0
    doc["events"][0]["surprise"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SCHEMA).validate(doc)


def test_export_all_writes_json_lines_filtered_by_state(two: tuple[str, str, str]) -> None:
    db, confirmed, rolled_back = two
    lines = ok("export", "--all", db=db).splitlines()
    docs = [json.loads(line) for line in lines]
    assert [d["migration"]["id"] for d in docs] == [rolled_back, confirmed]
    for doc in docs:
        jsonschema.Draft202012Validator(SCHEMA).validate(doc)
    only = ok("export", "--all", "--state", "confirmed", db=db).splitlines()
    assert [json.loads(line)["migration"]["id"] for line in only] == [confirmed]


@sqlite_only
def test_export_to_a_file(two: tuple[str, str, str], tmp_path: Path) -> None:
    db, confirmed, _ = two
    out = tmp_path / "m.json"
    assert ok("export", confirmed, "-o", str(out), db=db) == ""
    assert json.loads(out.read_text())["migration"]["id"] == confirmed
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".m.json")] == []


@sqlite_only
@pytest.mark.parametrize(
    ("args", "says"),
    [
        ((), "give a migration ID or --all"),
        (("--all", "ID"), "give a migration ID or --all"),
        (("ID", "--state", "failed"), "--state and --since go with --all"),
        (("--all", "--since", "tomorrow"), "--since 'tomorrow'"),
        (("ffffffff",), "no migration matches 'ffffffff'"),
    ],
)
def test_export_bad_usage_writes_nothing(
    two: tuple[str, str, str], tmp_path: Path, args: tuple[str, ...], says: str
) -> None:
    db, confirmed, _ = two
    out = tmp_path / "out.json"
    argv = [confirmed if a == "ID" else a for a in args]
    assert says in usage_error("export", *argv, "-o", str(out), db=db)
    assert [p.name for p in tmp_path.iterdir() if "out.json" in p.name] == []


@sqlite_only
def test_export_into_a_missing_directory_is_an_error(
    two: tuple[str, str, str], tmp_path: Path
) -> None:
    db, confirmed, _ = two
    line = usage_error("export", confirmed, "-o", str(tmp_path / "nope" / "m.json"), db=db)
    assert "no such directory" in line


# -- list filters, stats ------------------------------------------------------------------------


def test_list_filters_by_domain_host_and_time(two: tuple[str, str, str], hosts: Hosts) -> None:
    db, confirmed, rolled_back = two
    ids = lambda *a: [r["id"] for r in json.loads(ok("list", "--json", *a, db=db))]  # noqa: E731
    assert ids("--domain", "vm2") == [rolled_back]
    assert ids("--host", hosts.dst_uri) == [rolled_back, confirmed]
    assert ids("--host", "no-such-host") == []
    assert ids("--since", "1h", "--until", "2h") == []
    assert ids("--until", "2999-01-01T00:00:00+00:00", "--limit", "1") == [rolled_back]


@sqlite_only
def test_list_rejects_a_bad_until(db_url: str) -> None:
    assert "--until 'soon'" in usage_error("list", "--until", "soon", db=db_url)


@sqlite_only
def test_list_table_shows_the_failure_reason(two: tuple[str, str, str]) -> None:
    db, _, rolled_back = two
    [row] = [
        line for line in ok("list", db=db).splitlines() if line.startswith(f" {rolled_back[:8]}")
    ]
    assert "perform failed: disk on fire" in row


def test_stats_json_and_table(two: tuple[str, str, str]) -> None:
    db, _, _ = two
    data = json.loads(ok("stats", "--json", db=db))
    assert data["outcomes"] == {"CONFIRMED": 1, "ROLLED_BACK": 1}
    assert data["top_reasons"] == [{"reason": "perform failed: disk on fire", "count": 1}]
    assert data["steps"]["perform"]["errors"] == 1
    text = ok("stats", db=db)
    assert "2 migrations, 0 in flight" in text
    assert "perform failed: disk on fire" in text
    assert "P95" in text


# -- prune --------------------------------------------------------------------------------------


def test_prune_dry_run_then_for_real(two: tuple[str, str, str]) -> None:
    db, confirmed, rolled_back = two
    assert json.loads(ok("prune", "--older-than", "1h", "--json", db=db)) == []
    would = json.loads(ok("prune", "--older-than", "0s", "--dry-run", "--json", db=db))
    assert {m["id"] for m in would} == {confirmed, rolled_back}
    text = ok("prune", "--older-than", "0s", "--state", "rolled_back", db=db)
    assert text.splitlines()[0] == "deleted 1 migrations with their events"
    left = [r["id"] for r in json.loads(ok("list", "--json", db=db))]
    assert left == [confirmed]


@sqlite_only
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--older-than", "yesterday"), "--older-than 'yesterday': expected a duration"),
        (("--older-than", "1d", "--state", "in_doubt"), "'in_doubt' is not one of"),
        ((), "Missing option '--older-than'"),
    ],
)
def test_prune_bad_usage(two: tuple[str, str, str], args: tuple[str, ...], says: str) -> None:
    db, _, _ = two
    assert says in usage_error("prune", *args, db=db)
    assert len(json.loads(ok("list", "--json", db=db))) == 2


# -- diagram -------------------------------------------------------------------------------------


@sqlite_only
@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz not installed")
def test_diagram_svg_and_png_with_graphviz(two: tuple[str, str, str], tmp_path: Path) -> None:
    db, _, rolled_back = two
    svg = ok("diagram", "--format", "svg", db=db)
    assert svg.lstrip().startswith("<?xml") and "</svg>" in svg
    assert "PERFORM_FAILED" in svg and "#cfe8ff" not in svg
    highlighted = ok("diagram", rolled_back, "--format", "svg", db=db)
    assert "#cfe8ff" in highlighted
    png = tmp_path / "d.png"
    ok("diagram", "--format", "png", "-o", str(png), db=db)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@sqlite_only
def test_diagram_svg_without_graphviz_is_a_clear_error(db_url: str, tmp_path: Path) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    env = {"PATH": str(bare)}
    line = usage_error("diagram", "--format", "svg", db=db_url, env=env)
    assert "needs graphviz's `dot`" in line
    assert ok("diagram", db=db_url, env=env).startswith("stateDiagram-v2")


# -- hook commands --------------------------------------------------------------------------------


def hook_script(tmp_path: Path) -> tuple[Path, Path]:
    log = tmp_path / "hook.log"
    script = tmp_path / "hook.py"
    script.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"with open({str(log)!r}, 'a') as f:\n"
        "    f.write(json.dumps([sys.argv[1:], json.load(sys.stdin)['event']['seq']]) + '\\n')\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, log


@sqlite_only
def test_hook_command_runs_for_each_event(db_url: str, hosts: Hosts, tmp_path: Path) -> None:
    script, log = hook_script(tmp_path)
    outcome = migrate(hosts, db_url, "vm1", "--hook-command", str(script))
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls[0] == [["migration_started", outcome["id"]], 1]
    assert calls[-1] == [["migration_finished", outcome["id"]], 10]
    assert len(calls) == 12


@sqlite_only
def test_a_failing_hook_command_warns_and_the_migration_goes_on(
    db_url: str, hosts: Hosts, tmp_path: Path
) -> None:
    proc = run_cli(
        "migrate", "vm1", "--src", hosts.src_uri, "--dst", hosts.dst_uri, "--hook-command", "false",
        db=db_url,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    warnings = proc.stderr.splitlines()
    assert len(warnings) == 12
    assert all(
        w.startswith("migrator: warning: hook CommandHook('false') failed") for w in warnings
    )


@sqlite_only
def test_a_missing_hook_command_is_refused_before_anything_runs(db_url: str, hosts: Hosts) -> None:
    line = usage_error(
        "migrate", "vm1", "--src", hosts.src_uri, "--dst", hosts.dst_uri,
        "--hook-command", "/no/such/hook", db=db_url,
    )  # fmt: skip
    assert "'/no/such/hook' not found" in line
    assert json.loads(ok("list", "--json", db=db_url)) == []


# -- show: hostile cookies, recovery --------------------------------------------------------------

HOSTILE = b"\x1b]0;pwned\x07\x1b[2J\xff\xfe\xc3(" + "\u202e".encode() + b"X" * (3 * 2**20)


class HostileDriver(NullDriver):
    """Begin hands out a 3 MiB cookie of escapes and invalid UTF-8; Perform fails with
    a message of the same kind."""

    def begin(self, ctx: StepContext, params: MigrationParams) -> BeginResult:
        super().begin(ctx, params)
        return BeginResult(description="\x1b[5m<domain/>", cookie=HOSTILE)

    def perform(
        self, ctx: StepContext, params: MigrationParams, cookie: bytes, uri: str
    ) -> PerformResult:
        raise RuntimeError(HOSTILE.decode("utf-8", "surrogateescape"))


@sqlite_only
def test_show_of_hostile_cookies_and_errors_is_escaped_and_bounded(db_url: str) -> None:
    name = uuid.uuid4().hex[:10]
    src, dst = HostileDriver(f"null://src-{name}"), NullDriver(f"null://dst-{name}")
    src.define("vm1")
    with Journal.open(db_url) as journal:
        m = Coordinator(journal).migrate("vm1", src=src, dst=dst)
    text = ok("show", m.id, db=db_url)
    for raw in ("\x1b", "\x07", "\u202e", "\udcff"):
        assert raw not in text
    assert len(text) < 30_000
    shown = "\\x1b]0;pwned\\x07\\x1b[2J\\xff\\xfe\\xc3(\\u202eXX"
    assert f"cookie out {len(HOSTILE)} B {shown}" in text
    assert "failed at    perform on src" in text
    listing = ok("list", db=db_url)
    assert "\x1b" not in listing and len(listing) < 2_000
    data = json.loads(ok("show", m.id, "--json", db=db_url))
    assert data["stats"]["steps"]["perform"]["errors"] == 1


@sqlite_only
def test_show_says_who_recovered_a_crashed_migration_and_after_what(
    db_url: str, hosts: Hosts
) -> None:
    crashed = run_cli(
        "migrate", "vm1", "--src", hosts.src_uri, "--dst", hosts.dst_uri,
        db=db_url, env={"MIGRATOR_FAILPOINTS": "perform.called=crash"},
    )  # fmt: skip
    assert crashed.returncode == 137
    [before] = json.loads(ok("list", "--json", db=db_url))
    ok("recover", db=db_url)
    text = ok("show", before["id"], db=db_url)
    header = {line.split(None, 1)[0]: line for line in text.splitlines()[:20] if line.strip()}
    recovered = header["recovered"]
    assert (
        f"coordinator {before['owner']} stopped in PERFORMING after seq 5 (perform intent)"
        in recovered
    )
    assert "claimed because owner process is gone" in recovered
    assert "RECOVERY by" in text
    assert os.environ.get("MIGRATOR_FAILPOINTS") is None


@sqlite_only
def test_diagram_png_to_a_terminal_is_refused(db_url: str) -> None:
    import pty

    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "migrator", "--db", db_url, "diagram", "--format", "png"],
            stdout=follower,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
    finally:
        os.close(follower)
        os.close(leader)
    assert proc.returncode == 2
    assert proc.stderr == "migrator: error: --format png is binary: give -o FILE, or pipe it\n"


def test_operator_actions_name_an_abort_and_who_honoured_it() -> None:
    from migrator.cli.render import operator_actions

    events = [
        {"seq": 6, "kind": "ok", "coordinator": "c1", "detail": None},
        {"seq": 7, "kind": "abort", "coordinator": "c1\x1b[2J", "detail": None},
    ]
    assert operator_actions(events) == [
        ("aborted", "seq 7: an operator's abort, honoured by c1\\x1b[2J")
    ]


@sqlite_only
def test_stats_rejects_a_bad_since(db_url: str) -> None:
    assert "--since 'last week'" in usage_error("stats", "--since", "last week", db=db_url)


@sqlite_only
def test_stats_of_an_empty_journal(db_url: str) -> None:
    assert ok("stats", db=db_url).splitlines() == ["0 migrations, 0 in flight"]
