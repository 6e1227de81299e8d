"""Settling Finish and Confirm: what a host holds, the table of reconcile.py, the cookie UUID."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from migrator.drivers.api import DomainState
from migrator.drivers.libvirt.procedures import DomainStateCode as S
from migrator.drivers.libvirt.procedures import JobOperation, JobType, Proc
from migrator.drivers.libvirt.procedures import PausedReason as P
from migrator.drivers.libvirt.procedures import RunningReason as R
from migrator.drivers.libvirt.reconcile import (
    Holds,
    Seen,
    cookie_uuid,
    look,
    settle_confirm,
    settle_finish,
)
from migrator.drivers.libvirt.remote import READS, DomainStatus, JobInfo, Remote
from migrator.drivers.libvirt.xdr import DomainRef, Packer
from migrator.errors import DriverError, StepAbandoned
from migrator.flags import MigrateFlags
from migrator.records import StepContext
from migrator.states import Step
from tests.drivers.libvirt.fake_daemon import FakeDaemon, Handler, fail, reply

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


# -- the settling table, against a scripted daemon -------------------------------------------

DOM = DomainRef("g", bytes(range(16)), 5)


def host(state: int | None, reason: int = 0, job: int | None = 0) -> tuple[FakeDaemon, Remote]:
    """A daemon holding ``g`` in ``state`` (None: no such domain); ``job`` None: job
    statistics refused as on a migration's destination."""
    handlers: dict[int, Handler] = {
        Proc.DOMAIN_RESUME: reply(), Proc.DOMAIN_DESTROY: reply(),
        Proc.DOMAIN_UNDEFINE_FLAGS: reply(),
    }  # fmt: skip
    if state is None:
        handlers[Proc.DOMAIN_LOOKUP_BY_NAME] = fail(42, 10, "Domain not found")
        handlers[Proc.DOMAIN_LOOKUP_BY_UUID] = fail(42, 10, "Domain not found")
    else:
        handlers[Proc.DOMAIN_LOOKUP_BY_NAME] = reply(Packer().domain(DOM).data())
        handlers[Proc.DOMAIN_LOOKUP_BY_UUID] = reply(Packer().domain(DOM).data())
        handlers[Proc.DOMAIN_GET_STATE] = reply(Packer().sint(state).sint(reason).data())
    if job is None:
        handlers[Proc.DOMAIN_GET_JOB_INFO] = fail(84, 10, "only on the source host")
        handlers[Proc.DOMAIN_GET_JOB_STATS] = fail(84, 10, "only on the source host")
    else:
        handlers[Proc.DOMAIN_GET_JOB_INFO] = reply(Packer().sint(job).data() + bytes(80))
        handlers[Proc.DOMAIN_GET_JOB_STATS] = reply(Packer().sint(job).params({}).data())
    fake = FakeDaemon(handlers)
    return fake, Remote(fake.connection())


@pytest.fixture
def made() -> Iterator[list[FakeDaemon]]:
    fakes: list[FakeDaemon] = []
    yield fakes
    for fake in fakes:
        fake.close()


def seen(made: list[FakeDaemon], state: int | None, reason: int, job: int | None) -> Holds:
    fake, remote = host(state, reason, job)
    made.append(fake)
    return look(remote, "g").holds


@pytest.mark.parametrize(
    ("state", "reason", "job", "holds"),
    [
        (None, 0, 0, Holds.ABSENT),
        (S.SHUTOFF, 0, 0, Holds.SHUTOFF),
        (S.SHUTDOWN, 0, 0, Holds.SHUTOFF),  # also a QEMU on its way out
        (S.RUNNING, 1, 0, Holds.RUNNING),
        (S.PAUSED, P.USER, 0, Holds.PAUSED),
        (S.PAUSED, P.MIGRATION, 0, Holds.PAUSED_BY_MIGRATION),
        (S.PAUSED, P.MIGRATION, None, Holds.INCOMING),
        (S.PAUSED, P.STARTING_UP, None, Holds.INCOMING),
        (S.PAUSED, P.STARTING_UP, 0, Holds.INCOMING),
    ],
)
def test_what_a_host_holds(
    made: list[FakeDaemon], state: int | None, reason: int, job: int | None, holds: Holds
) -> None:
    assert seen(made, state, reason, job) is holds


