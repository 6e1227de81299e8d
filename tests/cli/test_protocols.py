"""Protocols v2, v1 and tunnelled v3 end to end: the real CLI, real test hosts, both journals.

Each case runs ``migrator migrate --json`` once, on SQLite and on PostgreSQL, and checks the
exit code, the journaled protocol and event sequence, and what the hosts really hold. The
failure rules are those of docs/recovery.md's "Protocols v2 and v1": before Perform, back;
a failed Perform is judged by the source; after Perform, only forward, so a destination that
does not start the domain leaves it ``LOST`` (v1 and v2 only). Every journal is replayed
afterwards by the ``db_url`` fixture.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from migrator.journal.store import Journal
from tests.cli.test_failure_rules import migrate, steps, view
from tests.conftest import ROOT, Hosts, run_cli, state_of

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_IN_DOUBT = 0, 1, 2, 3

V2 = [
    ("dump_xml", "intent", None),
    ("dump_xml", "ok", None),
    ("prepare2", "intent", None),
    ("prepare2", "ok", None),
    ("perform2", "intent", None),
    ("perform2", "ok", None),
    ("finish2", "intent", False),
    ("finish2", "ok", False),
]
V1 = [
    ("prepare1", "intent", None),
    ("prepare1", "ok", None),
    ("perform1", "intent", None),
    ("perform1", "ok", None),
    ("finish1", "intent", False),
    ("finish1", "ok", False),
]


@pytest.fixture(autouse=True)
def _journal_ready(db_url: str) -> None:
    Journal.open(db_url).close()


def where(hosts: Hosts, m: dict[str, Any]) -> tuple[str, str]:
    return state_of(hosts.src, m["domain"]), state_of(hosts.dst, m["dname"] or m["domain"])


def run(hosts: Hosts, db: str, *args: str) -> tuple[int, dict[str, Any]]:
    code, outcome = migrate(hosts, db, *args)
    m = view(db, outcome["id"])
    assert m["state"] == outcome["state"]
    seqs = [e["seq"] for e in m["events"]]
    assert seqs == list(range(1, len(seqs) + 1)), "seq has a gap"
    assert m["events"][-1]["state"] == m["state"]
    src, dst = where(hosts, m)
    assert not (src == "running" and dst == "running"), "both copies run"
    return code, m


# -- success ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("protocol", "sequence"), [(2, V2), (1, V1)], ids=["v2", "v1"])
def test_older_protocol_migrates_and_ends_confirmed(
    db_url: str, hosts: Hosts, protocol: int, sequence: list[Any]
) -> None:
    checksum = hosts.src.domains()[0]["checksum"]
    code, m = run(hosts, db_url, "--protocol", str(protocol))
    assert (code, m["state"], m["protocol"], m["reason"]) == (EXIT_OK, "CONFIRMED", protocol, None)
    assert steps(m) == sequence
    assert where(hosts, m) == ("absent", "running")
    [landed] = hosts.dst.domains()
    assert landed["checksum"] == checksum, "the image arrived whole"
    # Perform ended the source itself: no Confirm step exists in these protocols.
    assert not any(e["step"] in ("begin", "confirm") for e in m["events"])


def test_v2_description_comes_from_dump_xml_and_v1_has_none(db_url: str, hosts: Hosts) -> None:
    _, v2 = run(hosts, db_url, "--protocol", "2")
    dumped = next(e for e in v2["events"] if e["step"] == "dump_xml" and e["kind"] == "ok")
    prepare2 = next(e for e in v2["events"] if e["step"] == "prepare2" and e["kind"] == "intent")
    assert '"memory_mib": 4' in dumped["description"]
    assert prepare2["description"] == dumped["description"]
    hosts.src, hosts.dst = hosts.dst, hosts.src
    _, v1 = run(hosts, db_url, "--protocol", "1")
    assert all(e["description"] is None for e in v1["events"])
    assert where(hosts, v1) == ("absent", "running")


def test_tunnelled_v3_relays_the_data_through_the_coordinator(db_url: str, hosts: Hosts) -> None:
    checksum = hosts.src.domains()[0]["checksum"]
    code, m = run(hosts, db_url, "--tunnelled")
    assert (code, m["state"], m["protocol"]) == (EXIT_OK, "CONFIRMED", 3)
    assert "tunnelled" in m["flag_names"]
    assert [s for s, kind, _ in steps(m) if kind == "intent"] == [
        "begin", "prepare_tunnel", "perform", "finish", "confirm",
    ]  # fmt: skip
    performed = next(e for e in m["events"] if e["step"] == "perform" and e["kind"] == "ok")
    assert performed["detail"]["relayed_bytes"] == 4 * 1024 * 1024
    assert all(e["uri"] is None for e in m["events"] if e["step"] in ("prepare_tunnel", "perform"))
    assert hosts.dst.domains()[0]["checksum"] == checksum
    assert where(hosts, m) == ("absent", "running")


def test_tunnelled_perform_failure_rolls_back(db_url: str, hosts: Hosts) -> None:
    hosts.src.set_fault("perform", "error", message="tunnel broke")
    code, m = run(hosts, db_url, "--tunnelled")
    assert (code, m["state"]) == (EXIT_FAILED, "ROLLED_BACK")
    assert m["reason"] == "perform failed: tunnel broke"
    assert where(hosts, m) == ("running", "absent")
    assert not list((hosts.dst.dir / "images").glob("*.tunnel")), "the tunnel's file is gone"


def test_tunnelled_prepare_whose_reply_was_lost_is_cleaned_up(db_url: str, hosts: Hosts) -> None:
    hosts.dst.set_fault("prepare_tunnel", "lost-reply", count=1)
    code, m = run(hosts, db_url, "--tunnelled")
    assert (code, m["state"]) == (EXIT_FAILED, "ROLLED_BACK")
    assert m["reason"].startswith("prepare_tunnel failed: reply lost")
    assert [s for s, kind, _ in steps(m) if kind == "intent"] == [
        "begin", "prepare_tunnel", "finish", "confirm",
    ]  # fmt: skip
    assert where(hosts, m) == ("running", "absent")


def test_tunnelled_needs_tunnelling_on_both_hosts(db_url: str, hosts: Hosts) -> None:
    dst = f"{hosts.dst_uri}?protocols=2"
    proc = run_cli("migrate", "vm1", "--src", hosts.src_uri, "--dst", dst, "--tunnelled", db=db_url)
    assert proc.returncode == EXIT_USAGE
    assert proc.stderr == (
        "migrator: error: tunnelled migration needs v3 and tunnelling on both hosts:"
        " source offers v3, v2, v1, tunnelled, destination offers v2\n"
    )


# -- v2 failure rules ------------------------------------------------------------------------


def test_v2_dump_xml_failure_ends_failed_with_nothing_changed(db_url: str, hosts: Hosts) -> None:
    hosts.src.set_fault("dump_xml", "error", message="no XML today")
    code, m = run(hosts, db_url, "--protocol", "2")
    assert (code, m["state"], m["reason"]) == (
        EXIT_FAILED,
        "FAILED",
        "dump_xml failed: no XML today",
    )
    assert steps(m) == [("dump_xml", "intent", None), ("dump_xml", "error", None)]
    assert where(hosts, m) == ("running", "absent")


def test_v2_prepare_failure_cleans_the_destination(db_url: str, hosts: Hosts) -> None:
    hosts.dst.set_fault("prepare2", "lost-reply", count=1)
    code, m = run(hosts, db_url, "--protocol", "2")
    assert (code, m["state"]) == (EXIT_FAILED, "ROLLED_BACK")
    assert m["reason"].startswith("prepare2 failed: reply lost")
    assert steps(m)[2:] == [
        ("prepare2", "intent", None),
        ("prepare2", "error", None),
        ("finish2", "intent", True),
        ("finish2", "ok", True),
    ]
    # The lost reply had created the incoming domain: Finish2(cancelled=1) removed it.
    assert where(hosts, m) == ("running", "absent")


def test_v2_perform_failure_resumes_the_source_and_cleans_the_destination(
    db_url: str, hosts: Hosts
) -> None:
    hosts.src.set_fault("perform2", "error", message="link down")
    code, m = run(hosts, db_url, "--protocol", "2")
    assert (code, m["state"], m["reason"]) == (
        EXIT_FAILED,
        "ROLLED_BACK",
        "perform2 failed: link down",
    )
    assert steps(m)[4:] == [
        ("perform2", "intent", None),
        ("perform2", "error", None),
        ("probe", "ok", None),
        ("finish2", "intent", True),
        ("finish2", "ok", True),
    ]
    probe = next(e for e in m["events"] if e["step"] == "probe")
    assert (probe["detail"]["host"], probe["detail"]["state"]) == (hosts.src_uri, "running")
    assert where(hosts, m) == ("running", "absent")


def test_v2_perform_whose_reply_was_lost_goes_forward(db_url: str, hosts: Hosts) -> None:
    """The source ended itself and said nothing: the probe finds it gone, so forward."""
    hosts.src.set_fault("perform2", "lost-reply", count=1)
    code, m = run(hosts, db_url, "--protocol", "2")
    assert (code, m["state"]) == (EXIT_OK, "CONFIRMED")
    probe = next(e for e in m["events"] if e["step"] == "probe")
    assert probe["detail"]["state"] == "absent"
    assert probe["detail"]["detail"]["outgoing"] == {m["id"]: "completed"}
    assert steps(m)[-2:] == [("finish2", "intent", False), ("finish2", "ok", False)]
    assert where(hosts, m) == ("absent", "running")


def test_v2_finish_without_the_domain_loses_it(db_url: str, hosts: Hosts) -> None:
    """What v3 exists for: Perform ended the source, the destination did not start it."""
    hosts.dst.set_fault("finish2", "no-domain")
    code, m = run(hosts, db_url, "--protocol", "2")
    assert (code, m["state"]) == (EXIT_FAILED, "LOST")
    assert "the domain is lost" in m["reason"]
    assert where(hosts, m) == ("absent", "absent")
    last = m["events"][-1]
    assert (last["step"], last["kind"], last["detail"]) == ("finish2", "ok", {"running": False})
    exported = run_cli("export", m["id"], db=db_url)
    assert exported.returncode == EXIT_OK, exported.stderr
    schema = json.loads((ROOT / "docs" / "export.schema.json").read_text())
    jsonschema.validate(json.loads(exported.stdout), schema)


def test_v2_failing_finish_is_retried_then_probed_and_lost(db_url: str, hosts: Hosts) -> None:
    hosts.dst.set_fault("finish2", "error", message="disk full")
    code, m = run(hosts, db_url, "--protocol", "2")
    assert (code, m["state"]) == (EXIT_FAILED, "LOST")
    errors = [e for e in m["events"] if e["step"] == "finish2" and e["kind"] == "error"]
    assert [e["attempt"] for e in errors] == [1, 2, 3, 4, 5]
    probe = m["events"][-2]
    assert (probe["step"], probe["detail"]["host"], probe["detail"]["state"]) == (
        "probe", hosts.dst_uri, "incoming",
    )  # fmt: skip
    assert m["events"][-1]["kind"] == "decided"
    assert "finish2 failed and the destination does not run the domain" in m["reason"]


def test_v2_finish_retry_after_a_lost_reply_confirms(db_url: str, hosts: Hosts) -> None:
    hosts.dst.set_fault("finish2", "lost-reply", count=1)
    code, m = run(hosts, db_url, "--protocol", "2")
    assert (code, m["state"], m["reason"]) == (EXIT_OK, "CONFIRMED", None)
    assert steps(m)[-3:] == [
        ("finish2", "intent", False),
        ("finish2", "error", False),
        ("finish2", "ok", False),
    ]
    assert where(hosts, m) == ("absent", "running")


def test_v2_unprobeable_destination_is_in_doubt_until_resolved(db_url: str, hosts: Hosts) -> None:
    hosts.dst.set_fault("finish2", "lost-reply")
    hosts.dst.set_fault("probe", "error")
    code, m = run(hosts, db_url, "--protocol", "2")
    assert (code, m["state"]) == (EXIT_IN_DOUBT, "IN_DOUBT")
    assert "cannot be probed" in m["reason"]
    assert where(hosts, m) == ("absent", "running")  # Finish2 did start it; nobody could tell
    proc = run_cli("resolve", m["id"], "--running-on", "dst", "--json", db=db_url)
    assert proc.returncode == EXIT_OK, proc.stderr
    resolved = view(db_url, m["id"])
    assert resolved["state"] == "CONFIRMED"
    assert [e["kind"] for e in resolved["events"][-2:]] == ["resolve", "decided"]


# -- v1 failure rules ------------------------------------------------------------------------


def test_v1_prepare_failure_ends_failed(db_url: str, hosts: Hosts) -> None:
    hosts.dst.set_fault("prepare1", "error", message="no room")
    code, m = run(hosts, db_url, "--protocol", "1")
    assert (code, m["state"], m["reason"]) == (EXIT_FAILED, "FAILED", "prepare1 failed: no room")
    assert where(hosts, m) == ("running", "absent")


def test_v1_perform_failure_ends_failed_and_says_what_may_remain(db_url: str, hosts: Hosts) -> None:
    hosts.src.set_fault("perform1", "error", message="link down")
    code, m = run(hosts, db_url, "--protocol", "1")
    assert (code, m["state"]) == (EXIT_FAILED, "FAILED")
    assert m["reason"].startswith("perform1 failed: link down; protocol v1 cannot cancel")
    assert hosts.dst_uri in m["reason"]
    # The source resumed; v1 has no way to tell the destination to drop its incoming copy.
    assert where(hosts, m) == ("running", "incoming")
    assert not any(e["step"] == "finish1" for e in m["events"])


def test_v1_finish_without_the_domain_loses_it(db_url: str, hosts: Hosts) -> None:
    hosts.dst.set_fault("finish1", "no-domain")
    code, m = run(hosts, db_url, "--protocol", "1")
    assert (code, m["state"]) == (EXIT_FAILED, "LOST")
    assert where(hosts, m) == ("absent", "absent")


# -- flags -----------------------------------------------------------------------------------


def test_flags_by_name_any_case_are_journaled_and_shown_by_name(db_url: str, hosts: Hosts) -> None:
    code, m = run(hosts, db_url, "--flag", "LIVE", "--flag", "Change_Protection")
    assert code == EXIT_OK
    assert m["flags"] == 1 | 256
    assert m["flag_names"] == ["live", "change-protection"]


def test_unknown_flag_is_a_usage_error_listing_the_valid_ones(db_url: str, hosts: Hosts) -> None:
    proc = run_cli(
        "migrate", "vm1", "--src", hosts.src_uri, "--dst", hosts.dst_uri, "--flag", "warp",
        db=db_url,
    )  # fmt: skip
    assert proc.returncode == EXIT_USAGE
    [line] = proc.stderr.splitlines()
    assert line.startswith("migrator: error: --flag: unknown flag 'warp'; valid flags: live,")
    assert "persist-dest" in line and "undefine-source" in line
    with Journal.open(db_url) as journal:
        assert journal.list() == [], "nothing journaled"
