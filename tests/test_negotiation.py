"""Negotiation: v3 if both hosts offer it, else v2, else v1, else "no common protocol".

The pure rule for every pairing of capabilities, then the same through the CLI with real
test hosts whose URIs restrict what they speak (``test:///DIR?protocols=1,2``), checking the
protocol the journal records and the one-line errors.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from migrator.drivers.api import Feature
from migrator.drivers.test import TestDriver
from migrator.engine.negotiation import FEATURE_OF, negotiate, offers
from migrator.errors import InvalidURI, NoCommonProtocol, UsageError
from migrator.journal.store import Journal
from tests.conftest import run_cli

VERSIONS = (1, 2, 3)
CAPABILITIES = [
    frozenset(c) for n in range(len(VERSIONS) + 1) for c in itertools.combinations(VERSIONS, n)
]


def features(versions: frozenset[int]) -> frozenset[Feature]:
    return frozenset(FEATURE_OF[v] for v in versions)


def label(versions: frozenset[int]) -> str:
    return "".join(f"v{v}" for v in sorted(versions)) or "none"


@pytest.mark.parametrize(
    ("src", "dst"),
    list(itertools.product(CAPABILITIES, repeat=2)),
    ids=[f"{label(a)}-{label(b)}" for a, b in itertools.product(CAPABILITIES, repeat=2)],
)
def test_the_highest_common_version_wins(src: frozenset[int], dst: frozenset[int]) -> None:
    common = src & dst
    if common:
        assert negotiate(features(src), features(dst)) == max(common)
    else:
        with pytest.raises(NoCommonProtocol) as err:
            negotiate(features(src), features(dst))
        assert str(err.value) == (
            f"no common migration protocol: source offers {offers(features(src))},"
            f" destination offers {offers(features(dst))}"
        )


@pytest.mark.parametrize("forced", VERSIONS)
@pytest.mark.parametrize("src", CAPABILITIES, ids=label)
def test_a_forced_version_is_used_only_if_both_speak_it(forced: int, src: frozenset[int]) -> None:
    dst = frozenset(VERSIONS)
    if forced in src:
        assert negotiate(features(src), features(dst), forced=forced) == forced
    else:
        with pytest.raises(UsageError, match=f"protocol {forced} was asked for but the source"):
            negotiate(features(src), features(dst), forced=forced)


def test_tunnelled_needs_v3_and_tunnelling_on_both_sides() -> None:
    full = frozenset(Feature)
    assert negotiate(full, full, tunnelled=True) == 3
    with pytest.raises(UsageError, match="tunnelled migration needs v3 and tunnelling"):
        negotiate(full, full - {Feature.TUNNELLED}, tunnelled=True)
    with pytest.raises(UsageError, match="needs protocol 3, not 2"):
        negotiate(full, full, tunnelled=True, forced=2)


def test_offers_names_versions_and_tunnelling() -> None:
    assert offers(frozenset(Feature)) == "v3, v2, v1, tunnelled"
    assert offers(frozenset()) == "nothing"


@pytest.mark.parametrize(
    "query", ["?protocols=4", "?protocols=", "?protocols=x", "?speed=fast", "?protocols=1,9"]
)
def test_a_bad_protocols_parameter_is_an_invalid_uri(tmp_path: Path, query: str) -> None:
    with pytest.raises(InvalidURI):
        TestDriver(f"test://{tmp_path}{query}")


# -- through the CLI -------------------------------------------------------------------------

PAIRINGS = [
    ("1,2,3", "1,2,3", 3),
    ("1,2,3", "1,2", 2),
    ("2", "1,2,3", 2),
    ("1,3", "1,2", 1),
    ("1", "1", 1),
]


@pytest.mark.parametrize(("src", "dst", "expected"), PAIRINGS)
def test_migrate_negotiates_and_journals_the_protocol(
    tmp_path: Path, src: str, dst: str, expected: int
) -> None:
    db = f"sqlite:///{tmp_path / 'journal.db'}"
    a = TestDriver(f"test://{tmp_path / 'a'}?protocols={src}")
    b = TestDriver(f"test://{tmp_path / 'b'}?protocols={dst}")
    a.define("vm1")
    proc = run_cli("migrate", "vm1", "--src", a.uri, "--dst", b.uri, "--json", db=db)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["protocol"] == expected
    shown = run_cli("show", json.loads(proc.stdout)["id"], "--json", db=db)
    assert json.loads(shown.stdout)["protocol"] == expected


def test_no_common_protocol_exits_2_naming_what_each_side_offers(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'journal.db'}"
    a = TestDriver(f"test://{tmp_path / 'a'}?protocols=1")
    b = TestDriver(f"test://{tmp_path / 'b'}?protocols=2,3")
    a.define("vm1")
    proc = run_cli("migrate", "vm1", "--src", a.uri, "--dst", b.uri, db=db)
    assert proc.returncode == 2
    assert proc.stderr == (
        "migrator: error: no common migration protocol: source offers v1,"
        " destination offers v3, v2, tunnelled\n"
    )
    with Journal.open(db) as journal:
        assert journal.list() == []
    assert a.domains()[0]["state"] == "running"


def test_forcing_a_protocol_a_side_lacks_exits_2(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'journal.db'}"
    a = TestDriver(f"test://{tmp_path / 'a'}")
    b = TestDriver(f"test://{tmp_path / 'b'}?protocols=3")
    a.define("vm1")
    proc = run_cli("migrate", "vm1", "--src", a.uri, "--dst", b.uri, "--protocol", "2", db=db)
    assert proc.returncode == 2
    assert proc.stderr.startswith(
        "migrator: error: protocol 2 was asked for but the destination does not speak it"
    )
    proc = run_cli("migrate", "vm1", "--src", a.uri, "--dst", b.uri, "--protocol", "4", db=db)
    assert proc.returncode == 2
    assert "--protocol" in proc.stderr
