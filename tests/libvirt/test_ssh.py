"""``qemu+ssh://`` against real sshds in front of real libvirtds, each host in a namespace.

The hosts (``netns.py``) accept only the key made by the test; ``known_hosts`` holds their
host keys. A migration between them over ssh, then what an operator meets when ssh says
no: a changed host key, a refused key, an unknown host key; each a one-line error naming
the host, exit status 1 as for any host that cannot be reached, the guest untouched.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from migrator.drivers.libvirt.driver import LibvirtDriver
from migrator.drivers.libvirt.errors import LibvirtUnreachable
from migrator.journal.store import Journal
from tests.conftest import ROOT
from tests.crash.forkserver import SERVER
from tests.crash.harness import cli_env
from tests.libvirt import guests
from tests.libvirt.daemons import free_port
from tests.libvirt.netns import NsHost, NsPair, run

CLI_TIMEOUT = 120.0


def state(host: NsHost, name: str) -> str:
    return guests.state(host, name)[0]  # type: ignore[arg-type]


def migrate(
    tmp_path: Path, name: str, src: str, dst: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], str]:
    db = f"sqlite:///{tmp_path / 'journal.db'}"
    Journal.open(db, upgrade=True).close()
    argv = ["migrate", name, "--src", src, "--dst", dst, "--live", "--json"]
    proc = SERVER.run(argv, env=cli_env(db), cwd=ROOT, timeout=CLI_TIMEOUT)
    assert "Traceback" not in proc.stderr, proc.stderr
    outcome = json.loads(proc.stdout) if proc.stdout.strip() else {}
    return proc, outcome, db


def dst_uri(pair: NsPair, **params: str) -> str:
    return pair.ssh_uri(pair.b, migrate_uri=f"tcp://{pair.b.addr}:{free_port()}", **params)


@pytest.mark.parametrize("proxy", ["auto", "netcat"])
def test_a_migration_over_qemu_ssh_ends_confirmed(
    ns_pair: NsPair, ns_guest: str, tmp_path: Path, proxy: str
) -> None:
    """virt-ssh-helper (installed here, so ``auto`` picks it) and ``nc -U`` alike."""
    src = ns_pair.ssh_uri(ns_pair.a, proxy=proxy)
    proc, outcome, db = migrate(tmp_path, ns_guest, src, dst_uri(ns_pair, proxy=proxy))
    assert (proc.returncode, outcome.get("state")) == (0, "CONFIRMED"), proc.stderr
    assert (state(ns_pair.a, ns_guest), state(ns_pair.b, ns_guest)) == ("absent", "running")
    with Journal.open(db) as journal:
        [m] = journal.list()
    assert m.src == src and m.dst.startswith(f"qemu+ssh://root@{ns_pair.b.addr}/")


def one_line_refusal(proc: subprocess.CompletedProcess[str], host: NsHost) -> str:
    assert proc.returncode == 1, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert f"qemu+ssh://root@{host.addr}/system" in line and line.startswith("migrator: error:")
    return line


def test_a_changed_host_key_is_a_one_line_error_naming_the_host(
    ns_pair: NsPair, ns_guest: str, tmp_path: Path
) -> None:
    wrong = tmp_path / "known_hosts"
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other"))
    other = (tmp_path / "other.pub").read_text().split()[1]
    wrong.write_text(f"{ns_pair.a.addr} ssh-ed25519 {other}\n")
    src = ns_pair.ssh_uri(ns_pair.a, known_hosts=str(wrong))
    proc, _, _ = migrate(tmp_path, ns_guest, src, dst_uri(ns_pair))
    line = one_line_refusal(proc, ns_pair.a)
    assert f"the host key of {ns_pair.a.addr} does not match the one in known_hosts" in line
    assert (state(ns_pair.a, ns_guest), state(ns_pair.b, ns_guest)) == ("running", "absent")


def test_a_refused_key_is_a_one_line_error_naming_the_host(
    ns_pair: NsPair, ns_guest: str, tmp_path: Path
) -> None:
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "stranger"))
    dst = dst_uri(ns_pair, keyfile=str(tmp_path / "stranger"))
    proc, _, _ = migrate(tmp_path, ns_guest, ns_pair.ssh_uri(ns_pair.a), dst)
    line = one_line_refusal(proc, ns_pair.b)
    assert f"ssh: {ns_pair.b.addr} refused our key (Permission denied (publickey))" in line
    assert (state(ns_pair.a, ns_guest), state(ns_pair.b, ns_guest)) == ("running", "absent")


def test_an_unknown_host_key_is_refused_and_no_verify_accepts_it(
    ns_pair: NsPair, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    strict = LibvirtDriver(ns_pair.ssh_uri(ns_pair.a, known_hosts=str(empty)))
    with pytest.raises(LibvirtUnreachable, match=r"no host key of 10\.77\.\S+ is known"):
        strict.probe("nothing")
    strict.close()
    lenient = LibvirtDriver(ns_pair.ssh_uri(ns_pair.a, known_hosts=str(empty), no_verify="1"))
    assert lenient.probe("nothing").state == "absent"
    lenient.close()
    assert ns_pair.a.host_key() in empty.read_text()  # accepted, and known from now on


def test_no_verify_still_checks_a_known_host_key(ns_pair: NsPair, tmp_path: Path) -> None:
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other"))
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{ns_pair.a.addr} {(tmp_path / 'other.pub').read_text()}")
    driver = LibvirtDriver(ns_pair.ssh_uri(ns_pair.a, known_hosts=str(wrong), no_verify="1"))
    with pytest.raises(LibvirtUnreachable, match="does not match the one in known_hosts"):
        driver.probe("nothing")
    driver.close()


def test_command_is_the_ssh_run_and_its_config_is_honoured(ns_pair: NsPair, tmp_path: Path) -> None:
    """``command=`` runs an ssh that reads its own config file, as ``~/.ssh/config`` is read:
    the host alias, user, key and known_hosts come from there, not from the URI."""
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host lab-a\n  HostName {ns_pair.a.addr}\n  User root\n"
        f"  IdentityFile {ns_pair.key}\n  UserKnownHostsFile {ns_pair.known_hosts}\n"
    )
    wrapper = tmp_path / "my-ssh"
    wrapper.write_text(f'#!/bin/sh\nexec ssh -F {config} "$@"\n')
    wrapper.chmod(0o755)
    driver = LibvirtDriver(f"qemu+ssh://lab-a/system?command={wrapper}")
    try:
        assert driver.on_control(lambda r: r.hostname()) == "lv-a"
    finally:
        driver.close()


def test_a_missing_remote_socket_names_the_host_and_the_remote_command(
    ns_pair: NsPair,
) -> None:
    driver = LibvirtDriver(ns_pair.ssh_uri(ns_pair.a, socket="/var/run/libvirt/none-sock"))
    with pytest.raises(LibvirtUnreachable) as info:
        driver.probe("nothing")
    driver.close()
    message = str(info.value)
    assert "the remote command on 10.77." in message and "\n" not in message
