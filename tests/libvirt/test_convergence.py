"""Convergence on two real libvirt daemons, with the project's busy guest (booted from
``<os><kernel>``) and the bandwidth capped at 16 MiB/s so that pre-copy never converges:
a budget aborts it (the source keeps running); ``set-downtime`` from another process, made
by the Perform watch with virDomainMigrateSetMaxDowntime, lets it complete."""

from __future__ import annotations

import json
import time

import pytest

from migrator.journal.store import Journal
from migrator.states import State
from tests import busyguest
from tests.crash.forkserver import SERVER
from tests.libvirt import guests
from tests.libvirt.conftest import REQUIRE_LIBVIRT
from tests.libvirt.rig import LibvirtRig


@pytest.fixture
def busy_rig(rig: LibvirtRig) -> LibvirtRig:
    """The rig's guest replaced by the busy guest, dirtying its memory."""
    kernel = busyguest.build(rig.pair.root, required=REQUIRE_LIBVIRT)
    guests.destroy(rig.pair.src, rig.name)
    guests.create(rig.pair.src, rig.name, guests.domain_xml(rig.name, kernel=kernel))
    first = _counter(rig)
    deadline = time.monotonic() + 30
    while _counter(rig) <= first:
        assert time.monotonic() < deadline, "the busy guest does not run"
        time.sleep(0.1)
    return rig


def _counter(rig: LibvirtRig) -> int:
    raw = guests.read_memory(rig.pair.src, rig.name, busyguest.COUNTER, 4)
    return int.from_bytes(raw, "little")


def test_an_overrun_budget_aborts_and_the_source_keeps_running(busy_rig: LibvirtRig) -> None:
    code, outcome = busy_rig.migrate("--bandwidth", "16", "--budget", "32")
    assert (code, outcome["state"]) == (1, "ROLLED_BACK"), outcome
    assert "the convergence policy aborted Perform (over_budget)" in outcome["reason"]
    kinds = [e.kind for e in busy_rig.history(outcome["id"])]
    assert "over_budget" in kinds and "action" in kinds
    assert busy_rig.states() == ("running", "absent")
    first = _counter(busy_rig)
    time.sleep(0.3)
    assert _counter(busy_rig) > first, "the source does not run"


def test_set_downtime_from_another_process_lets_it_complete(busy_rig: LibvirtRig) -> None:
    child = busy_rig.spawn("--bandwidth", "16")
    try:
        deadline = time.monotonic() + 60
        while not (found := busy_rig.migrations()) or found[0].state is not State.PERFORMING:
            assert time.monotonic() < deadline, "never in Perform"
            time.sleep(0.1)
        time.sleep(3.0)  # a pass or so: still not converging
        assert busy_rig.only().state is State.PERFORMING
        asked = busy_rig.cli("set-downtime", found[0].id, "60000")
        assert asked.returncode == 0, asked.stderr
        done = SERVER.wait(child, 120)
    except BaseException:
        SERVER.kill(child)
        SERVER.wait(child, 30)
        raise
    assert done.returncode == 0 and json.loads(done.stdout)["state"] == "CONFIRMED", done.stderr
    with Journal.open(busy_rig.db) as journal:
        [request] = journal.requests(found[0].id)
    assert request.outcome == "applied"
    assert busy_rig.states() == ("absent", "running")


def test_pause_completes_with_the_downtime_reported_and_the_memory_whole(
    busy_rig: LibvirtRig,
) -> None:
    code, outcome = busy_rig.migrate("--bandwidth", "16", "--budget", "32", "--on-stall", "pause")
    assert (code, outcome["state"]) == (0, "CONFIRMED"), outcome
    history = busy_rig.history(outcome["id"])
    [action] = [e for e in history if e.kind == "action"]
    assert action.detail is not None and action.detail["outcome"] == "applied"
    performed = next(e for e in history if e.step == "perform" and e.kind == "ok")
    assert performed.detail is not None and performed.detail["paused_ms"] > 0
    assert busy_rig.states() == ("absent", "running")
    busy_rig.pair.dst.virsh("suspend", busy_rig.name)  # one still snapshot
    start, end = busyguest.REGION
    region = guests.read_memory(busy_rig.pair.dst, busy_rig.name, start, end - start)
    assert busyguest.one_sweep_edge(region), "a page was lost: the sweep is not one edge"
