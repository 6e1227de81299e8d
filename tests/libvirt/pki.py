"""Certificates for TLS libvirt daemons, made with the ``openssl`` command line.

``make`` writes, under one directory, a CA and certificates signed by it in the layout
libvirt reads: ``ca/cacert.pem``; per server ``server-NAME/servercert.pem`` and
``server-NAME/serverkey.pem`` (the daemon's ``cert_file``/``key_file``, for its address
as subject alternative name); and a client directory (``pkipath=``) holding
``cacert.pem``, ``clientcert.pem`` and ``clientkey.pem``. The extensions are the ones
libvirt's own documentation asks ``certtool`` for: a CA with ``CA:TRUE`` and
``keyCertSign``; servers with ``serverAuth``, clients with ``clientAuth``, both with
``digitalSignature`` and ``keyEncipherment``.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

DAYS = "2"
LEAF_EXT = (
    "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
)


def missing() -> str | None:
    return None if shutil.which("openssl") else "openssl not found (apt-get install openssl)"


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]}: {proc.stderr.strip()}")


@dataclass(frozen=True)
class CA:
    """A certificate authority in ``home``: ``cacert.pem`` and ``cakey.pem``."""

    home: Path

    @property
    def cert(self) -> Path:
        return self.home / "cacert.pem"

    @classmethod
    def make(cls, home: Path, name: str = "migrator test CA") -> CA:
        home.mkdir(parents=True, exist_ok=True)
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", DAYS,
                 "-subj", f"/CN={name}", "-keyout", "cakey.pem", "-out", "cacert.pem",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=home)  # fmt: skip
        return cls(home)

    def sign(self, out: Path, stem: str, subject: str, ext: str) -> None:
        """``out/{stem}cert.pem`` and ``out/{stem}key.pem`` for ``subject``, signed here."""
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{stem}.ext").write_text(LEAF_EXT + ext)
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={subject}",
                 "-keyout", f"{stem}key.pem", "-out", f"{stem}.csr", cwd=out)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{stem}.csr", "-CA", str(self.cert),
                 "-CAkey", str(self.home / "cakey.pem"), "-CAcreateserial", "-days", DAYS,
                 "-extfile", f"{stem}.ext", "-out", f"{stem}cert.pem", cwd=out)  # fmt: skip

    def server(self, out: Path, addr: str) -> None:
        """``servercert.pem`` and ``serverkey.pem`` for a daemon listening on ``addr``."""
        self.sign(out, "server", addr, f"extendedKeyUsage=serverAuth\nsubjectAltName=IP:{addr}\n")

    def client(self, out: Path, ca: CA | None = None) -> Path:
        """A ``pkipath`` directory: a client certificate signed here, and ``ca``'s (by
        default this CA's) certificate to check servers with."""
        self.sign(out, "client", "migrator", "extendedKeyUsage=clientAuth\n")
        shutil.copy((ca or self).cert, out / "cacert.pem")
        return out
