"""XDR: every type round-trips; malformed data is a clean XDRError, never an IndexError."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from migrator.drivers.libvirt.procedures import ParamType
from migrator.drivers.libvirt.xdr import (
    DomainRef,
    Packer,
    ParamValue,
    Unpacker,
    XDRError,
    param_type,
)
from migrator.errors import DriverError


def test_integers_round_trip_at_their_limits() -> None:
    data = (
        Packer().sint(-(2**31)).sint(2**31 - 1).uint(2**32 - 1).hyper(-(2**63))
        .uhyper(2**64 - 1).double(1.5).boolean(True).data()
    )  # fmt: skip
    reader = Unpacker(data)
    assert reader.sint() == -(2**31)
    assert reader.sint() == 2**31 - 1
    assert reader.uint() == 2**32 - 1
    assert reader.hyper() == -(2**63)
    assert reader.uhyper() == 2**64 - 1
    assert reader.double() == 1.5
    assert reader.boolean() is True
    reader.done()


def test_opaque_and_string_are_padded_to_four_bytes() -> None:
    data = Packer().opaque(b"abcde").string("é").data()
    assert data == b"\0\0\0\5abcde\0\0\0" + b"\0\0\0\2\xc3\xa9\0\0"
    reader = Unpacker(data)
    assert reader.opaque() == b"abcde"
    assert reader.string() == "é"
    reader.done()


@given(st.binary(max_size=300), st.text(max_size=100), st.none() | st.text(max_size=20))
def test_variable_length_values_round_trip(blob: bytes, text: str, maybe: str | None) -> None:
    data = Packer().opaque(blob).string(text).optional_string(maybe).data()
    assert len(data) % 4 == 0
    reader = Unpacker(data)
    assert (reader.opaque(), reader.string(), reader.optional(reader.string)) == (blob, text, maybe)
    reader.done()


def test_arrays_and_domains_round_trip() -> None:
    dom = DomainRef("guest", bytes(range(16)), 7)
    packer = Packer()
    data = packer.array([1, 2, 3], packer.uint).domain(dom).data()
    reader = Unpacker(data)
    assert reader.array(reader.uint, limit=3) == [1, 2, 3]
    assert reader.domain() == dom
    reader.done()


def test_typed_parameters_round_trip_with_libvirts_wire_types() -> None:
    params: dict[str, ParamValue] = {
        "migrate_uri": "tcp://127.0.0.1:49152",
        "bandwidth": 100,
        "parallel.connections": 4,
        "custom_double": 0.25,
        "custom_flag": True,
        "custom_negative": -3,
    }
    assert Unpacker(Packer().params(params).data()).params() == params


def test_known_parameters_use_the_type_libvirt_expects() -> None:
    assert param_type("bandwidth", 5) is ParamType.ULLONG
    assert param_type("migrate_uri", "x") is ParamType.STRING
    assert param_type("parallel.connections", 2) is ParamType.INT
    raw = Packer().params({"bandwidth": 5}).data()
    assert raw[-12:-8] == struct.pack(">i", ParamType.ULLONG)


@pytest.mark.parametrize(
    ("data", "read"),
    [
        (b"\0\0", lambda r: r.sint()),
        (b"\0\0\0\x08abc", lambda r: r.opaque()),
        (b"\0\0\0\x02", lambda r: r.boolean()),
        (b"\0\0\0\x01\xff\0\0\0", lambda r: r.string()),
        (b"\x7f\xff\xff\xff", lambda r: r.opaque()),
        (b"\xff\xff\xff\xff", lambda r: r.array(r.uint, limit=64)),
        (b"\0\0\0\1\0\0\0\1a\0\0\0\0\0\0\x09", lambda r: r.params()),
        (b"\0\0\0\1\0\0\0\0", lambda r: r.domain()),
    ],
    ids=[
        "short-int",
        "short-opaque",
        "bad-bool",
        "not-utf8",
        "huge-opaque",
        "huge-array",
        "bad-param-type",
        "short-domain",
    ],
)
def test_malformed_data_is_a_clean_error(data: bytes, read: object) -> None:
    with pytest.raises(XDRError):
        read(Unpacker(data))  # type: ignore[operator]


def test_trailing_bytes_are_malformed_and_xdr_errors_are_driver_errors() -> None:
    reader = Unpacker(b"\0\0\0\1\0\0\0\2")
    reader.sint()
    with pytest.raises(DriverError, match="4 unexpected bytes"):
        reader.done()