def test_a_domain_that_vanishes_while_looked_at_is_absent(made: list[FakeDaemon]) -> None:
    fake, remote = host(S.RUNNING)
    made.append(fake)
    fake.handlers[Proc.DOMAIN_GET_STATE] = fail(42, 10, "Domain not found")
    assert look(remote, "g").holds is Holds.ABSENT


def test_a_domain_paused_by_a_migration_is_active_only_while_its_job_runs() -> None:
    status = DomainStatus(S.PAUSED, P.MIGRATION)
    running_job = JobInfo(JobType.UNBOUNDED, 1, 0, 0, 0)
    assert Seen(Holds.PAUSED_BY_MIGRATION, DOM, status, running_job).state is DomainState.PAUSED
    no_job = JobInfo(JobType.NONE, 0, 0, 0, 0)
    assert Seen(Holds.PAUSED_BY_MIGRATION, DOM, status, no_job).state is DomainState.INCOMING
    assert Seen(Holds.INCOMING, DOM, status).state is DomainState.INCOMING


def settle(
    made: list[FakeDaemon],
    step: str,
    cancelled: bool,
    state: int | None,
    reason: int = 0,
    job: int | None = 0,
    flags: int = 0,
) -> tuple[object, list[int]]:
    fake, remote = host(state, reason, job)
    made.append(fake)
    if step == "finish":
        result: object = settle_finish(remote, "g", cancelled=cancelled)
    else:
        result = settle_confirm(remote, "g", cancelled=cancelled, flags=MigrateFlags(flags))
    acts = (Proc.DOMAIN_RESUME, Proc.DOMAIN_DESTROY, Proc.DOMAIN_UNDEFINE_FLAGS)
    return result, [f.proc for f in fake.received if f.proc in acts]


def test_finish_is_settled_from_the_destination(made: list[FakeDaemon]) -> None:
    assert settle(made, "finish", False, None) == (False, [])
    assert settle(made, "finish", False, S.RUNNING, 2) == (True, [])
    assert settle(made, "finish", False, S.PAUSED, P.USER) == (True, [])
    assert settle(made, "finish", True, S.PAUSED, P.MIGRATION, None) == (
        False, [Proc.DOMAIN_DESTROY]
    )  # fmt: skip
    assert settle(made, "finish", True, S.PAUSED, P.MIGRATION) == (False, [Proc.DOMAIN_DESTROY])
    assert settle(made, "finish", True, S.RUNNING, 2) == (True, [])  # never destroyed
    with pytest.raises(DriverError, match="cannot start it on a new connection"):
        settle(made, "finish", False, S.PAUSED, P.MIGRATION, None)


def test_confirm_is_settled_from_the_source(made: list[FakeDaemon]) -> None:
    undefine = int(MigrateFlags.UNDEFINE_SOURCE)
    assert settle(made, "confirm", True, S.PAUSED, P.MIGRATION)[1] == [Proc.DOMAIN_RESUME]
    assert settle(made, "confirm", True, S.PAUSED, P.USER)[1] == []  # paused before: stays
    assert settle(made, "confirm", True, S.RUNNING, 1)[1] == []
    assert settle(made, "confirm", False, None)[1] == []
    assert settle(made, "confirm", False, S.PAUSED, P.MIGRATION)[1] == [Proc.DOMAIN_DESTROY]
    assert settle(made, "confirm", False, S.SHUTOFF, 0, flags=undefine)[1] == [
        Proc.DOMAIN_UNDEFINE_FLAGS
    ]
    for resumed_by_someone in (R.BOOTED, R.UNPAUSED, R.MIGRATED, R.UNKNOWN):
        with pytest.raises(DriverError, match="refusing to destroy a running copy"):
            settle(made, "confirm", False, S.RUNNING, resumed_by_someone)
    # resumed by its own daemon as if Finish3 had failed, while the destination runs it
    note, acts = settle(made, "confirm", False, S.RUNNING, R.MIGRATION_CANCELED)
    assert acts == [Proc.DOMAIN_DESTROY]
    assert "resumed it as a cancelled migration" in note["source"]  # type: ignore[index]
    assert settle(made, "confirm", True, S.RUNNING, R.MIGRATION_CANCELED)[1] == []
    with pytest.raises(DriverError, match="nothing to resume"):
        settle(made, "confirm", True, None)


