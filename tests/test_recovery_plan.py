"""The pure side of recovery (docs/recovery.md): ``plan`` from a journaled state and its events,
``claimable`` and ``owner_is_dead`` from a migration's owner and lease. Records are built
directly; nothing here touches a journal or a host."""

from __future__ import annotations

import os
import socket
import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from migrator.engine.flows.base import RECOVERABLE, Action
from migrator.engine.ownership import claimable, owner_is_dead, place
from migrator.records import Event, Migration
from migrator.recovery import plan
from migrator.states import OWN_STATES, TERMINAL, State, Step
from tests.conftest import ROOT

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
HOST = socket.gethostname()
PLACE = place()
ME = f"{HOST}:{os.getpid()}:test:{PLACE}"


def migration(
    state: State,
    *,
    owner: str | None = ME,
    lease: datetime | None = NOW + timedelta(seconds=30),
    abort_requested: bool = False,
    protocol: int | None = None,
) -> Migration:
    if protocol is None:
        protocol = next((v for v, own in OWN_STATES.items() if state in own), 3)
    return Migration(
        id="6f1c1b9e-0000-4000-8000-000000000001",
        domain="vm1",
        dname=None,
        src="test:///srv/a",
        dst="test:///srv/b",
        protocol=protocol,
        flags=0,
        bandwidth=0,
        state=state,
        reason=None,
        owner=owner,
        lease_expires_at=lease,
        fence=1,
        last_seq=0,
        abort_requested=abort_requested,
        created_at=NOW,
        updated_at=NOW,
        finished_at=None,
        progress=None,
    )


def events(*rows: tuple[Any, ...]) -> list[Event]:
    """Events from (step | None, kind, state, cancelled[, attempt[, detail]]), seq 1..N."""
    out = []
    for seq, row in enumerate(rows, start=1):
        step, kind, state, cancelled, *rest = row
        attempt = rest[0] if rest else 1
        detail = rest[1] if len(rest) > 1 else None
        out.append(
            Event(
                migration_id="6f1c1b9e-0000-4000-8000-000000000001",
                seq=seq,
                step=Step(step) if step else None,
                kind=kind,
                state=state,
                at=NOW,
                cancelled=cancelled,
                attempt=attempt,
                detail=detail,
            )
        )
    return out


S = State
UP_TO_PERFORMED = [
    ("begin", "intent", S.BEGINNING, None),
    ("begin", "ok", S.BEGUN, None),
    ("prepare", "intent", S.PREPARING, None),
    ("prepare", "ok", S.PREPARED, None),
    ("perform", "intent", S.PERFORMING, None),
    ("perform", "ok", S.PERFORMED, None),
]
UP_TO_PERFORM_FAILED = [*UP_TO_PERFORMED[:5], ("perform", "error", S.PERFORM_FAILED, None)]


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped: no such process any more."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# -- plan: the states with a fixed action ------------------------------------------------------


CANCEL_TEXT = "Finish(cancelled=1) on the destination, then Confirm(cancelled=1) on the source"


@pytest.mark.parametrize(
    ("state", "action", "cancelled", "text"),
    [
        (S.NEW, Action.ABANDON, None, "FAILED: abandoned before Begin"),
        (S.BEGINNING, Action.CANCEL, True, "Confirm(cancelled=1) on the source"),
        (S.BEGUN, Action.CANCEL, True, "Confirm(cancelled=1) on the source"),
        (S.PREPARING, Action.CANCEL_WITH_CLEANUP, True, CANCEL_TEXT),
        (S.PREPARED, Action.CANCEL_WITH_CLEANUP, True, CANCEL_TEXT),
        (S.PREPARE_FAILED, Action.CANCEL_WITH_CLEANUP, True, CANCEL_TEXT),
        (S.PERFORM_FAILED, Action.CANCEL_WITH_CLEANUP, True, CANCEL_TEXT),
        (
            S.PERFORMED,
            Action.FINISH,
            False,
            "Finish(cancelled=0), then Confirm as its outcome says",
        ),
    ],
    ids=str,
)
def test_state_before_finish_has_its_fixed_plan(
    state: State, action: Action, cancelled: bool | None, text: str
) -> None:
    p = plan(migration(state), events(*UP_TO_PERFORMED))
    assert (p.action, p.cancelled, p.text, p.attempt) == (action, cancelled, text, 1)


@pytest.mark.parametrize("attempt", [1, 2])
def test_performing_probes_then_replays_perform_as_its_next_attempt(attempt: int) -> None:
    """Forward needs Perform's own result (its cookie is Finish's input): the plan replays
    the idempotent Perform under its journaled intent, as the attempt after that intent's."""
    history = events(*UP_TO_PERFORMED[:4], ("perform", "intent", S.PERFORMING, None, attempt))
    p = plan(migration(S.PERFORMING), history)
    assert (p.action, p.cancelled, p.attempt) == (Action.PROBE_PERFORM, None, attempt + 1)
    assert p.text == (
        "probe the source: if the transfer completed replay Perform for its cookie and go on"
        " as PERFORMED, else cancel"
    )


