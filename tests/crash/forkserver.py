"""Run ``migrator`` commands in new processes forked from a pre-warmed server.

Each command of the crash tests is a new process, as a restarted coordinator would be: its
own pid (so a crashed owner is provably gone once reaped), its own journal connections,
``os._exit(137)`` at a failpoint, SIGKILL from the test. Starting the interpreter and
importing migrator takes ~0.5 s, many times what a command does, and the crash tests run a
few hundred commands; so one server process imports migrator once and forks a child per
command, which runs the console script's ``main(argv)`` with the given environment and
working directory, its stdout and stderr in files, and exits with its exit code.

The server is single-threaded and holds no journal connection, so a fork inherits nothing
but imported modules. It reaps each child when asked to ``wait``; until then a killed
child is a zombie, which still looks alive to ``os.kill(pid, 0)``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

_SERVER = r"""
import json, os, sys, time, traceback
import migrator.cli.main, migrator.cli.render
import migrator.engine.coordinator, migrator.drivers.test.driver
import migrator.inspect, migrator.journal.store
for name in ("psycopg", "sqlalchemy.dialects.postgresql.psycopg", "sqlalchemy.dialects.sqlite"):
    try:
        __import__(name)
    except ImportError:
        pass

def child(req):
    code = 1
    try:
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        for fd, path, flags in ((0, os.devnull, os.O_RDONLY),
                                (1, req["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                                (2, req["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
            f = os.open(path, flags, 0o600)
            os.dup2(f, fd)
            os.close(f)
        from migrator.cli.main import main
        main(req["argv"])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)

def reply(obj):
    os.write(1, (json.dumps(obj) + "\n").encode())

for line in sys.stdin:
    req = json.loads(line)
    if req["op"] == "run":
        pid = os.fork()
        if pid == 0:
            child(req)
        reply({"pid": pid})
    elif req["op"] == "wait":
        deadline = time.monotonic() + req["timeout"]
        timed_out = False
        while True:
            pid, status = os.waitpid(req["pid"], os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                timed_out = True
                os.kill(req["pid"], 9)
                _, status = os.waitpid(req["pid"], 0)
                break
            time.sleep(0.005)
        reply({"returncode": os.waitstatus_to_exitcode(status), "timed_out": timed_out})
"""


@dataclass(frozen=True)
class Child:
    pid: int
    argv: list[str]
    out: Path
    err: Path


class CommandTimeout(AssertionError):
    pass


class ForkServer:
    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self._tmp = Path()
        self._seq = 0
        atexit.register(self.close)

    def _server(self) -> subprocess.Popen[str]:
        if self._proc is None or self._proc.poll() is not None:
            self._tmp = Path(tempfile.mkdtemp(prefix="migrator-forkserver-"))
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _SERVER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                bufsize=1,
            )
        return self._proc

    def _ask(self, request: dict[str, object]) -> dict[str, object]:
        with self._lock:
            server = self._server()
            assert server.stdin is not None and server.stdout is not None
            server.stdin.write(json.dumps(request) + "\n")
            server.stdin.flush()
            line = server.stdout.readline()
        if not line:
            raise RuntimeError("the fork server died")
        answer: dict[str, object] = json.loads(line)
        return answer

    def spawn(self, argv: list[str], *, env: dict[str, str], cwd: Path) -> Child:
        """Start ``migrator ARGV`` in a new process; ``wait`` for it (or ``kill`` it)."""
        with self._lock:
            self._server()
            self._seq += 1
        out, err = self._tmp / f"{self._seq}.out", self._tmp / f"{self._seq}.err"
        answer = self._ask(
            {"op": "run", "argv": argv, "env": env, "cwd": str(cwd), "out": str(out),
             "err": str(err)}
        )  # fmt: skip
        pid = answer["pid"]
        assert isinstance(pid, int)
        return Child(pid, argv, out, err)

    def wait(self, child: Child, timeout: float) -> subprocess.CompletedProcess[str]:
        """Reap ``child`` (killing it after ``timeout`` s, then failing) and read its output."""
        answer = self._ask({"op": "wait", "pid": child.pid, "timeout": timeout})
        stdout = child.out.read_text() if child.out.exists() else ""
        stderr = child.err.read_text() if child.err.exists() else ""
        for path in (child.out, child.err):
            path.unlink(missing_ok=True)
        if answer["timed_out"]:
            raise CommandTimeout(f"migrator {child.argv} ran over {timeout} s: {stderr}")
        code = answer["returncode"]
        assert isinstance(code, int)
        return subprocess.CompletedProcess(["migrator", *child.argv], code, stdout, stderr)

    @staticmethod
    def kill(child: Child) -> None:
        """SIGKILL ``child`` (already gone is fine); ``wait`` reaps it."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGKILL)

    def run(
        self, argv: list[str], *, env: dict[str, str], cwd: Path, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        return self.wait(self.spawn(argv, env=env, cwd=cwd), timeout)

    def close(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


SERVER = ForkServer()
