"""Every failure rule, met with a real cause between two real libvirt daemons.

The causes: a domain of that name already on the destination (Prepare refused), nothing
listening at the migration URI (Perform fails), the destination's QEMU killed during the
transfer or before Finish, the source's QEMU gone before Confirm, and replies lost because
the daemon's connection was cut right after a call ran (``rpctap.py``). Whatever the
cause, the migration ends with the guest on exactly one host, or ``IN_DOUBT`` with the
source paused, and no QEMU left without a domain.

The failure cases run between the namespaced system hosts (``netns.py``), each over
``qemu+tcp://``, ``qemu+tls://`` and ``qemu+ssh://``. A fault at an exact point of the
protocol is placed by RPC taps in front of both hosts, over the transport of the case
(``nettap.py``: beside the UNIX socket, on a TCP port of the host, behind a TLS
termination with the host's own certificate, at the far end of the ssh tunnel); those
cases run over the daemons' UNIX sockets too. (An abort during Perform is in
``test_transports.py``.)
"""

from __future__ import annotations

import pytest

from migrator.drivers import payload
from migrator.states import Step
from tests.libvirt import guests
from tests.libvirt.nettap import ALL_TRANSPORTS
from tests.libvirt.nsrig import NsRig, kill_qemu
from tests.libvirt.rig import kill_hook
from tests.libvirt.rpctap import Gate


def _failed_step(rig: NsRig, migration_id: str) -> tuple[Step | None, str]:
    [error, *_] = [e for e in rig.history(migration_id) if e.kind == "error"]
    return error.step, error.error_message or ""


def test_a_domain_of_that_name_on_the_destination_is_refused_before_begin(
    ns_rig: NsRig,
) -> None:
    rig = ns_rig
    xml = guests.domain_xml(rig.name)
    guests.create(rig.pair.b, rig.name, xml)  # type: ignore[arg-type]  # another guest, same name
    proc = rig.cli(*rig.argv())
    assert proc.returncode == 2, proc.stderr
    assert f"domain {rig.name!r} already exists" in proc.stderr
    assert rig.states() == ("running", "running")  # each host keeps its own guest


@pytest.mark.parametrize("transport", ALL_TRANSPORTS)
def test_prepare_refused_by_a_domain_of_that_name_on_the_destination_rolls_back(
    ns_rig: NsRig,
) -> None:
    # It appears after migrator looked and before Prepare: libvirt itself refuses.
    rig, b = ns_rig, ns_rig.pair.b
    xml = guests.domain_xml(rig.name)
    gate = Gate()
    gate.before_call(PREPARE3, lambda: guests.create(b, rig.name, xml))  # type: ignore[arg-type]
    with rig.tapped(gate) as (src, dst):
        code, outcome = rig.migrate(src=src, dst=dst)
    assert (code, outcome["state"]) == (1, "ROLLED_BACK"), outcome
    step, message = _failed_step(rig, outcome["id"])
    assert step is Step.PREPARE and "already" in message, message
    assert rig.states() == ("running", "running")  # each host keeps its own guest
    assert guests.state(rig.pair.a, rig.name) == ("running", "booted")  # type: ignore[arg-type]
    assert rig.pair.stray_qemus() == {}


@pytest.mark.parametrize("transport", ALL_TRANSPORTS)
def test_perform_to_a_migration_uri_nobody_listens_on_rolls_back(ns_rig: NsRig) -> None:
    # Prepare's QEMU listens there; killed right after Prepare, nothing answers Perform.
    rig = ns_rig
    gate = Gate()
    gate.before_call(PERFORM3, lambda: kill_qemu(rig.pair.b, rig.name))
    with rig.tapped(gate) as (src, dst):
        code, outcome = rig.migrate(src=src, dst=dst)
    assert (code, outcome["state"]) == (1, "ROLLED_BACK"), outcome
    assert _failed_step(rig, outcome["id"])[0] is Step.PERFORM
    rig.settled()


def test_destination_qemu_killed_mid_transfer_rolls_back(ns_rig: NsRig) -> None:
    rig, a = ns_rig, ns_rig.pair.a
    pattern = payload.Pattern(touch_mib=24, seed=0x4B494C4C)
    guests.destroy(a, rig.name)  # type: ignore[arg-type]
    guests.create_pattern_guest(a, rig.pair.root, rig.name, pattern, 64)  # type: ignore[arg-type]
    hook = kill_hook(rig.pair.b, rig.name, "perform", "intent", delay=1.5)
    code, outcome = rig.migrate("--bandwidth", "4", "--hook-command", hook)  # 6 s of transfer
    assert (code, outcome["state"]) == (1, "ROLLED_BACK"), outcome
    [error, *_] = [e for e in rig.history(outcome["id"]) if e.kind == "error"]
    assert error.step is Step.PERFORM
    rig.settled(rig.migrations()[0])
    region = guests.read_memory(a, rig.name, pattern.start, pattern.size)  # type: ignore[arg-type]
    assert payload.check_region(region, pattern) == 0  # the source runs on, intact


@pytest.mark.parametrize("transport", ALL_TRANSPORTS)
def test_destination_qemu_killed_before_finish_rolls_back_and_resumes_the_source(
    ns_rig: NsRig,
) -> None:
    rig = ns_rig
    gate = Gate()  # killed once Perform answered, before Finish is called
    gate.before_call(FINISH3, lambda: kill_qemu(rig.pair.b, rig.name))
    with rig.tapped(gate) as (src, dst):
        code, outcome = rig.migrate(src=src, dst=dst)
    assert outcome["state"] == "ROLLED_BACK", outcome
    assert code == 1
    rig.settled()  # the source, paused for the switch-over, runs again


@pytest.mark.parametrize("transport", ALL_TRANSPORTS)
def test_source_qemu_gone_before_confirm_still_confirms(ns_rig: NsRig) -> None:
    rig = ns_rig
    gate = Gate()  # killed once Finish answered, before Confirm is called
    gate.before_call(CONFIRM3, lambda: kill_qemu(rig.pair.a, rig.name))
    with rig.tapped(gate) as (src, dst):
        code, outcome = rig.migrate(src=src, dst=dst)
    assert outcome["state"] == "CONFIRMED", outcome
    assert code == 0
    rig.settled()


PREPARE3, PERFORM3, FINISH3, CONFIRM3 = 303, 305, 306, 307  # remote_protocol.x, *_PARAMS

LOST = {
    "prepare": (PREPARE3, "ROLLED_BACK"),
    "perform": (PERFORM3, "ROLLED_BACK"),
    "finish": (FINISH3, "CONFIRMED"),
    "confirm": (CONFIRM3, "CONFIRMED"),
}


@pytest.mark.parametrize("transport", ALL_TRANSPORTS)
@pytest.mark.parametrize("step", list(LOST))
def test_a_lost_reply_ends_with_one_copy_of_the_guest(ns_rig: NsRig, step: str) -> None:
    rig = ns_rig
    proc, expected = LOST[step]
    gate = Gate()
    gate.cut_reply(proc)
    with rig.tapped(gate) as (src, dst):
        code, outcome = rig.migrate(src=src, dst=dst)
    assert gate.cut.is_set(), f"the reply to {step} was never cut"
    if expected is not None:
        assert outcome["state"] == expected, outcome
    m = rig.settled()
    assert code == {"CONFIRMED": 0, "IN_DOUBT": 3}.get(str(m.state), 1)