# -- plan: an abort requested before the point of no return turns the migration back -------


@pytest.mark.parametrize("state", [S.PERFORMING, S.PERFORMED], ids=str)
def test_abort_requested_before_finish_cancels(state: State) -> None:
    p = plan(migration(state, abort_requested=True), events(*UP_TO_PERFORMED))
    assert (p.action, p.cancelled) == (Action.CANCEL_WITH_CLEANUP, True)
    assert p.text == "aborted: Finish(cancelled=1) on the destination, then Confirm(cancelled=1)"


def test_abort_requested_does_not_undo_a_finish_already_asked() -> None:
    history = events(*UP_TO_PERFORMED, ("finish", "intent", S.FINISHING, False))
    p = plan(migration(S.FINISHING, abort_requested=True), history)
    assert (p.action, p.cancelled) == (Action.REPLAY_FINISH, False)


# -- plan: FINISHING replays Finish with the journaled flag ------------------------------------


def test_finishing_with_cancelled_0_replays_finish_0_as_attempt_2() -> None:
    history = events(*UP_TO_PERFORMED, ("finish", "intent", S.FINISHING, False))
    p = plan(migration(S.FINISHING), history)
    assert (p.action, p.cancelled, p.attempt) == (Action.REPLAY_FINISH, False, 2)
    assert p.text == "replay Finish(cancelled=0), then Confirm as its outcome says"


def test_finishing_with_cancelled_1_replays_finish_1() -> None:
    history = events(*UP_TO_PERFORM_FAILED, ("finish", "intent", S.FINISHING, True))
    p = plan(migration(S.FINISHING), history)
    assert (p.action, p.cancelled, p.attempt) == (Action.REPLAY_FINISH, True, 2)
    assert p.text == "replay Finish(cancelled=1), then Confirm as its outcome says"


def test_finishing_takes_flag_and_attempt_from_the_newest_finish_intent() -> None:
    # Finish(0) raised, the probe saw no domain, and the third cleanup Finish(1) was asked.
    history = events(
        *UP_TO_PERFORMED,
        ("finish", "intent", S.FINISHING, False),
        ("finish", "error", S.FINISH_FAILED, False),
        ("probe", "ok", S.FINISH_FAILED, None),
        ("finish", "intent", S.FINISHING, True, 1),
        ("finish", "error", S.FINISH_FAILED, True, 1),
        ("finish", "intent", S.FINISHING, True, 2),
        ("finish", "error", S.FINISH_FAILED, True, 2),
        ("finish", "intent", S.FINISHING, True, 3),
    )
    p = plan(migration(S.FINISHING), history)
    assert (p.action, p.cancelled, p.attempt) == (Action.REPLAY_FINISH, True, 4)


def test_finish_failed_probes_the_destination_with_the_failed_flag_and_attempt() -> None:
    history = events(
        *UP_TO_PERFORMED,
        ("finish", "intent", S.FINISHING, False),
        ("finish", "error", S.FINISH_FAILED, False),
    )
    p = plan(migration(S.FINISH_FAILED), history)
    assert (p.action, p.cancelled, p.attempt) == (Action.AFTER_FINISH_FAILED, False, 1)
    assert p.text.startswith("probe the destination after Finish(cancelled=0) failed")


# -- plan: FINISHED confirms as the Finish outcome says ----------------------------------------


def _finished(cancelled: bool, running: bool) -> list[Event]:
    head = UP_TO_PERFORM_FAILED if cancelled else UP_TO_PERFORMED
    return events(
        *head,
        ("finish", "intent", S.FINISHING, cancelled),
        ("finish", "ok", S.FINISHED, cancelled, 1, {"running": running}),
    )


def test_finished_with_domain_running_on_destination_confirms_0() -> None:
    p = plan(migration(S.FINISHED), _finished(cancelled=False, running=True))
    assert (p.action, p.cancelled, p.text) == (Action.CONFIRM, False, "Confirm(cancelled=0)")


def test_finished_without_domain_on_destination_confirms_1() -> None:
    p = plan(migration(S.FINISHED), _finished(cancelled=False, running=False))
    assert (p.action, p.cancelled, p.text) == (Action.CONFIRM, True, "Confirm(cancelled=1)")


def test_finished_cleanup_confirms_1() -> None:
    p = plan(migration(S.FINISHED), _finished(cancelled=True, running=False))
    assert (p.action, p.cancelled) == (Action.CONFIRM, True)


