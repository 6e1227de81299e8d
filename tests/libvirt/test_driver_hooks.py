"""``LibvirtDriver`` against two real daemons, hook by hook (no coordinator, no journal),
the namespaced system hosts of ``netns.py`` over ``qemu+tcp://``, ``qemu+tls://`` and
``qemu+ssh://``.

The RPC client first (version, lookup, state), then the five steps, the cancel paths
libvirt's own client takes, and the settling of Finish and Confirm on new connections after
the connections that ran the earlier steps were dropped, as when a coordinator dies.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from migrator.drivers import payload
from migrator.drivers.api import DomainState, Feature, MigrationParams
from migrator.drivers.libvirt.driver import LibvirtDriver
from migrator.drivers.libvirt.procedures import DomainStateCode
from migrator.errors import DriverError
from migrator.flags import MigrateFlags
from migrator.records import Progress, StepContext
from migrator.states import Step
from tests.libvirt import guests
from tests.libvirt.daemons import free_port
from tests.libvirt.netns import NsHost, NsPair
from tests.libvirt.nsrig import restart_resuming

pytestmark = pytest.mark.usefixtures("libvirt_driver")


@dataclass
class NsGuest:
    """A transient guest on host ``a`` of the namespaced pair, reached over ``transport``."""

    name: str
    pair: NsPair
    transport: str

    @property
    def src(self) -> NsHost:
        return self.pair.a

    @property
    def dst(self) -> NsHost:
        return self.pair.b

    @property
    def src_uri(self) -> str:
        return self.pair.uri(self.pair.a, self.transport)

    @property
    def dst_uri(self) -> str:
        return self.pair.uri(self.pair.b, self.transport)

    def states(self) -> tuple[tuple[str, str], tuple[str, str]]:
        return guests.state(self.src, self.name), guests.state(self.dst, self.name)  # type: ignore[arg-type]

    def cleanup(self, *names: str) -> None:
        for host in self.pair.hosts():
            for name in (self.name, *names):
                host.virsh("destroy", name, check=False)
                host.virsh("undefine", name, check=False)


@pytest.fixture
def guest(ns_pair: NsPair, transport: str) -> Iterator[NsGuest]:
    """A fresh running tiny guest on host a, reached over each transport in turn (conftest's
    ``transport``); destroyed on both hosts afterwards."""
    made = NsGuest(guests.unique_name(), ns_pair, transport)
    guests.create(ns_pair.a, made.name, guests.domain_xml(made.name))  # type: ignore[arg-type]
    try:
        yield made
    finally:
        made.cleanup()


@pytest.fixture
def migration_uri(ns_pair: NsPair) -> str:
    """Where host b receives the guest: its own address, a port free now."""
    return f"tcp://{ns_pair.b.addr}:{free_port()}"


@dataclass
class Hooks:
    """A source and a destination driver and one migration's parameters."""

    src: LibvirtDriver
    dst: LibvirtDriver
    params: MigrationParams
    mid: str = field(default_factory=lambda: str(uuid.uuid4()))
    samples: list[Progress] = field(default_factory=list)

    def ctx(self, step: Step) -> StepContext:
        return StepContext(self.mid, step, progress=self.samples.append)

    def begin_prepare(self) -> tuple[bytes, str]:
        begun = self.src.begin(self.ctx(Step.BEGIN), self.params)
        prepared = self.dst.prepare(
            self.ctx(Step.PREPARE), self.params, begun.cookie, begun.description
        )
        return prepared.cookie, prepared.uri

    def up_to_perform(self) -> bytes:
        cookie, uri = self.begin_prepare()
        return self.src.perform(self.ctx(Step.PERFORM), self.params, cookie, uri).cookie

    def finish(self, cookie: bytes, cancelled: bool) -> bool:
        return self.dst.finish(self.ctx(Step.FINISH), self.params, cookie, cancelled).running

    def confirm(self, cookie: bytes, cancelled: bool) -> None:
        self.src.confirm(self.ctx(Step.CONFIRM), self.params, cookie, cancelled)

    def restart(self) -> Hooks:
        """New drivers for the same migration, the old connections gone (a crash, as the
        daemons see it)."""
        for driver in (self.src, self.dst):
            driver.close()
        return Hooks(
            LibvirtDriver(self.src.uri), LibvirtDriver(self.dst.uri), self.params, self.mid
        )


