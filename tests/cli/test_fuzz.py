"""Fuzzing every command and option: arbitrary text and numbers in, only the documented
exit codes out, never a traceback nor an unexpected error, and after exit 2 one line on
stderr and a journal and hosts byte-for-byte as before.

Each example runs one command line on a fresh copy of a seeded directory (a journal with
one confirmed migration, two test hosts). ``HYPOTHESIS_PROFILE=long`` runs many more
examples (docs/errors.md gives the figures of a long run). Left out, because a valid
value starts something that does not end by itself or is large: ``metrics`` (serves
until stopped), ``qmp-host define`` (starts QEMU), ``demo`` (writes a domain of up to
4 GiB); their options are in the catalogue (``tests/cli/errors_catalogue.py``).
Values that could reach outside the scratch directory (journal URLs, host URIs, output
files, hook commands) are drawn from forms that stay inside it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.cli.test_errors_catalogue import Scratch, seeded_dir  # noqa: F401  # a fixture
from tests.conftest import ROOT, run_cli

settings.register_profile(
    "ci",
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "long",
    max_examples=5000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
DOCUMENTED_EXITS = {0, 1, 2, 3}

numbers = st.one_of(
    st.integers(-(10**40), 10**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["0", "-0", "nan", "inf", "-inf", "1e400", "\u0661\u0662", "\uff15", "0x10"]),
)
texts = st.text(max_size=40)
anything = st.one_of(numbers, texts, st.just(""))
ids = st.one_of(
    st.sampled_from(["{id}", "", "-", "0"]),
    st.text("0123456789abcdef-", max_size=40),
    texts,
)
safe_tail = st.text(max_size=30).filter(lambda t: ".." not in t and "\x00" not in t)
uris = st.one_of(
    st.sampled_from(["{src}", "{dst}", "{src}/", "test://relative", "null://", "qmp://{tmp}/q"]),
    safe_tail.map(lambda t: "test://{tmp}/" + t),
    texts.filter(lambda t: ":" not in t),
    st.just("test://{tmp}/{long}"),
)
outputs = st.one_of(
    safe_tail.map(lambda t: "{tmp}/out/" + t.replace("/", "_")),
    st.sampled_from(["/nonexistent/x", "/proc/x", "{tmp}", ""]),
)
dbs = st.one_of(
    st.sampled_from(["{db}", "sqlite://", "sqlite:///:memory:", "{db}?x=1", "not-a-url"]),
    texts.map(lambda t: "x" + t),
    st.sampled_from(["postgresql+psycopg://u@127.0.0.1:1/x", "postgresql+psycopg://u@h:abc/x"]),
)
hooks = st.one_of(st.sampled_from(["", "true"]), safe_tail.map(lambda t: "/nonexistent/" + t))
limits_files = st.one_of(
    st.sampled_from(["{tmp}/limits.toml", "{tmp}/limits.json", "{tmp}", "/dev/zero", ""]),
    safe_tail.map(lambda t: "{tmp}/out/" + t.replace("/", "_")),
)
states = st.one_of(st.sampled_from(["confirmed", "FAILED", "in_doubt", "rolled_back"]), texts)

FLAG = None
"""An option taking no value."""
COMMANDS: dict[tuple[str, ...], tuple[list[st.SearchStrategy[str]], dict[str, object]]] = {
    ("migrate",): (
        [texts | st.just("vm1")],
        {
            "--src": uris, "--dst": uris, "--live": FLAG, "--tunnelled": FLAG,
            "--flag": texts | st.sampled_from(["live", "persist-dest"]), "--bandwidth": numbers,
            "--dname": texts, "--protocol": numbers, "--timeout": numbers,
            "--hook-command": hooks, "--json": FLAG,
        },
    ),
    ("list",): (
        [],
        {
            "--state": states, "--domain": texts, "--host": texts, "--since": anything,
            "--until": anything, "--limit": numbers, "--all": FLAG, "--json": FLAG,
        },
    ),
    ("show",): ([ids], {"--json": FLAG}),
    ("export",): ([ids], {"--all": FLAG, "--state": states, "--since": anything, "-o": outputs}),
    ("stats",): ([], {"--since": anything, "--json": FLAG}),
    ("diagram",): ([ids], {"--format": texts | st.just("dot"), "-o": outputs}),
    ("recover",): (
        [],
        {
            "--dry-run": FLAG, "--steal": FLAG, "--timeout": numbers, "--hook-command": hooks,
            "--by-lease-only": FLAG, "--json": FLAG,
        },
    ),
    ("resolve",): (
        [ids], {"--running-on": texts | st.sampled_from(["src", "dst"]), "--json": FLAG}
    ),
    ("replay",): ([ids], {"--json": FLAG}),
    ("abort",): ([ids], {}),
    ("prune",): (
        [],
        {"--older-than": anything, "--state": states, "--dry-run": FLAG, "--json": FLAG},
    ),
    ("db", "upgrade"): ([], {}),
    ("db", "current"): ([], {}),
    ("test-host", "define"): (
        [uris, texts | st.just("vm9")],
        {"--memory": numbers, "--paused": FLAG, "--persistent": FLAG},
    ),
    ("test-host", "list"): ([uris], {"--json": FLAG}),
    ("test-host", "fault"): (
        [uris],
        {
            "--step": texts | st.just("perform"), "--mode": texts | st.just("slow"),
            "--seconds": numbers, "--message": texts, "--count": numbers, "--clear": FLAG,
        },
    ),
    ("worker",): (
        [],
        {
            "--concurrency": numbers, "--max-outgoing": numbers, "--max-incoming": numbers,
            "--limits": limits_files, "--lease": numbers, "--poll": numbers,
            "--timeout": numbers, "--hook-command": hooks, "--by-lease-only": FLAG,
            "--quiet": FLAG,
        },
    ),
    ("workers",): (
        [], {"--within": numbers, "--lease": numbers, "--all": FLAG, "--json": FLAG}
    ),
    ("workers", "forget"): ([ids], {"--lease": numbers}),
    ("qmp-host", "list"): ([uris], {"--json": FLAG}),
    ("qmp-host", "destroy"): ([uris, texts], {}),
    ("qmp-host", "set-downtime"): ([uris, texts, numbers], {}),
}  # fmt: skip


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    path = draw(st.sampled_from(sorted(COMMANDS)))
    arguments, options = COMMANDS[path]
    argv = [draw(s) for s in arguments[: draw(st.integers(0, len(arguments)))]]
    names = draw(st.lists(st.sampled_from(sorted(options)), max_size=5)) if options else []
    for name in names:
        value = options[name]
        argv.append(name)
        if value is not FLAG:
            assert isinstance(value, st.SearchStrategy)
            argv.append(draw(value))
    argv = draw(st.permutations(argv)) if draw(st.booleans()) else argv
    if draw(st.integers(0, 9)) == 0:
        argv.insert(draw(st.integers(0, len(argv))), draw(anything))
    front = ["--db", draw(dbs)] if draw(st.integers(0, 4)) == 0 else []
    return [*front, *path, *argv]


def _huge_test_domain(argv: list[str]) -> bool:
    """A valid --memory over 64 MiB for test-host define writes that much: not here."""
    if "define" not in argv or "--memory" not in argv[:-1]:
        return False
    value = argv[argv.index("--memory") + 1].strip()
    return value.isascii() and value.lstrip("+").isdigit() and int(value) > 64


@pytest.mark.timeout(0 if PROFILE == "long" else 120)
@settings(settings.get_profile(PROFILE))
@given(argv=command_lines())
def test_any_command_line_gets_a_documented_exit_and_no_traceback(
    argv: list[str],
    seeded_dir: Path,  # noqa: F811  # the fixture imported above
) -> None:
    assume(not _huge_test_domain(argv))
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        scratch = Scratch(Path(tmp) / "s")
        shutil.copytree(seeded_dir, scratch.tmp)
        (scratch.tmp / "out").mkdir()
        _limits_files(scratch.tmp)
        before = scratch.snapshot()
        filled = [scratch.fill(a) for a in argv]
        if argv[2 if argv[0] == "--db" else 0] == "worker":
            proc = _run_worker(filled, db=scratch.values["{db}"])
        else:
            proc = run_cli(*filled, db=scratch.values["{db}"], timeout=60)
        assert "Traceback" not in proc.stderr, proc.stderr
        assert "error: unexpected " not in proc.stderr, proc.stderr
        assert proc.returncode in DOCUMENTED_EXITS, (proc.returncode, proc.stderr)
        if proc.returncode == 2:
            lines = proc.stderr.splitlines()
            assert len(lines) == 1 and lines[0].startswith("migrator: error: "), proc.stderr
            assert scratch.snapshot() == before


def _run_worker(argv: list[str], *, db: str) -> subprocess.CompletedProcess[str]:
    """``migrator worker ...`` as a real process: one refused exits by itself; one that
    starts (its "worker ID started" line) is stopped with SIGTERM and must exit 0."""
    env = {**os.environ, "MIGRATOR_DB": db}
    env.pop("MIGRATOR_FAILPOINTS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "migrator", *argv], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    assert proc.stderr is not None
    lines = []
    try:
        while line := proc.stderr.readline():
            lines.append(line)
            if line.startswith("worker ") and line.endswith(" started\n"):
                proc.send_signal(signal.SIGTERM)
                lines = []  # a started worker's log is not an error message
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "".join(lines) + err)


def _limits_files(tmp: Path) -> None:
    (tmp / "limits.toml").write_text("max_outgoing = 2\n[hosts.x]\nmax_incoming = 1\n")
    (tmp / "limits.json").write_text('{"max_incoming": true}')


@pytest.mark.parametrize("profile", ["ci", "long"])
def test_the_fuzz_profiles_are_registered(profile: str) -> None:
    assert settings.get_profile(profile).deadline is None