def test_finished_cancelled_finish_reporting_running_gives_up_as_a_broken_driver() -> None:
    p = plan(migration(S.FINISHED), _finished(cancelled=True, running=True))
    assert (p.action, p.cancelled) == (Action.GIVE_UP, None)
    assert p.text == "IN_DOUBT: Finish(cancelled=1) reported the domain running"


# -- plan: CONFIRMING replays Confirm with the journaled flag, next attempt --------------------


def test_confirming_after_the_intent_replays_confirm_as_attempt_2() -> None:
    history = events(
        *UP_TO_PERFORMED,
        ("finish", "intent", S.FINISHING, False),
        ("finish", "ok", S.FINISHED, False, 1, {"running": True}),
        ("confirm", "intent", S.CONFIRMING, False),
    )
    p = plan(migration(S.CONFIRMING), history)
    assert (p.action, p.cancelled, p.attempt) == (Action.REPLAY_CONFIRM, False, 2)
    assert p.text == "replay Confirm(cancelled=0)"


def test_confirming_after_five_failed_attempts_replays_as_attempt_6() -> None:
    history = events(
        *UP_TO_PERFORM_FAILED,
        ("finish", "intent", S.FINISHING, True),
        ("finish", "ok", S.FINISHED, True, 1, {"running": False}),
        ("confirm", "intent", S.CONFIRMING, True),
        *[("confirm", "error", S.CONFIRMING, True, n) for n in range(1, 6)],
    )
    p = plan(migration(S.CONFIRMING), history)
    assert (p.action, p.cancelled, p.attempt) == (Action.REPLAY_CONFIRM, True, 6)
    assert p.text == "replay Confirm(cancelled=1)"


def test_confirming_after_resolve_replays_the_operators_flag() -> None:
    history = events(
        *UP_TO_PERFORMED,
        ("finish", "intent", S.FINISHING, False),
        ("finish", "error", S.FINISH_FAILED, False),
        ("probe", "error", S.FINISH_FAILED, None),
        (None, "in_doubt", S.IN_DOUBT, None),
        ("confirm", "intent", S.CONFIRMING, False, 1, {"resolved": "dst"}),
    )
    p = plan(migration(S.CONFIRMING), history)
    assert (p.action, p.cancelled, p.attempt) == (Action.REPLAY_CONFIRM, False, 2)


# -- plan: what waits for an operator ----------------------------------------------------------


def test_in_doubt_plans_nothing_and_points_at_resolve() -> None:
    p = plan(migration(S.IN_DOUBT), events(*UP_TO_PERFORMED))
    assert p.action is Action.NONE
    assert "migrator resolve" in p.text


def test_recoverable_states_are_all_but_terminal_in_doubt_and_queued() -> None:
    assert frozenset(State) - RECOVERABLE == TERMINAL | {S.IN_DOUBT, S.QUEUED}


@pytest.mark.parametrize("state", sorted(RECOVERABLE), ids=str)
def test_every_recoverable_state_has_an_action(state: State) -> None:
    assert plan(migration(state), events(*UP_TO_PERFORMED)).action is not Action.NONE


def test_plan_is_pure_the_same_journal_gives_the_same_plan() -> None:
    history = _finished(cancelled=False, running=True)
    copy = list(history)
    assert plan(migration(S.FINISHED), history) == plan(migration(S.FINISHED), history)
    assert history == copy


# -- owner_is_dead and claimable ---------------------------------------------------------------


def test_owner_whose_process_is_gone_on_this_host_is_dead() -> None:
    assert owner_is_dead(f"{HOST}:{dead_pid()}:abcd1234:{PLACE}")


def test_owner_in_another_pid_namespace_is_never_provably_dead() -> None:
    """A container with this host name: its PIDs are not ours to look up."""
    boot, _, inode = PLACE.partition("-")
    assert not owner_is_dead(f"{HOST}:{dead_pid()}:abcd1234:{boot}-{int(inode) + 1}")
    assert not owner_is_dead(f"{HOST}:{dead_pid()}:abcd1234:00000000-{inode}")  # another boot


def test_owner_id_of_an_older_version_is_judged_by_its_lease_alone() -> None:
    assert not owner_is_dead(f"{HOST}:{dead_pid()}:abcd1234")


def test_by_lease_only_never_judges_an_owner_dead() -> None:
    assert not owner_is_dead(f"{HOST}:{dead_pid()}:abcd1234:{PLACE}", by_lease_only=True)
    m = migration(S.PERFORMING, owner=f"{HOST}:{dead_pid()}:abcd1234:{PLACE}")
    assert claimable(m, now=NOW, by_lease_only=True) is None
    assert claimable(m, now=NOW + timedelta(seconds=31), by_lease_only=True) == "lease lapsed"


def test_owner_that_is_this_process_is_alive() -> None:
    assert not owner_is_dead(ME)


def test_owner_on_another_host_is_never_provably_dead() -> None:
    assert not owner_is_dead(f"not-{HOST}:{dead_pid()}:abcd1234")


