"""Every driver, the built-in ones too, found by URI scheme through entry points.

A driver package declares a factory ``(uri: str) -> Driver`` in the entry-point group
``migrator.drivers``, named after its scheme (``pyproject.toml``)::

    [project.entry-points."migrator.drivers"]
    test = "migrator.drivers.test:TestDriver"

Nothing is imported until ``connect`` needs a driver: importing this module (or running
``migrator --help``) loads no driver.
"""

from __future__ import annotations

import functools
from importlib.metadata import EntryPoint, entry_points

from migrator.drivers.api import Driver, DriverFactory
from migrator.drivers.uri import driver_scheme
from migrator.errors import InvalidURI
from migrator.limits import MAX_URI_CHARS, is_utf8

ENTRY_POINT_GROUP = "migrator.drivers"


@functools.cache
def _entry_points() -> dict[str, EntryPoint]:
    """The declared drivers by scheme, read once per process from installed metadata."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def schemes() -> list[str]:
    """The schemes of every installed driver, sorted."""
    return sorted(_entry_points())


def _missing(scheme: str) -> str:
    known = ", ".join(schemes()) or "none (reinstall migrator: pip install -e .)"
    return f"unknown scheme {scheme!r}; known schemes: {known}"


def factory(uri: str) -> DriverFactory:
    """The factory of the driver serving ``uri``; InvalidURI naming the known schemes."""
    scheme = driver_scheme(uri)
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
