"""``qemu+tls://`` against real libvirtds listening for TLS (``listen_tls``) in namespaces,
with certificates made by the test in libvirt's layout (``pki.py``): what an operator meets
when the certificates are wrong, each a one-line error naming the host, exit status 1 as
for any host that cannot be reached, the guest untouched; and ``no_verify=1``.
(A migration over TLS ends CONFIRMED in ``test_transports.py``.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from migrator.drivers.libvirt.driver import LibvirtDriver
from tests.libvirt.netns import NsPair
from tests.libvirt.nsrig import NsRig
from tests.libvirt.pki import CA


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> CA:
    """Another CA: the daemons know nothing of it."""
    return CA.make(tmp_path_factory.mktemp("stranger-ca"), "another CA")


def refused(rig: NsRig, pki: Path, *, host: str = "src") -> str:
    """The one line ``migrate`` prints when the source is reached with ``pki``."""
    pair = rig.pair
    target = pair.a if host == "src" else pair.b
    uri = pair.uri(target, "tls", pkipath=str(pki))
    src, dst = (uri, rig.dst) if host == "src" else (rig.src, uri)
    argv = ["migrate", rig.name, "--src", src, "--dst", dst, "--live", "--json"]
    proc = rig.cli(*argv)
    assert proc.returncode == 1, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"migrator: error: libvirt daemon qemu+tls://{target.addr}/system"), line
    assert rig.migrations() == [], "nothing is journaled"
    assert rig.states() == ("running", "absent")
    return line


@pytest.mark.parametrize("transport", ["tls"])
def test_a_server_certificate_of_another_ca_is_refused(
    ns_rig: NsRig, stranger: CA, tmp_path: Path
) -> None:
    pki = tmp_path / "pki"
    shutil.copytree(ns_rig.pair.pki, pki)
    shutil.copy(stranger.cert, pki / "cacert.pem")  # checks servers against the wrong CA
    line = refused(ns_rig, pki)
    assert "TLS handshake failed: CERTIFICATE_VERIFY_FAILED; the daemon's certificate" in line
    assert f"does not check against {pki / 'cacert.pem'}" in line


@pytest.mark.parametrize("transport", ["tls"])
def test_no_client_certificate_is_refused(ns_rig: NsRig, tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    pki.mkdir()
    shutil.copy(ns_rig.pair.pki / "cacert.pem", pki / "cacert.pem")
    line = refused(ns_rig, pki, host="dst")
    assert f"no TLS client certificate at {pki / 'clientcert.pem'}" in line


@pytest.mark.parametrize("transport", ["tls"])
def test_a_client_certificate_of_another_ca_is_refused_by_the_daemon(
    ns_rig: NsRig, stranger: CA, tmp_path: Path
) -> None:
    pki = stranger.client(tmp_path / "pki", ca=CA(ns_rig.pair.root / "ca"))
    line = refused(ns_rig, pki)
    assert line.endswith("the daemon refused our TLS client certificate or address")


def test_no_verify_accepts_a_server_it_cannot_check(
    ns_pair: NsPair, stranger: CA, tmp_path: Path
) -> None:
    pki = tmp_path / "pki"
    shutil.copytree(ns_pair.pki, pki)
    shutil.copy(stranger.cert, pki / "cacert.pem")
    driver = LibvirtDriver(ns_pair.uri(ns_pair.a, "tls", pkipath=str(pki), no_verify="1"))
    try:
        assert driver.on_control(lambda r: r.hostname()) == "lv-a"
    finally:
        driver.close()