def test_owner_is_judged_against_the_given_hostname() -> None:
    pid = dead_pid()
    assert owner_is_dead(f"elsewhere:{pid}:x:{PLACE}", hostname="elsewhere")
    assert not owner_is_dead(f"{HOST}:{pid}:x", hostname="elsewhere")


def test_owner_without_a_pid_is_not_provably_dead() -> None:
    assert not owner_is_dead(f"{HOST}:controller-7")


def test_owner_process_we_may_not_signal_is_not_dead() -> None:
    assert not owner_is_dead(f"{HOST}:1:init")  # pid 1 always exists


def test_no_owner_at_all_counts_as_dead() -> None:
    assert owner_is_dead(None)
    assert owner_is_dead("")


def test_dead_owner_is_claimable_at_once_even_with_a_fresh_lease() -> None:
    m = migration(S.PERFORMING, owner=f"{HOST}:{dead_pid()}:abcd1234:{PLACE}")
    assert claimable(m, now=NOW) == "owner process is gone"


def test_live_owner_with_a_lease_in_the_future_is_not_claimable() -> None:
    assert claimable(migration(S.PERFORMING), now=NOW) is None


def test_live_owner_with_a_lapsed_lease_is_claimable() -> None:
    m = migration(S.PERFORMING, lease=NOW - timedelta(seconds=1))
    assert claimable(m, now=NOW) == "lease lapsed"


def test_lease_expiring_exactly_now_has_lapsed() -> None:
    assert claimable(migration(S.PERFORMING, lease=NOW), now=NOW) == "lease lapsed"


def test_live_owner_without_a_lease_is_claimable() -> None:
    assert claimable(migration(S.PERFORMING, lease=None), now=NOW) == "lease lapsed"


def test_steal_claims_a_live_owners_migration() -> None:
    assert claimable(migration(S.PERFORMING), steal=True, now=NOW) == "stolen (--steal)"


def test_other_hosts_owner_with_a_fresh_lease_is_not_claimable() -> None:
    m = migration(S.PERFORMING, owner=f"not-{HOST}:{dead_pid()}:abcd1234")
    assert claimable(m, now=NOW) is None


def test_other_hosts_owner_is_claimable_once_its_lease_lapsed() -> None:
    m = migration(
        S.PERFORMING, owner=f"not-{HOST}:{dead_pid()}:x", lease=NOW - timedelta(seconds=1)
    )
    assert claimable(m, now=NOW) == "lease lapsed"


@pytest.mark.parametrize("state", sorted(TERMINAL | {S.IN_DOUBT}), ids=str)
def test_terminal_and_in_doubt_migrations_are_never_claimed(state: State) -> None:
    m = migration(state, owner=f"{HOST}:{dead_pid()}:x", lease=NOW - timedelta(days=1))
    assert claimable(m, now=NOW) is None
    assert claimable(m, steal=True, now=NOW) is None


# -- docs/recovery.md quotes every plan ------------------------------------------------------


def _every_plan() -> list[str]:
    texts = {plan(migration(s), events(*UP_TO_PERFORMED)).text for s in State}
    texts |= {plan(migration(S.PERFORMING, abort_requested=True), []).text}
    for cancelled in (False, True):
        finishing = events(*UP_TO_PERFORMED, ("finish", "intent", S.FINISHING, cancelled))
        failed = [*finishing, *events(("finish", "error", S.FINISH_FAILED, cancelled))]
        confirming = events(*UP_TO_PERFORMED, ("confirm", "intent", S.CONFIRMING, cancelled))
        texts |= {
            plan(migration(S.FINISHING), finishing).text,
            plan(migration(S.FINISH_FAILED), failed).text,
            plan(migration(S.CONFIRMING), confirming).text,
        }
        for running in (False, True):
            texts.add(plan(migration(S.FINISHED), _finished(cancelled, running)).text)
    for v, perform, finish in ((2, "perform2", "finish2"), (1, "perform1", "finish1")):
        performing, finishing = (
            (S.PERFORMING2, S.FINISHING2) if v == 2 else (S.PERFORMING1, S.FINISHING1)
        )
        failed = events((perform, "intent", performing, None), (perform, "error", performing, None))
        texts.add(plan(migration(performing), failed).text)
        for cancelled in (False, True) if v == 2 else (False,):
            intent = events((finish, "intent", finishing, cancelled))
            texts.add(plan(migration(finishing), intent).text)
    return sorted(t for t in texts if not t.startswith("nothing: ") or "IN_DOUBT" in t)


@pytest.mark.parametrize("text", _every_plan())
def test_recovery_md_quotes_the_plan(text: str) -> None:
    doc = (ROOT / "docs" / "recovery.md").read_text()
    assert text in doc, f"docs/recovery.md lacks the plan text: {text}"
