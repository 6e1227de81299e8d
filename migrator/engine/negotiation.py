"""Which protocol a migration speaks: v3 if both hosts offer it, else v2, else v1.

As libvirt's ``virDomainMigrateUnmanaged``: the features each driver advertises decide,
unless the caller forces a version. Tunnelled migration is v3 with the TUNNELLED feature on
both sides.
"""

from __future__ import annotations

from collections.abc import Set

from migrator.drivers.api import Feature
from migrator.errors import NoCommonProtocol, UsageError

FEATURE_OF: dict[int, Feature] = {
    3: Feature.MIGRATION_V3,
    2: Feature.MIGRATION_V2,
    1: Feature.MIGRATION_V1,
}


def offers(features: Set[Feature]) -> str:
    """What a host offers, for an error message: "v3, v2, tunnelled" or "nothing"."""
    names = [f"v{v}" for v, feature in FEATURE_OF.items() if feature in features]
    if Feature.TUNNELLED in features:
        names.append("tunnelled")
    return ", ".join(names) or "nothing"


def negotiate(
    src: Set[Feature],
    dst: Set[Feature],
    *,
    forced: int | None = None,
    tunnelled: bool = False,
) -> int:
    """The protocol version to use; raise NoCommonProtocol or UsageError if there is none."""
    common = set(src) & set(dst)
    if tunnelled:
        if forced not in (None, 3):
            raise UsageError(f"a tunnelled migration needs protocol 3, not {forced}")
        if not {Feature.MIGRATION_V3, Feature.TUNNELLED} <= common:
            raise UsageError(
                "tunnelled migration needs v3 and tunnelling on both hosts:"
                f" source offers {offers(src)}, destination offers {offers(dst)}"
            )
        return 3
    if forced is not None:
        if forced not in FEATURE_OF:
            raise UsageError(f"protocol must be 1, 2 or 3, not {forced}")
        if FEATURE_OF[forced] not in common:
            lacking = "source" if FEATURE_OF[forced] not in src else "destination"
            raise UsageError(
                f"protocol {forced} was asked for but the {lacking} does not speak it:"
                f" source offers {offers(src)}, destination offers {offers(dst)}"
            )
        return forced
    for version, feature in FEATURE_OF.items():
        if feature in common:
            return version
    raise NoCommonProtocol(src=offers(src), dst=offers(dst))
