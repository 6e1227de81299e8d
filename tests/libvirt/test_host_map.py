"""``recover --host-map OLD=NEW`` against the namespaced hosts: a coordinator killed after
Finish3, then the destination reached another way than the journaled one (over ssh where
the journal says ``qemu+tcp://``: a re-addressed host, a tunnel gone). A map whose host
reports another host UUID than the one its journaled cookie names is refused before
anything is claimed; the right one recovers the migration and is noted in its recovery
event."""

from __future__ import annotations

import pytest

from migrator import failpoints
from migrator.records import EventKind
from migrator.states import State
from tests.libvirt.nsrig import NsRig


def test_a_moved_host_is_reached_through_the_map_and_another_host_is_refused(
    ns_rig: NsRig,
) -> None:
    rig, pair = ns_rig, ns_rig.pair
    code, _ = rig.migrate(env={failpoints.ENV_VAR: "finish.called=crash"})
    assert code == failpoints.CRASH_EXIT_CODE
    [m] = rig.migrations()
    assert m.state is State.FINISHING

    wrong = pair.uri(pair.a, rig.transport)  # host a: not the destination the journal met
    proc = rig.cli("recover", "--json", "--host-map", f"{m.dst}={wrong}")
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"migrator: error: --host-map: qemu+{rig.transport}://")
    assert f"is host {pair.a.host_uuid}, not host {pair.b.host_uuid}" in line
    [same] = rig.migrations()
    assert (same.state, same.fence) == (State.FINISHING, m.fence), "nothing is claimed"

    moved = pair.uri(pair.b, "tcp" if rig.transport == "ssh" else "ssh")  # reached otherwise
    code, rows = rig.recover("--host-map", f"{m.dst}={moved}")
    assert code == 0, rows
    assert [r["result"] for r in rows] == ["CONFIRMED"]
    [recovery] = [e for e in rig.history(m.id) if e.kind == EventKind.RECOVERY]
    assert recovery.detail is not None
    assert recovery.detail["host_map"] == {"dst": f"{m.dst} -> {moved}"}
    rig.settled(rig.migrations()[0])


@pytest.mark.parametrize("transport", ["tcp"])  # no host is reached
def test_a_map_of_a_host_no_migration_has_is_refused(ns_rig: NsRig) -> None:
    proc = ns_rig.cli("recover", "--host-map", "qemu+tcp://10.77.0.9/system=qemu:///system")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "migrator: error: --host-map: no migration to recover was journaled with host"
        " qemu+tcp://10.77.0.9/system (give the URI as `migrator show` prints it)"
    )
    proc = ns_rig.cli("recover", "--host-map", "nothing-to-map")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "migrator: error: --host-map 'nothing-to-map': give OLD=NEW, two host URIs"
    )
