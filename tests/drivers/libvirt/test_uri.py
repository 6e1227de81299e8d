"""libvirt host URIs: what each connects to, and a one-line InvalidURI for the bad ones."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from migrator.drivers.libvirt.driver import LibvirtDriver
from migrator.drivers.libvirt.uri import (
    KeepAliveSettings,
    Proxy,
    Transport,
    is_libvirt_uri,
    parse,
)
from migrator.drivers.qmphost import QmpDriver
from migrator.drivers.registry import connect
from migrator.errors import InvalidURI

ENV = {"XDG_RUNTIME_DIR": "/run/user/1000", "HOME": "/home/u"}


@pytest.mark.parametrize(
    ("uri", "transport", "address", "name"),
    [
        ("qemu:///system", Transport.UNIX, "/run/libvirt/libvirt-sock", "qemu:///system"),
        ("qemu:///session", Transport.UNIX, "/run/user/1000/libvirt/libvirt-sock",
         "qemu:///session"),
        ("qemu+unix:///system?socket=/tmp/s", Transport.UNIX, "/tmp/s", "qemu:///system"),
        ("qemu+unix:///session?socket=/tmp/s", Transport.UNIX, "/tmp/s", "qemu:///session"),
        ("qemu+tcp://h1/system", Transport.TCP, "h1:16509", "qemu:///system"),
        ("qemu+tcp://h1:1234/system", Transport.TCP, "h1:1234", "qemu:///system"),
        ("qemu+tls://h2/system", Transport.TLS, "h2:16514", "qemu:///system"),
        ("qemu+tls://[::1]:99/system", Transport.TLS, "::1:99", "qemu:///system"),
        ("qemu+ssh://h3/system", Transport.SSH, "h3", "qemu:///system"),
        ("qemu+ssh://root@h3:2222/system", Transport.SSH, "h3:2222", "qemu:///system"),
        ("qemu+ssh://h3/session", Transport.SSH, "h3", "qemu:///session"),
    ],
)  # fmt: skip
def test_where_each_uri_connects(uri: str, transport: Transport, address: str, name: str) -> None:
    target = parse(uri, environ=ENV)
    assert (target.transport, target.address, target.name) == (transport, address, name)


def test_session_without_runtime_dir_uses_the_cache_dir() -> None:
    assert (
        parse("qemu:///session", environ={"HOME": "/h"}).socket == "/h/.cache/libvirt/libvirt-sock"
    )


def test_tls_reads_libvirts_certificate_layout() -> None:
    files = parse("qemu+tls://h/system").tls
    assert files is not None and files.verify
    assert (files.ca, files.cert, files.key) == (
        Path("/etc/pki/CA/cacert.pem"),
        Path("/etc/pki/libvirt/clientcert.pem"),
        Path("/etc/pki/libvirt/private/clientkey.pem"),
    )


def test_pkipath_and_no_verify() -> None:
    files = parse("qemu+tls://h/system?pkipath=/p&no_verify=1").tls
    assert files is not None and not files.verify
    assert (files.ca, files.cert, files.key) == (
        Path("/p/cacert.pem"), Path("/p/clientcert.pem"), Path("/p/clientkey.pem")
    )  # fmt: skip


def test_migrate_uri_is_migrators_own_parameter() -> None:
    target = parse("qemu+unix:///session?socket=/s&migrate_uri=tcp://127.0.0.1:5000")
    assert (target.socket, target.migrate_uri) == ("/s", "tcp://127.0.0.1:5000")
    assert target.name == "qemu:///session"


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("qemu+libssh2://h/system", "transport 'libssh2' is not supported"),
        ("qemu+ssh:///system", "needs a host"),
        ("qemu+ssh://u:pw@h/system", "ssh takes no password"),
        ("qemu+ssh://h/system?mode=direct", "mode=direct cannot be used with the ssh"),
        ("qemu+ssh://h/system?mode=fast", "mode must be auto, legacy or direct"),
        ("qemu+ssh://h/system?proxy=nope", "proxy must be auto, netcat or native"),
        ("qemu+ssh://h/system?proxy=native&netcat=/bin/nc", "not valid with proxy=native"),
        ("qemu+ssh://h/system?no_verify=yes", "no_verify must be 0 or 1"),
        ("qemu+ssh://h/system?keyfile=", "keyfile= needs a value"),
        ("qemu+ssh://h/system?pkipath=/p", "for qemu+tls"),
        ("qemu+ssh://h/system?sshauth=agent", "unknown parameter 'sshauth'"),
        ("qemu+tcp://h/system?keyfile=/k", "unknown parameter 'keyfile'"),
        ("qemu+tcp://h/system?keepalive_interval=-1", "keepalive_interval must be"),
        ("qemu+tcp://h/system?keepalive_count=0", "keepalive_count 1..100"),
        ("qemu+tcp://h/system?keepalive_count=x", "keepalive"),
        ("qemu:///nowhere", "/system or /session"),
        ("qemu+tcp:///system", "needs a host"),
        ("qemu+tcp://h/session", "reached as /system"),
        ("qemu+tcp://h:notaport/system", "Port"),
        ("qemu+unix://h/system", "names no host"),
        ("qemu+unix:///system?pkipath=/p", "for qemu+tls"),
        ("qemu+tcp://h/system?socket=/s", "for qemu+unix"),
        ("qemu+tls://h/system?no_verify=yes", "no_verify must be 0 or 1"),
        ("qemu+tls://h/system?pkipath=", "needs a directory"),
        ("qemu:///system?mode=legacy", "unknown parameter 'mode'"),
    ],
)
def test_bad_uris_are_one_line_errors(uri: str, reason: str) -> None:
    with pytest.raises(InvalidURI, match=re.escape(reason)) as info:
        parse(uri)
    assert "\n" not in str(info.value)


def test_a_password_never_reaches_the_error_or_the_repr() -> None:
    with pytest.raises(InvalidURI) as info:
        parse("qemu+tcp://admin:s3cret@h/session")
    assert "s3cret" not in str(info.value)
    driver = LibvirtDriver("qemu+tcp://admin:s3cret@h/system")
    assert "s3cret" not in repr(driver) and "s3cret" not in driver.host
    assert "s3cret" not in repr(driver.target)
    with pytest.raises(InvalidURI) as info:
        parse("qemu+ssh://admin:s3cret@h/system")
    assert "s3cret" not in str(info.value) and "admin:***@h" in str(info.value)


def test_connect_routes_libvirt_uris_and_keeps_qemu_dirs_for_qmp(tmp_path: Path) -> None:
    assert is_libvirt_uri("qemu:///system") and is_libvirt_uri("qemu+tls://h/system")
    assert not is_libvirt_uri(f"qemu://{tmp_path}")
    assert isinstance(connect("qemu:///system"), LibvirtDriver)
    assert isinstance(connect("qemu+unix:///session?socket=/s"), LibvirtDriver)
    assert isinstance(connect(f"qemu://{tmp_path}"), QmpDriver)
    assert isinstance(connect("qemu+ssh://h/system"), LibvirtDriver)
    with pytest.raises(InvalidURI, match=r"unknown scheme 'qemu\+ext'"):
        connect("qemu+ext://h/system")


def test_ssh_parameters_as_libvirt_reads_them() -> None:
    ssh = parse(
        "qemu+ssh://op@h/system?keyfile=/k&known_hosts=/kh&no_verify=1&command=/opt/ssh"
        "&netcat=/opt/nc"
    ).ssh
    assert ssh is not None
    assert (ssh.user, ssh.keyfile, ssh.known_hosts, ssh.verify, ssh.command) == (
        "op", "/k", "/kh", False, "/opt/ssh"
    )  # fmt: skip
    assert (ssh.netcat, ssh.proxy) == ("/opt/nc", Proxy.NETCAT)  # a netcat means netcat
    assert ssh.socket == "/var/run/libvirt/libvirt-sock"


@pytest.mark.parametrize(
    ("query", "proxy", "helper"),
    [
        ("", Proxy.AUTO, "qemu:///system"),
        ("?socket=/s", Proxy.NETCAT, "qemu:///system"),
        ("?proxy=native", Proxy.NATIVE, "qemu:///system"),
        ("?mode=legacy", Proxy.AUTO, "qemu:///system?mode=legacy"),
        ("?socket=/s&mode=direct", Proxy.NETCAT, "qemu:///system?mode=direct"),
    ],
)
def test_what_runs_on_the_remote_end(query: str, proxy: Proxy, helper: str) -> None:
    ssh = parse(f"qemu+ssh://h/system{query}").ssh
    assert ssh is not None and (ssh.proxy, ssh.helper_uri) == (proxy, helper)


def test_a_remote_session_uses_virt_ssh_helper_as_libvirt_does() -> None:
    ssh = parse("qemu+ssh://h/session").ssh
    assert ssh is not None and (ssh.proxy, ssh.helper_uri) == (Proxy.NATIVE, "qemu:///session")


def test_keepalive_defaults_are_virshs_and_the_uri_or_the_driver_sets_them() -> None:
    assert parse("qemu+tcp://h/system").keepalive == KeepAliveSettings(5.0, 6)
    uri = "qemu+tcp://h/system?keepalive_interval=1.5&keepalive_count=3"
    assert parse(uri).keepalive == KeepAliveSettings(1.5, 3)
    assert LibvirtDriver(uri, keepalive_count=9).keepalive == KeepAliveSettings(1.5, 9)
    assert not LibvirtDriver(uri, keepalive_interval=0).keepalive.enabled
