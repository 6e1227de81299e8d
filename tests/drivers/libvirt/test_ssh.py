"""``qemu+ssh://``: the ssh command line and remote command libvirt builds, and ssh's
failures in one line. (Against a real sshd: ``tests/libvirt/test_ssh.py``.)"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from migrator.drivers.libvirt.errors import LibvirtTimeout, LibvirtUnreachable
from migrator.drivers.libvirt.rpc import Connection
from migrator.drivers.libvirt.ssh import argv, explain, remote_command
from migrator.drivers.libvirt.uri import parse


def ssh_argv(uri: str) -> list[str]:
    target = parse(uri)
    assert target.host is not None and target.ssh is not None
    return argv(target.host, target.port, target.ssh)


def test_the_command_line_is_libvirts_with_batch_mode() -> None:
    args = ssh_argv("qemu+ssh://h/system")
    assert args[:7] == ["ssh", "-T", "-e", "none", "-o", "BatchMode=yes", "--"]
    assert args[7] == "h" and args[8].startswith("sh -c ")
    assert len(args) == 9  # no port, user, key or known_hosts: ~/.ssh/config decides


def test_uri_parameters_become_ssh_options() -> None:
    args = ssh_argv(
        "qemu+ssh://op@h:2222/system?keyfile=/k&known_hosts=/kh&no_verify=1&command=/opt/ssh"
    )
    assert args[0] == "/opt/ssh"
    head = args[1 : args.index("--")]
    assert head == ["-p", "2222", "-l", "op", "-i", "/k", "-T", "-e", "none", "-o",
                    "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new", "-o",
                    "UserKnownHostsFile=/kh"]  # fmt: skip


def run_remote(uri: str, tmp_path: Path, tools: dict[str, str]) -> str:
    """Run the remote command here with fake ``virt-ssh-helper``/``nc`` that say who they are."""
    for name, body in tools.items():
        tool = tmp_path / name
        tool.write_text(f"#!/bin/sh\n{body}\n")
        tool.chmod(0o755)
    target = parse(uri)
    assert target.ssh is not None
    command = remote_command(target.ssh)
    for tool in ("sh", "grep"):  # and nothing else of this machine's (its virt-ssh-helper)
        (tmp_path / tool).symlink_to(shutil.which(tool) or tool)
    env = {"PATH": str(tmp_path)}
    out = subprocess.run(shlex.split(command), env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


HELPER = 'echo "helper $*"'
NC = 'echo "nc $*"'


@pytest.mark.parametrize(
    ("query", "tools", "ran"),
    [
        ("", {"virt-ssh-helper": HELPER, "nc": NC}, "helper qemu:///system"),
        ("", {"nc": NC}, "nc -U /var/run/libvirt/libvirt-sock"),
        ("?proxy=netcat", {"virt-ssh-helper": HELPER, "nc": NC},
         "nc -U /var/run/libvirt/libvirt-sock"),
        ("?socket=/my%20dir/s", {"virt-ssh-helper": HELPER, "nc": NC}, "nc -U /my dir/s"),
        ("?mode=legacy", {"virt-ssh-helper": HELPER}, "helper qemu:///system?mode=legacy"),
        ("?netcat=mync", {"mync": NC}, "nc -U /var/run/libvirt/libvirt-sock"),
    ],
)  # fmt: skip
def test_the_remote_end_runs_the_helper_if_there_else_netcat(
    tmp_path: Path, query: str, tools: dict[str, str], ran: str
) -> None:
    assert run_remote(f"qemu+ssh://h/system{query}", tmp_path, tools) == ran


def test_a_netcat_that_needs_it_gets_q0(tmp_path: Path) -> None:
    nc = (
        'case "$1" in -q) [ -z "$2" ] && echo "nc: option requires an argument -- q" >&2;'
        ' exit 1;; esac; echo "nc $*"'
    )
    assert run_remote("qemu+ssh://h/system?proxy=netcat", tmp_path, {"nc": nc}) == (
        "nc -q0 -U /var/run/libvirt/libvirt-sock"
    )


@pytest.mark.parametrize(
    ("status", "stderr", "says"),
    [
        (255, "@@@\r\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\n"
              "Host key for h has changed and you have requested strict checking.\r\n"
              "Host key verification failed.\r\n", "the host key of h does not match"),
        (255, "No ED25519 host key is known for h and you have requested strict checking.\r\n"
              "Host key verification failed.\r\n", "no host key of h is known"),
        (255, "root@h: Permission denied (publickey).\r\n",
         "ssh: h refused our key (Permission denied (publickey))"),
        (255, "ssh: connect to host h port 22: Connection refused\r\n",
         "ssh to h failed: ssh: connect to host h port 22: Connection refused"),
        (1, "nc: unix connect failed: No such file or directory\n",
         "the remote command on h (virt-ssh-helper or nc) ended with status 1: nc: unix"),
        (255, "", "ssh to h failed: exit status 255"),
    ],
)  # fmt: skip
def test_ssh_failures_are_one_line_without_the_user(status: int, stderr: str, says: str) -> None:
    line = explain("h", status, stderr)
    assert says in line and "\n" not in line and "\r" not in line and "root" not in line


def test_control_characters_from_the_remote_end_are_escaped() -> None:
    line = explain("h", 1, "evil \x1b[2J text\n")
    assert "\x1b" not in line and "\\x1b[2J" in line


def test_an_ssh_that_never_connects_times_out_with_what_it_said(tmp_path: Path) -> None:
    """``command=`` an ssh that hangs (a host that drops packets): the connect timeout."""
    hang = tmp_path / "hanging-ssh"
    hang.write_text("#!/bin/sh\necho 'debug1: Connecting to h port 22.' >&2\nexec sleep 60\n")
    hang.chmod(0o755)
    uri = f"qemu+ssh://h/system?command={hang}"
    with pytest.raises(LibvirtTimeout) as info:
        Connection.open(parse(uri), host=uri, connect_timeout=0.5)
    assert str(info.value) == (
        f"libvirt daemon {uri}: no answer through ssh to h within 0.5 s;"
        " ssh said: debug1: Connecting to h port 22."
    )


def test_an_ssh_that_cannot_run_is_one_line(tmp_path: Path) -> None:
    uri = f"qemu+ssh://h/system?command={tmp_path / 'no-such-ssh'}"
    with pytest.raises(LibvirtUnreachable, match=r"cannot run .*no-such-ssh.*No such file"):
        Connection.open(parse(uri), host=uri)
