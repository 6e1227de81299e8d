"""The transport-sensitive cases over each way operators reach libvirt hosts:
``qemu+tcp://``, ``qemu+tls://`` (certificates of ``pki.py``) and ``qemu+ssh://`` (an
sshd in front of each daemon), between the namespaced hosts of ``netns.py``.

What depends on the transport: the migration's own connections (Begin's, Prepare's, held
to Confirm and Finish), the control connection, Perform's watch and an abort on
connections of their own, and recovery reconnecting to the URIs as journaled (a TLS
``pkipath``, an ssh ``keyfile``) after the coordinator was killed. (Every test of the
namespaced hosts runs over the three: docs/libvirt.md, "What the tests cover".)
"""

from __future__ import annotations

import json
import time

import pytest

from migrator import failpoints
from migrator.drivers import payload
from migrator.drivers.uri import redact_uri
from migrator.states import State, Step
from tests.crash.forkserver import SERVER
from tests.libvirt import guests
from tests.libvirt.nsrig import CLI_TIMEOUT, NsRig

STEPS = [Step.BEGIN, Step.PREPARE, Step.PERFORM, Step.FINISH, Step.CONFIRM]


@pytest.fixture
def rig(ns_rig: NsRig) -> NsRig:
    return ns_rig  # over each transport (conftest's ``transport``)


def test_a_migration_ends_confirmed(rig: NsRig) -> None:
    code, outcome = rig.migrate()
    assert (code, outcome["state"]) == (0, "CONFIRMED"), outcome
    [m] = rig.migrations()
    assert m.src == redact_uri(rig.src)
    assert m.dst.startswith(f"qemu+{rig.transport}://")
    assert [e.step for e in rig.history(m.id) if e.kind == "ok"] == STEPS
    rig.settled(m)


@pytest.mark.parametrize(
    ("failpoint", "end"), [("perform.called", "ROLLED_BACK"), ("finish.called", "CONFIRMED")]
)
def test_killed_then_recovered_over_the_journaled_uris(
    rig: NsRig, failpoint: str, end: str
) -> None:
    code, _ = rig.migrate(env={failpoints.ENV_VAR: f"{failpoint}=crash"})
    assert code == failpoints.CRASH_EXIT_CODE
    code, rows = rig.recover()
    assert code == 0, rows
    assert [r["result"] for r in rows] == [end], rows
    rig.settled(rig.migrations()[0])


def test_an_abort_during_perform_rolls_back_with_the_source_intact(rig: NsRig) -> None:
    pattern = payload.Pattern(touch_mib=8, seed=0x41425254)
    guests.destroy(rig.pair.a, rig.name)  # type: ignore[arg-type]
    guests.create_pattern_guest(rig.pair.a, rig.pair.root, rig.name, pattern, 64)  # type: ignore[arg-type]
    child = rig.spawn("--bandwidth", "2")  # 4 s of transfer
    deadline = time.monotonic() + 60
    while not (ms := rig.migrations()) or ms[0].state is not State.PERFORMING:
        assert time.monotonic() < deadline, "never reached PERFORMING"
        time.sleep(0.05)
    time.sleep(0.5)

    aborted = rig.cli("abort", ms[0].id)

    assert aborted.returncode == 0, aborted.stderr
    done = SERVER.wait(child, CLI_TIMEOUT)
    assert json.loads(done.stdout)["state"] == "ROLLED_BACK", done.stdout + done.stderr
    rig.settled(rig.migrations()[0])
    region = guests.read_memory(rig.pair.a, rig.name, pattern.start, pattern.size)  # type: ignore[arg-type]
    assert payload.check_region(region, pattern) == 0
