"""Connecting to real daemons: what migrator refuses, in one line, before anything runs: on
the session pair's UNIX sockets (SASL, ``qemu:///session``: what only a UNIX socket has),
and over ``qemu+tcp://``, ``qemu+tls://`` and ``qemu+ssh://`` to the namespaced hosts
(ssh's other refusals are in ``test_ssh.py``)."""

from __future__ import annotations

from pathlib import Path

from tests.libvirt.daemons import start_daemon
from tests.libvirt.nsrig import NsRig
from tests.libvirt.rig import LibvirtRig


def test_a_daemon_that_asks_for_sasl_is_refused_in_one_line(
    rig: LibvirtRig, tmp_path: Path
) -> None:
    sasl = start_daemon(rig.pair.root, "lvdst", 'auth_unix_rw = "sasl"\nauth_unix_ro = "sasl"\n')
    try:
        proc = rig.cli(*rig.argv(dst=sasl.uri))
    finally:
        sasl.stop()
    assert proc.returncode == 1, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert "asks for SASL authentication, which migrator does not speak" in line
    assert rig.states() == ("running", "absent")


def test_a_socket_nobody_listens_on_is_refused_in_one_line(rig: LibvirtRig, tmp_path: Path) -> None:
    proc = rig.cli(*rig.argv(dst=f"qemu+unix:///session?socket={tmp_path / 'none.sock'}"))
    assert proc.returncode == 1, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert str(tmp_path / "none.sock") in proc.stderr
    assert rig.states() == ("running", "absent")


def test_a_port_nobody_listens_on_is_refused_in_one_line(ns_rig: NsRig) -> None:
    rig, addr = ns_rig, ns_rig.pair.b.addr
    dst = rig.dst.replace(f"{addr}/", f"{addr}:1/", 1)  # the host is up, the port closed
    proc = rig.cli(*rig.argv(dst=dst))
    assert proc.returncode == 1, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert f"{addr}:1" in line, line
    assert rig.states() == ("running", "absent")


def test_qemu_session_finds_the_socket_in_xdg_runtime_dir_as_virsh_does(rig: LibvirtRig) -> None:
    env = {"XDG_RUNTIME_DIR": str(rig.pair.src.home / "run")}
    code, outcome = rig.migrate(src="qemu:///session", env=env)
    assert (code, outcome["state"]) == (0, "CONFIRMED"), outcome
    assert rig.states() == ("absent", "running")