@pytest.fixture
def hooks(guest: NsGuest, migration_uri: str) -> Iterator[Hooks]:
    src = LibvirtDriver(guest.src_uri)
    dst = LibvirtDriver(guest.dst_uri, migrate_uri=migration_uri)
    made = Hooks(src, dst, MigrationParams(domain=guest.name, flags=MigrateFlags.LIVE))
    yield made
    src.close()
    dst.close()


def wait_gone(guest: NsGuest, side: str, name: str, timeout: float = 15.0) -> None:
    """Until the daemon dropped ``name`` (its clean-up after a lost connection)."""
    daemon = guest.dst if side == "dst" else guest.src
    deadline = time.monotonic() + timeout
    while guests.state(daemon, name)[0] != "absent" and time.monotonic() < deadline:
        time.sleep(0.1)


def test_rpc_against_a_real_daemon(guest: NsGuest) -> None:
    driver = LibvirtDriver(guest.src_uri)
    try:
        remote = driver.control()
        assert remote.version() > 0 and remote.hostname()
        dom = remote.lookup(guest.name)
        assert dom is not None and dom.name == guest.name and dom.id > 0
        assert remote.state(dom).state == DomainStateCode.RUNNING
        assert remote.lookup("no-such-guest-here") is None
        assert remote.lib_version() >= 8_005_000  # Debian 12's 9.0: post-copy can resume
        assert driver.features() == {Feature.MIGRATION_V3, Feature.POSTCOPY}  # system mode
        assert driver.probe(guest.name).state is DomainState.RUNNING
        assert driver.probe("no-such-guest-here").state is DomainState.ABSENT
    finally:
        driver.close()


def test_five_steps_move_a_running_guest(hooks: Hooks, guest: NsGuest) -> None:
    cookie, uri = hooks.begin_prepare()
    assert uri.startswith(f"tcp://{guest.dst.addr}:")
    assert hooks.dst.probe(guest.name).state is DomainState.INCOMING
    performed = hooks.src.perform(hooks.ctx(Step.PERFORM), hooks.params, cookie, uri)
    assert int(performed.stats["memory_total"]) > 0
    assert hooks.samples and hooks.samples[-1].remaining == 0
    assert hooks.src.probe(guest.name).state is DomainState.PAUSED
    finished = hooks.dst.finish(hooks.ctx(Step.FINISH), hooks.params, performed.cookie, False)
    assert finished.running
    hooks.confirm(finished.cookie, cancelled=False)
    assert guest.states() == (("absent", ""), ("running", "migrated"))


def _max_bandwidth(daemon: NsHost, name: str) -> int:
    """The source QEMU's own migration speed limit, in bytes/s (QMP
    ``query-migrate-parameters``, asked through the daemon)."""
    query = '{"execute": "query-migrate-parameters"}'
    answer = json.loads(daemon.virsh("qemu-monitor-command", name, query))
    return int(answer["return"]["max-bandwidth"])


def test_dname_and_bandwidth_reach_libvirt(hooks: Hooks, guest: NsGuest) -> None:
    new_name = f"{guest.name}-renamed"
    hooks.params = MigrationParams(guest.name, MigrateFlags.LIVE, dname=new_name, bandwidth=50)
    try:
        cookie = hooks.up_to_perform()
        # Perform is over and the source paused: its QEMU still has the speed libvirt set
        # for this migration (libvirt resets it when Confirm ends the job).
        assert _max_bandwidth(guest.src, guest.name) == 50 * 1024 * 1024
        assert hooks.finish(cookie, cancelled=False)
        hooks.confirm(b"", cancelled=False)
        assert guests.state(guest.dst, new_name)[0] == "running"
    finally:
        guest.cleanup(new_name)