def _outgoing_job(fake: FakeDaemon, operation: int, *, ends: bool = True) -> None:
    """The domain runs a job doing ``operation``; DOMAIN_ABORT_JOB ends it (if ``ends``)."""
    stats = Packer().sint(JobType.UNBOUNDED).params({"operation": operation}).data()
    fake.handlers[Proc.DOMAIN_GET_JOB_STATS] = reply(stats)
    fake.handlers[Proc.DOMAIN_GET_JOB_INFO] = reply(
        Packer().sint(JobType.UNBOUNDED).data() + bytes(80)
    )

    def abort(call: object) -> list[bytes]:
        if ends:
            none = Packer().sint(JobType.NONE).data() + bytes(80)
            fake.handlers[Proc.DOMAIN_GET_JOB_INFO] = reply(none)
        return reply()(call)  # type: ignore[arg-type]

    fake.handlers[Proc.DOMAIN_ABORT_JOB] = abort  # type: ignore[assignment]


def test_a_dead_clients_outgoing_job_is_aborted_before_the_source_is_resumed(
    made: list[FakeDaemon],
) -> None:
    fake, remote = host(S.RUNNING, 1)
    made.append(fake)
    _outgoing_job(fake, JobOperation.MIGRATION_OUT)
    note = settle_confirm(remote, "g", cancelled=True, flags=MigrateFlags(0), wait=5)
    assert [f.proc for f in fake.received].count(Proc.DOMAIN_ABORT_JOB) == 1
    assert "outgoing migration job of a client gone was aborted; it ended after" in note["job"]


def test_a_job_that_outlasts_the_wait_is_said_so_and_another_job_is_left_alone(
    made: list[FakeDaemon],
) -> None:
    fake, remote = host(S.RUNNING, 1)
    made.append(fake)
    _outgoing_job(fake, JobOperation.MIGRATION_OUT, ends=False)
    note = settle_confirm(remote, "g", cancelled=True, flags=MigrateFlags(0), wait=0.3)
    assert "still running after 0.3 s" in note["job"]
    other, remote = host(S.RUNNING, 1)
    made.append(other)
    _outgoing_job(other, JobOperation.SAVE)
    note = settle_confirm(remote, "g", cancelled=True, flags=MigrateFlags(0))
    assert Proc.DOMAIN_ABORT_JOB not in [f.proc for f in other.received]
    assert "not a migration's, left alone" in note["job"]


# -- a call the engine abandoned (``Remote.guarded``) ---------------------------------------


def _stopped() -> StepContext:
    return StepContext("m1", Step.CONFIRM, stopped=lambda: True)


@pytest.mark.parametrize(
    ("step", "cancelled", "state", "reason", "job"),
    [
        ("finish", True, S.PAUSED, P.MIGRATION, None),  # would destroy the incoming copy
        ("confirm", True, S.PAUSED, P.MIGRATION, 0),  # would resume the source
        ("confirm", False, S.PAUSED, P.MIGRATION, 0),  # would destroy it
    ],
)
def test_an_abandoned_settling_looks_but_changes_nothing(
    made: list[FakeDaemon], step: str, cancelled: bool, state: int, reason: int, job: int | None
) -> None:
    fake, remote = host(state, reason, job)
    made.append(fake)
    guarded = remote.guarded(_stopped())
    with pytest.raises(StepAbandoned):
        if step == "finish":
            settle_finish(guarded, "g", cancelled=cancelled)
        else:
            settle_confirm(guarded, "g", cancelled=cancelled, flags=MigrateFlags(0))
    received = [f.proc for f in fake.received]
    assert Proc.DOMAIN_GET_STATE in received  # it looked
    assert not set(received) - READS - {Proc.AUTH_LIST, Proc.CONNECT_OPEN}


def test_an_abandoned_settling_aborts_no_job(made: list[FakeDaemon]) -> None:
    fake, remote = host(S.RUNNING, 1)
    made.append(fake)
    _outgoing_job(fake, JobOperation.MIGRATION_OUT)
    with pytest.raises(StepAbandoned):
        settle_confirm(remote.guarded(_stopped()), "g", cancelled=True, flags=MigrateFlags(0))
    assert Proc.DOMAIN_ABORT_JOB not in [f.proc for f in fake.received]


def test_a_guarded_call_goes_while_its_step_runs(made: list[FakeDaemon]) -> None:
    fake, remote = host(S.PAUSED, P.MIGRATION)
    made.append(fake)
    running = StepContext("m1", Step.CONFIRM)
    settle_confirm(remote.guarded(running).bounded(5.0), "g", cancelled=True, flags=MigrateFlags(0))
    assert Proc.DOMAIN_RESUME in [f.proc for f in fake.received]
