"""The libvirt driver's errors: ``DriverError`` subclasses, so the journal keeps their text.

::

    DriverError
    ├── LibvirtError              the daemon answered a call with remote_error
    ├── LibvirtUnreachable        no connection, connection lost, or no reply in time
    │                             (a HostUnreachable: a probe asks again)
    │   └── LibvirtTimeout        a connect or a call did not finish within its timeout
    ├── LibvirtAuthUnsupported    the daemon asks for SASL or polkit authentication
    └── XDRError (xdr.py)         a message that does not decode
"""

from __future__ import annotations

from migrator.errors import DriverError, HostUnreachable


class LibvirtError(DriverError):
    """A libvirt error, with libvirt's ``virErrorNumber`` (code) and ``virErrorDomain``."""

    def __init__(self, *, code: int, domain: int, message: str, proc: str = "") -> None:
        self.code = code
        self.domain = domain
        self.message = message
        self.proc = proc
        where = f"{proc}: " if proc else ""
        super().__init__(f"{where}{message} (libvirt error {code}, domain {domain})")

    def with_hint(self, hint: str) -> LibvirtError:
        """The same error, its message followed by what to do about it."""
        message = f"{self.message}; {hint}"
        return LibvirtError(code=self.code, domain=self.domain, message=message, proc=self.proc)


class LibvirtUnreachable(HostUnreachable):
    def __init__(self, *, host: str, reason: str) -> None:
        self.host = host
        super().__init__(f"libvirt daemon {host}: {reason}")


class LibvirtTimeout(LibvirtUnreachable):
    pass


class LibvirtAuthUnsupported(DriverError):
    def __init__(self, *, host: str, offered: str) -> None:
        super().__init__(
            f"libvirt daemon {host} asks for {offered} authentication, which migrator does"
            ' not speak; give it auth none on this socket (auth_unix_rw/auth_tcp = "none")'
            " or use TLS client certificates (qemu+tls://)"
        )