def test_without_a_bandwidth_libvirt_leaves_the_speed_unlimited(
    hooks: Hooks, guest: NsGuest
) -> None:
    """The other half of the check above: 50 MiB/s there is the parameter's doing."""
    cookie = hooks.up_to_perform()
    assert _max_bandwidth(guest.src, guest.name) > 50 * 1024 * 1024  # 8 PiB/s here
    assert hooks.finish(cookie, cancelled=False)
    hooks.confirm(b"", cancelled=False)
    assert guest.states()[1][0] == "running"


def test_cancel_after_begin_leaves_the_source_running(hooks: Hooks, guest: NsGuest) -> None:
    hooks.src.begin(hooks.ctx(Step.BEGIN), hooks.params)
    hooks.confirm(b"", cancelled=True)
    assert guest.states()[0][0] == "running"
    assert guest.states()[1][0] == "absent"


def test_cancel_after_prepare_removes_the_incoming_copy(hooks: Hooks, guest: NsGuest) -> None:
    hooks.begin_prepare()
    assert not hooks.finish(b"", cancelled=True)
    assert not hooks.finish(b"", cancelled=True)  # idempotent
    hooks.confirm(b"", cancelled=True)
    assert guest.states()[0][0] == "running"
    assert guest.states()[1][0] == "absent"


def test_after_a_crash_past_perform_the_source_is_resumed(hooks: Hooks, guest: NsGuest) -> None:
    cookie = hooks.up_to_perform()
    again = hooks.restart()
    wait_gone(guest, "dst", guest.name)
    assert guest.states()[0] == ("paused", "migrating")
    assert not again.finish(cookie, cancelled=False)  # nothing came of it on the destination
    again.confirm(cookie, cancelled=True)
    assert guest.states() == (("running", "unpaused"), ("absent", ""))
    again.src.close()
    again.dst.close()


def test_after_a_crash_past_finish_the_source_is_destroyed(hooks: Hooks, guest: NsGuest) -> None:
    cookie = hooks.up_to_perform()
    assert hooks.finish(cookie, cancelled=False)
    again = hooks.restart()
    assert again.finish(cookie, cancelled=False)  # replayed: the destination runs it
    again.confirm(cookie, cancelled=False)
    assert guest.states() == (("absent", ""), ("running", "migrated"))
    again.src.close()
    again.dst.close()


def test_settling_never_destroys_a_running_source(hooks: Hooks, guest: NsGuest) -> None:
    with pytest.raises(DriverError, match="refusing to destroy a running copy"):
        hooks.confirm(b"", cancelled=False)
    assert guest.states()[0][0] == "running"


def test_a_paused_guest_stays_paused(hooks: Hooks, guest: NsGuest) -> None:
    guest.src.virsh("suspend", guest.name)
    hooks.params = MigrationParams(guest.name, MigrateFlags.LIVE | MigrateFlags.PAUSED)
    cookie = hooks.up_to_perform()
    assert hooks.finish(cookie, cancelled=False)
    assert hooks.dst.probe(guest.name).state is DomainState.PAUSED
    hooks.confirm(b"", cancelled=False)
    assert guest.states() == (("absent", ""), ("paused", "user"))


@pytest.mark.slow
def test_abort_during_perform_resumes_the_source(guest: NsGuest, migration_uri: str) -> None:
    name = f"{guest.name}-big"
    pattern = payload.Pattern(touch_mib=32, seed=0x41424F52)
    guests.create_pattern_guest(guest.src, guest.pair.root, name, pattern, 64)
    src = LibvirtDriver(guest.src_uri)
    dst = LibvirtDriver(guest.dst_uri, migrate_uri=migration_uri)
    hooks = Hooks(src, dst, MigrationParams(name, MigrateFlags.LIVE, bandwidth=2))
    try:
        cookie, uri = hooks.begin_prepare()
        ctx = StepContext(  # an operator aborts once the first progress sample came
            hooks.mid, Step.PERFORM, progress=hooks.samples.append,
            aborted=lambda: bool(hooks.samples),
        )  # fmt: skip
        with pytest.raises(DriverError, match="aborted by an operator"):
            src.perform(ctx, hooks.params, cookie, uri)
        assert hooks.samples[0].total > 32 * 1024 * 1024
        assert not hooks.finish(b"", cancelled=True)
        hooks.confirm(b"", cancelled=True)
        assert guests.state(guest.src, name)[0] == "running"
        assert guests.state(guest.dst, name)[0] == "absent"
    finally:
        src.close()
        dst.close()
        guest.cleanup(name)


