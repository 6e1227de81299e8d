"""Every driver by URI scheme: migrator's own from a table, others through entry points.

A driver package declares a factory ``(uri: str) -> Driver`` in the entry-point group
``migrator.drivers``, named after its scheme (``pyproject.toml``)::

    [project.entry-points."migrator.drivers"]
    acme = "acme_migrator.driver:AcmeDriver"

migrator's own drivers are declared the same way in its ``pyproject.toml`` and, for
``connect``, in ``BUILT_IN`` (a test keeps the two equal): a URI of a built-in scheme
opens its driver without reading the installed packages' metadata, which costs a command
more than all of its connections (``importlib.metadata`` and the scan, about 0.04 s). The
entry points are read, once per process, for any other scheme and for ``schemes()``; a
package that declares a built-in scheme again does not replace the built-in driver.

Nothing is imported until ``connect`` needs a driver: importing this module (or running
``migrator --help``) loads no driver.
"""

from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING

from migrator.drivers.api import Driver, DriverFactory
from migrator.drivers.uri import driver_scheme
from migrator.errors import InvalidURI
from migrator.limits import MAX_URI_CHARS, is_utf8

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

ENTRY_POINT_GROUP = "migrator.drivers"

_LIBVIRT = "migrator.drivers.libvirt.driver:LibvirtDriver"
BUILT_IN: dict[str, str] = {
    "null": "migrator.drivers.null:NullDriver",
    "qemu": _LIBVIRT,
    "qemu+ssh": _LIBVIRT,
    "qemu+tcp": _LIBVIRT,
    "qemu+tls": _LIBVIRT,
    "qemu+unix": _LIBVIRT,
    "qmp": "migrator.drivers.qmphost:QmpDriver",
    "test": "migrator.drivers.test:TestDriver",
}
"""migrator's own drivers, ``module:attribute`` by scheme, as its entry points declare them."""


@functools.cache
def _entry_points() -> dict[str, EntryPoint]:
    """The declared drivers by scheme, read once per process from installed metadata."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def schemes() -> list[str]:
    """The schemes of every installed driver, sorted."""
    return sorted(set(BUILT_IN) | set(_entry_points()))


def _missing(scheme: str) -> str:
    return f"unknown scheme {scheme!r}; known schemes: {', '.join(schemes())}"


def _built_in(target: str) -> DriverFactory:
    module, _, attribute = target.partition(":")
    loaded: DriverFactory = getattr(importlib.import_module(module), attribute)
    return loaded


def factory(uri: str) -> DriverFactory:
    """The factory of the driver serving ``uri``; InvalidURI naming the known schemes."""
    scheme = driver_scheme(uri)
    if scheme in BUILT_IN:
        return _built_in(BUILT_IN[scheme])
    ep = _entry_points().get(scheme)
    if ep is None:
        raise InvalidURI(uri=uri, reason=_missing(scheme))
    loaded: DriverFactory = ep.load()
    return loaded


def connect(uri: str) -> Driver:
    """Open the driver for a host URI; raise InvalidURI for an unknown scheme or bad URI."""
    if len(uri) > MAX_URI_CHARS:
        raise InvalidURI(uri=uri[:60] + "...", reason=f"longer than {MAX_URI_CHARS} characters")
    if not is_utf8(uri) or "\x00" in uri:
        raise InvalidURI(uri=uri, reason="not valid UTF-8 text")
    return factory(uri)(uri)
