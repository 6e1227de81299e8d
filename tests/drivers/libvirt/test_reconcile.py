"""The migration cookie's UUID: how settling tells the migrated domain from a namesake."""

from __future__ import annotations

import uuid

from migrator.drivers.libvirt.reconcile import cookie_uuid

COOKIE = (
    b"<qemu-migration>\n  <name>g</name>\n  <uuid>c88db7d4-af4f-4d10-8336-ab8aae415d86</uuid>\n"
    b"  <hostname>vm</hostname>\n  <hostuuid>5f1c2a0e-8b3d-4c6e-9a7f-1d2e3f4a5b6c</hostuuid>\n"
    b"</qemu-migration>\n\0"
)


def test_the_domain_uuid_is_read_from_a_libvirt_cookie() -> None:
    assert cookie_uuid(COOKIE) == uuid.UUID("c88db7d4-af4f-4d10-8336-ab8aae415d86").bytes


def test_anything_else_names_no_uuid() -> None:
    assert cookie_uuid(b"") is None
    assert cookie_uuid(b"\xff\xfe") is None
    assert cookie_uuid(b"<qemu-migration><uuid>nope</uuid></qemu-migration>") is None
    assert cookie_uuid(b"<other><uuid>c88db7d4-af4f-4d10-8336-ab8aae415d86</uuid></other>") is None
    assert cookie_uuid(b"<qemu-migration><name>g</name>") is None