def test_a_namesake_on_the_destination_is_not_taken_for_the_guest(
    hooks: Hooks, guest: NsGuest
) -> None:
    begun = hooks.src.begin(hooks.ctx(Step.BEGIN), hooks.params)
    guests.create(guest.dst, guest.name, guests.domain_xml(guest.name))  # another UUID
    with pytest.raises(DriverError):
        hooks.dst.prepare(hooks.ctx(Step.PREPARE), hooks.params, begun.cookie, begun.description)
    assert not hooks.finish(begun.cookie, cancelled=True)  # the namesake is not ours
    hooks.confirm(begun.cookie, cancelled=True)
    assert guest.states() == (("running", "booted"), ("running", "booted"))


def restart(daemon: NsHost) -> None:
    """Stop ``daemon``'s libvirtd and start it again; its QEMUs live on. A daemon whose
    migration job waits on a client does not end on SIGTERM: it is killed after 1 s."""
    daemon.stop_libvirtd(grace=1.0)
    daemon.start_libvirtd()


@pytest.mark.slow
def test_a_source_daemon_restarted_after_perform_rolls_back(hooks: Hooks, guest: NsGuest) -> None:
    cookie = hooks.up_to_perform()
    restart(guest.src)  # libvirt's own recovery then resumes the source ("migration canceled")
    with pytest.raises(DriverError, match="Finish refused: the source lost"):
        hooks.finish(cookie, cancelled=False)  # else two copies would run
    assert hooks.dst.probe(guest.name).state is DomainState.INCOMING  # the engine's next look
    assert not hooks.finish(cookie, cancelled=True)
    hooks.confirm(b"", cancelled=True)  # Begin's connection is gone: settled on a new one
    assert guest.states()[0][0] == "running"
    assert guest.states()[1][0] == "absent"


@pytest.mark.slow
def test_a_source_daemon_restarted_after_finish_is_confirmed(hooks: Hooks, guest: NsGuest) -> None:
    cookie = hooks.up_to_perform()
    assert hooks.finish(cookie, cancelled=False)
    restart_resuming(guest.src, guest.name)  # Begin's connection is gone with the daemon
    hooks.confirm(cookie, cancelled=False)  # settled: destroys that copy, the destination runs it
    assert guest.states() == (("absent", ""), ("running", "migrated"))


def test_a_settled_confirm_undefines_a_persistent_source_when_the_flags_say_so(
    hooks: Hooks, guest: NsGuest
) -> None:
    name = f"{guest.name}-p"
    path = guest.src.home / f"{name}.xml"
    path.write_text(guests.domain_xml(name))
    path.chmod(0o644)
    guest.src.virsh("define", str(path))
    guest.src.virsh("start", name)
    flags = MigrateFlags.LIVE | MigrateFlags.PERSIST_DEST | MigrateFlags.UNDEFINE_SOURCE
    hooks.params = MigrationParams(name, flags)
    again = None
    try:
        cookie = hooks.up_to_perform()
        assert hooks.finish(cookie, cancelled=False)
        again = hooks.restart()  # a crash after Finish: Confirm is settled on new connections
        again.confirm(cookie, cancelled=False)
        assert guests.state(guest.src, name) == ("absent", "")
        assert "Persistent:     yes" in guest.dst.virsh("dominfo", name)
    finally:
        if again is not None:
            again.src.close()
            again.dst.close()
        guest.cleanup(name)
