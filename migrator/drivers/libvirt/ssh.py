"""``qemu+ssh://``: the system ``ssh`` client as libvirt's ``ssh`` transport runs it.

The command line is libvirt's (``virNetSocketNewConnectSSH``): ``ssh [-p PORT] [-l USER]
[-i KEYFILE] -T -e none -o BatchMode=yes [...] -- HOST COMMAND``, so ``~/.ssh/config``,
ssh-agent and ``known_hosts`` apply as they do to ``virsh``. The remote command is
libvirt's too (``virNetClientSSHHelperCommand``): ``virt-ssh-helper URI`` when the host
has it (``proxy=auto``, the default for ``/system``), else ``nc -U SOCKET`` (``-q0`` added
for the netcats that need it). The RPC runs over a socket pair tied to ssh's stdin and
stdout; ssh's stderr goes to a file, read when the connection fails.

Where migrator differs: ``BatchMode=yes`` always (a coordinator runs unattended: a
password prompt would stall a step; ``no_tty=`` is accepted and changes nothing),
``no_verify=1`` is ``StrictHostKeyChecking=accept-new`` (what libvirt documents: new host
keys accepted, known ones still checked), ``known_hosts=FILE`` is ``UserKnownHostsFile``,
and ssh runs in a session of its own, so a Ctrl-C meant for migrator does not cut the
connection under a step that is still being journaled.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import socket
import subprocess
import tempfile
from typing import IO

from migrator.drivers.libvirt.uri import Proxy, SSHOptions

EXIT_WAIT = 2.0
"""Seconds to wait for ssh to exit (and say why) once its pipe closed."""
STDERR_KEPT = 4096


def remote_command(options: SSHOptions) -> str:
    """The command ssh runs on the remote host: one ``sh -c`` script."""
    netcat = shlex.quote(options.netcat or "nc")
    nc = (
        f"if {netcat} -q 2>&1 | grep 'requires an argument' >/dev/null 2>&1;"
        f" then ARG=-q0; else ARG=; fi; exec {netcat} $ARG -U {shlex.quote(options.socket)}"
    )
    helper = f"exec virt-ssh-helper {shlex.quote(options.helper_uri)}"
    if options.proxy is Proxy.NETCAT:
        script = nc
    elif options.proxy is Proxy.NATIVE:
        script = helper
    else:
        script = f"if command -v virt-ssh-helper >/dev/null 2>&1; then {helper}; else {nc}; fi"
    return f"sh -c {shlex.quote(script)}"


def argv(host: str, port: int | None, options: SSHOptions) -> list[str]:
    """The ssh command line for ``host``."""
    args = [options.command]
    if port is not None:
        args += ["-p", str(port)]
    if options.user:
        args += ["-l", options.user]
    if options.keyfile:
        args += ["-i", options.keyfile]
    args += ["-T", "-e", "none", "-o", "BatchMode=yes"]
    if not options.verify:
        args += ["-o", "StrictHostKeyChecking=accept-new"]
    if options.known_hosts:
        args += ["-o", f"UserKnownHostsFile={options.known_hosts}"]
    return [*args, "--", host, remote_command(options)]


class SSHTunnel:
    """A running ssh whose stdin and stdout are ``sock``'s peer."""

    def __init__(self, host: str, port: int | None, options: SSHOptions) -> None:
        self.hostname = host
        self.sock, theirs = socket.socketpair()
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 -- closed by close()
        self._said = ""
        """What ssh wrote to stderr, kept once the file is closed."""
        try:
            self.process = subprocess.Popen(
                argv(host, port, options), stdin=theirs.fileno(), stdout=theirs.fileno(),
                stderr=self._stderr,
                start_new_session=True, close_fds=True,
            )  # fmt: skip
        except OSError as exc:
            self.sock.close()
            self._stderr.close()
            raise SSHError(f"cannot run {options.command!r}: {exc.strerror or exc}") from None
        finally:
            theirs.close()

    def explain(self) -> str:
        """Why the tunnel closed, from ssh's exit status and what it wrote to stderr."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(EXIT_WAIT)
        return explain(self.hostname, self.process.poll(), self._read_stderr())

    def silent(self, seconds: float) -> str:
        """Why nothing came back through a tunnel still open after ``seconds``."""
        said = _clean(_last_line(self._read_stderr()))
        return f"no answer through ssh to {self.hostname} within {seconds:g} s" + (
            f"; ssh said: {said}" if said else ""
        )

    def _read_stderr(self) -> str:
        if self._stderr.closed:
            return self._said
        try:
            size = self._stderr.seek(0, os.SEEK_END)
            self._stderr.seek(max(0, size - STDERR_KEPT))
            return self._stderr.read().decode(errors="replace")
        except (OSError, ValueError):
            return ""

    def close(self) -> None:
        """Close our end (ssh then ends the remote command and exits), then reap ssh."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        try:
            self.process.wait(EXIT_WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._said = self._read_stderr()
        self._stderr.close()


class SSHError(Exception):
    """ssh could not be started; the reason, in one line."""


_CHANGED = ("REMOTE HOST IDENTIFICATION HAS CHANGED", "has changed and you have requested strict")
_DENIED = re.compile(r"Permission denied \([\w,-]*\)")
_UNKNOWN = re.compile(r"No \S+ host key is known for|Host key verification failed")


def explain(host: str, status: int | None, stderr: str) -> str:
    """One line from ssh's exit ``status`` and ``stderr``; no user name, no control bytes."""
    last = _last_line(stderr)
    if any(mark in stderr for mark in _CHANGED):
        return (
            f"ssh: the host key of {host} does not match the one in known_hosts (the host"
            " was reinstalled, or someone is in the middle); ssh said: Host key verification"
            " failed"
        )
    if _UNKNOWN.search(stderr):
        return (
            f"ssh: no host key of {host} is known (add it to known_hosts, or give no_verify=1"
            " to accept a new one)"
        )
    denied = _DENIED.search(stderr)
    if denied:
        return (
            f"ssh: {host} refused our key ({denied.group(0)}); give keyfile=, or a key in"
            " ssh-agent or ~/.ssh/config that the host accepts"
        )
    if status == 255:
        return f"ssh to {host} failed: {_clean(last) or 'exit status 255'}"
    if status is not None:
        said = f": {_clean(last)}" if last else ""
        return (
            f"the remote command on {host} (virt-ssh-helper or nc) ended with status {status}{said}"
        )
    return f"ssh to {host}: the connection closed{': ' + _clean(last) if last else ''}"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines()]
    return next((line for line in reversed(lines) if line), "")


def _clean(line: str) -> str:
    """ssh's words without ``user@`` and with control characters escaped."""
    line = re.sub(r"^\S+@(?=\S+: )", "", line)
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in line)[:300]
