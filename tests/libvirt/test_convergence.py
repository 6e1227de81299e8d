"""Convergence between the namespaced system-mode libvirt hosts (``ns_pair``), with the
project's busy guest (booted from ``<os><kernel>``, fixture ``busy``) and the bandwidth
capped at 16 MiB/s so that pre-copy never converges: a budget aborts it (the source keeps
running); ``set-downtime`` from another process, made by the Perform watch with
virDomainMigrateSetMaxDowntime, lets it complete; the ``pause`` action completes it with
the memory whole. Each test over each of tcp, tls and ssh."""

from __future__ import annotations

import json
import time

from migrator.journal.store import Journal
from migrator.states import State
from tests.crash.forkserver import SERVER
from tests.libvirt.nsrig import NsRig
from tests.libvirt.postcopy_rig import busy as busy  # the fixture
from tests.libvirt.postcopy_rig import counter, whole_and_advancing


def test_an_overrun_budget_aborts_and_the_source_keeps_running(busy: NsRig) -> None:
    code, outcome = busy.migrate("--bandwidth", "16", "--budget", "32")
    assert (code, outcome["state"]) == (1, "ROLLED_BACK"), outcome
    assert "the convergence policy aborted Perform (over_budget)" in outcome["reason"]
    kinds = [e.kind for e in busy.history(outcome["id"])]
    assert "over_budget" in kinds and "action" in kinds
    assert busy.states() == ("running", "absent")
    first = counter(busy.pair.a, busy.name)
    time.sleep(0.3)
    assert counter(busy.pair.a, busy.name) > first, "the source does not run"


def test_set_downtime_from_another_process_lets_it_complete(busy: NsRig) -> None:
    child = busy.spawn("--bandwidth", "16")
    try:
        deadline = time.monotonic() + 60
        while not (found := busy.migrations()) or found[0].state is not State.PERFORMING:
            assert time.monotonic() < deadline, "never in Perform"
            time.sleep(0.1)
        time.sleep(3.0)  # a pass or so: still not converging
        [m] = busy.migrations()
        assert m.state is State.PERFORMING
        asked = busy.cli("set-downtime", found[0].id, "60000")
        assert asked.returncode == 0, asked.stderr
        done = SERVER.wait(child, 120)
    except BaseException:
        SERVER.kill(child)
        SERVER.wait(child, 30)
        raise
    assert done.returncode == 0 and json.loads(done.stdout)["state"] == "CONFIRMED", done.stderr
    with Journal.open(busy.db) as journal:
        [request] = journal.requests(found[0].id)
    assert request.outcome == "applied"
    assert busy.states() == ("absent", "running")


def test_pause_completes_with_the_downtime_reported_and_the_memory_whole(busy: NsRig) -> None:
    code, outcome = busy.migrate("--bandwidth", "16", "--budget", "32", "--on-stall", "pause")
    assert (code, outcome["state"]) == (0, "CONFIRMED"), outcome
    history = busy.history(outcome["id"])
    [action] = [e for e in history if e.kind == "action"]
    assert action.detail is not None and action.detail["outcome"] == "applied"
    performed = next(e for e in history if e.step == "perform" and e.kind == "ok")
    assert performed.detail is not None and performed.detail["paused_ms"] > 0
    whole_and_advancing(busy)  # on the destination only, no page lost, running
