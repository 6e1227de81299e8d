"""The multiboot guest image: header, code, and the pattern checks the tests rely on."""

from __future__ import annotations

import struct

import pytest

from migrator.drivers import payload


def test_image_has_a_valid_multiboot_header_with_load_addresses() -> None:
    image = payload.image(payload.Pattern(touch_mib=8, seed=7))
    magic, flags, checksum, header, load, _end, _bss, entry = struct.unpack_from("<8I", image)
    assert (magic, flags) == (0x1BADB002, 0x00010000)
    assert (magic + flags + checksum) & 0xFFFFFFFF == 0
    assert header == load == payload.LOAD_ADDR
    assert payload.LOAD_ADDR < entry < payload.LOAD_ADDR + len(image)
    assert len(image) == payload.IMAGE_SIZE


def test_busy_and_idle_images_differ_and_depend_on_the_seed() -> None:
    idle = payload.image(payload.Pattern(touch_mib=8, seed=7))
    assert idle != payload.image(payload.Pattern(touch_mib=8, seed=7, busy=True))
    assert idle != payload.image(payload.Pattern(touch_mib=8, seed=9))
    assert idle == payload.image(payload.Pattern(touch_mib=8, seed=7))


def test_check_region_counts_pages_that_do_not_hold_the_pattern() -> None:
    pattern = payload.Pattern(touch_mib=1, seed=0x1234)
    addresses = range(pattern.start, pattern.end, payload.PAGE)
    pages = [struct.pack("<I", pattern.value(a)).ljust(payload.PAGE, b"\0") for a in addresses]
    assert payload.check_region(b"".join(pages), pattern) == 0
    pages[3] = bytes(payload.PAGE)
    pages[7] = pages[7][:-1] + b"\1"
    assert payload.check_region(b"".join(pages), pattern) == 2


@pytest.mark.parametrize(("memory", "touch"), [(128, 119), (16, 7), (128, -1)])
def test_a_region_that_does_not_fit_the_guest_is_refused(memory: int, touch: int) -> None:
    with pytest.raises(ValueError, match="touched memory must be between 0 and"):
        payload.check_fits(memory, touch)
