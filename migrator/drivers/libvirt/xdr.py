"""XDR (RFC 4506) as libvirt's RPC uses it, and the few composite types of the migration.

``Packer`` appends big-endian 4-byte units; ``Unpacker`` reads them back and raises
``XDRError`` (a ``DriverError``) on anything malformed: a truncated body, a length over its
declared bound, a bad boolean or union tag, trailing bytes. It never reads past its buffer
and never allocates more than the buffer holds.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from migrator.drivers.libvirt.procedures import (
    MIGRATE_COOKIE_MAX,
    STRING_MAX,
    TYPED_PARAMS_MAX,
    ParamType,
)
from migrator.errors import DriverError

T = TypeVar("T")

ParamValue = int | float | bool | str
TypedParams = Mapping[str, ParamValue]
"""libvirt's typed parameters by field name; the wire type follows ``TYPED_PARAM_TYPES``
for known fields and the Python type otherwise (int: ULLONG, str: STRING, ...)."""


class XDRError(DriverError):
    """A message that does not decode: truncated, oversized or of the wrong shape."""


@dataclass(frozen=True, slots=True)
class DomainRef:
    """``remote_nonnull_domain``: how a domain is named on the wire."""

    name: str
    uuid: bytes
    id: int


_INT = struct.Struct(">i")
_UINT = struct.Struct(">I")
_HYPER = struct.Struct(">q")
_UHYPER = struct.Struct(">Q")
_DOUBLE = struct.Struct(">d")


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


class Packer:
    def __init__(self) -> None:
        self._buf = bytearray()

    def data(self) -> bytes:
        return bytes(self._buf)

    def sint(self, value: int) -> Packer:
        self._buf += _INT.pack(value)
        return self

    def uint(self, value: int) -> Packer:
        self._buf += _UINT.pack(value)
        return self

    def hyper(self, value: int) -> Packer:
        self._buf += _HYPER.pack(value)
        return self

    def uhyper(self, value: int) -> Packer:
        self._buf += _UHYPER.pack(value)
        return self

    def double(self, value: float) -> Packer:
        self._buf += _DOUBLE.pack(value)
        return self

    def boolean(self, value: bool) -> Packer:
        return self.sint(1 if value else 0)

    def fixed(self, data: bytes) -> Packer:
        """Fixed-length opaque: the bytes and their padding, no length."""
        self._buf += data + _pad(len(data))
        return self

    def opaque(self, data: bytes) -> Packer:
        return self.uint(len(data)).fixed(data)

    def string(self, text: str) -> Packer:
        return self.opaque(text.encode())

    def optional(self, value: T | None, pack: Callable[[T], object]) -> Packer:
        """An XDR optional (``*T``, e.g. ``remote_string``): a boolean, then the value."""
        if value is None:
            return self.boolean(False)
        self.boolean(True)
        pack(value)
        return self

    def optional_string(self, text: str | None) -> Packer:
        """``remote_string``: an optional ``remote_nonnull_string``."""
        return self.optional(text, self.string)

    def array(self, items: Iterable[T], pack: Callable[[T], object]) -> Packer:
        values = list(items)
        self.uint(len(values))
        for item in values:
            pack(item)
        return self

    def domain(self, dom: DomainRef) -> Packer:
        return self.string(dom.name).fixed(dom.uuid).sint(dom.id)

    def params(self, params: TypedParams) -> Packer:
        return self.array(params.items(), lambda kv: self._param(*kv))

    def _param(self, field: str, value: ParamValue) -> None:
        kind = param_type(field, value)
        self.string(field).sint(kind)
        if kind is ParamType.STRING:
            self.string(str(value))
        elif kind is ParamType.DOUBLE:
            self.double(float(value))
        else:
            _PACK_INT[kind](self, int(value))


_PACK_INT: dict[ParamType, Callable[[Packer, int], Packer]] = {
    ParamType.INT: Packer.sint,
    ParamType.UINT: Packer.uint,
    ParamType.LLONG: Packer.hyper,
    ParamType.ULLONG: Packer.uhyper,
    ParamType.BOOLEAN: Packer.sint,
}

TYPED_PARAM_TYPES: dict[str, ParamType] = {
    "migrate_uri": ParamType.STRING,
    "destination_name": ParamType.STRING,
    "destination_xml": ParamType.STRING,
    "persistent_xml": ParamType.STRING,
    "graphics_uri": ParamType.STRING,
    "listen_address": ParamType.STRING,
    "bandwidth": ParamType.ULLONG,
    "bandwidth.postcopy": ParamType.ULLONG,
    "parallel.connections": ParamType.INT,
    "disks_port": ParamType.INT,
}
"""The wire types libvirt expects for the ``VIR_MIGRATE_PARAM_*`` fields the driver sends."""


def param_type(field: str, value: ParamValue) -> ParamType:
    known = TYPED_PARAM_TYPES.get(field)
    if known is not None:
        return known
    if isinstance(value, bool):
        return ParamType.BOOLEAN
    if isinstance(value, int):
        return ParamType.ULLONG if value >= 0 else ParamType.LLONG
    if isinstance(value, float):
        return ParamType.DOUBLE
    return ParamType.STRING


class Unpacker:
    """Reads ``data``; its ``XDRError``s start with ``where`` (the daemon and the reply)."""

    def __init__(self, data: bytes, where: str = "") -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._where = where

    def _error(self, text: str) -> XDRError:
        return XDRError(f"{self._where}: {text}" if self._where else text)

    def _take(self, n: int) -> bytes:
        end = self._pos + n
        if n < 0 or end > len(self._data):
            raise self._error(
                f"truncated XDR data: needed {n} bytes at offset {self._pos},"
                f" {len(self._data) - self._pos} left"
            )
        chunk = bytes(self._data[self._pos : end])
        self._pos = end
        return chunk

    def done(self) -> None:
        """Raise unless every byte was read: a reply longer than its type is malformed."""
        left = len(self._data) - self._pos
        if left:
            raise self._error(f"{left} unexpected bytes after the XDR data")

    def sint(self) -> int:
        value: int = _INT.unpack(self._take(4))[0]
        return value

    def uint(self) -> int:
        value: int = _UINT.unpack(self._take(4))[0]
        return value

    def hyper(self) -> int:
        value: int = _HYPER.unpack(self._take(8))[0]
        return value

    def uhyper(self) -> int:
        value: int = _UHYPER.unpack(self._take(8))[0]
        return value

    def double(self) -> float:
        value: float = _DOUBLE.unpack(self._take(8))[0]
        return value

    def boolean(self) -> bool:
        value = self.sint()
        if value not in (0, 1):
            raise self._error(f"XDR boolean is {value}, not 0 or 1")
        return value == 1

    def fixed(self, n: int) -> bytes:
        data = self._take(n)
        self._take(-n % 4)
        return data

    def opaque(self, limit: int = MIGRATE_COOKIE_MAX) -> bytes:
        n = self.uint()
        if n > limit:
            raise self._error(f"XDR opaque of {n} bytes is over its limit of {limit}")
        return self.fixed(n)

    def string(self, limit: int = STRING_MAX) -> str:
        data = self.opaque(limit)
        try:
            return data.decode()
        except UnicodeDecodeError as exc:
            raise self._error(f"XDR string is not UTF-8: {exc}") from None

    def optional(self, unpack: Callable[[], T]) -> T | None:
        return unpack() if self.boolean() else None

    def array(self, unpack: Callable[[], T], limit: int) -> list[T]:
        n = self.uint()
        if n > limit:
            raise self._error(f"XDR array of {n} items is over its limit of {limit}")
        return [unpack() for _ in range(n)]

    def domain(self) -> DomainRef:
        return DomainRef(name=self.string(), uuid=self.fixed(16), id=self.sint())

    def params(self, limit: int = TYPED_PARAMS_MAX) -> dict[str, ParamValue]:
        return dict(self.array(self._param, limit))

    def _param(self) -> tuple[str, ParamValue]:
        field = self.string()
        tag = self.sint()
        try:
            kind = ParamType(tag)
        except ValueError:
            raise self._error(f"typed parameter {field!r} has unknown type {tag}") from None
        if kind is ParamType.STRING:
            return field, self.string()
        if kind is ParamType.DOUBLE:
            return field, self.double()
        if kind is ParamType.BOOLEAN:
            return field, self.sint() != 0
        return field, _UNPACK_INT[kind](self)


_UNPACK_INT: dict[ParamType, Callable[[Unpacker], int]] = {
    ParamType.INT: Unpacker.sint,
    ParamType.UINT: Unpacker.uint,
    ParamType.LLONG: Unpacker.hyper,
    ParamType.ULLONG: Unpacker.uhyper,
}
