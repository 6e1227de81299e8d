"""libvirt host URIs: what each connects to, and a one-line InvalidURI for the bad ones."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from migrator.drivers.base import connect
from migrator.drivers.libvirt.driver import LibvirtDriver
from migrator.drivers.libvirt.uri import Transport, is_libvirt_uri, parse
from migrator.drivers.qmphost import QmpDriver
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
        ("qemu+ssh://h/system", "transport 'ssh' is not supported"),
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


def test_connect_routes_libvirt_uris_and_keeps_qemu_dirs_for_qmp(tmp_path: Path) -> None:
    assert is_libvirt_uri("qemu:///system") and is_libvirt_uri("qemu+tls://h/system")
    assert not is_libvirt_uri(f"qemu://{tmp_path}")
    assert isinstance(connect("qemu:///system"), LibvirtDriver)
    assert isinstance(connect("qemu+unix:///session?socket=/s"), LibvirtDriver)
    assert isinstance(connect(f"qemu://{tmp_path}"), QmpDriver)
    with pytest.raises(InvalidURI, match="not supported"):
        connect("qemu+ssh://h/system")
