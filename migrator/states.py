"""The migration state machine, declared once, as data.

``TRANSITIONS`` is the single declaration; ``machine.py`` builds the ``transitions``
machine from it, which runs every migration and which recovery plans, replay and the
diagram read.

Intent states (``…ING``) are entered when the intent of a step is committed, before the
driver hook runs; outcome states when its result is committed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class State(enum.StrEnum):
    QUEUED = "QUEUED"
    """Submitted, waiting for a worker to claim it (docs/workers.md)."""
    NEW = "NEW"
    BEGINNING = "BEGINNING"
    BEGUN = "BEGUN"
    PREPARING = "PREPARING"
    PREPARED = "PREPARED"
    PREPARE_FAILED = "PREPARE_FAILED"
    PERFORMING = "PERFORMING"
    PERFORMED = "PERFORMED"
    PERFORM_FAILED = "PERFORM_FAILED"
    FINISHING = "FINISHING"
    FINISHED = "FINISHED"
    FINISH_FAILED = "FINISH_FAILED"
    CONFIRMING = "CONFIRMING"
    CONFIRMED = "CONFIRMED"
    ROLLED_BACK = "ROLLED_BACK"
    FAILED = "FAILED"
    LOST = "LOST"
    IN_DOUBT = "IN_DOUBT"
    # Protocol v2: DumpXML, Prepare2, Perform (the source kills itself on success), Finish2.
    DUMPING = "DUMPING"
    DUMPED = "DUMPED"
    PREPARING2 = "PREPARING2"
    PREPARED2 = "PREPARED2"
    PERFORMING2 = "PERFORMING2"
    PERFORMED2 = "PERFORMED2"
    FINISHING2 = "FINISHING2"
    # Protocol v1: Prepare, Perform (as v2's), Finish; no description and no cancel.
    PREPARING1 = "PREPARING1"
    PREPARED1 = "PREPARED1"
    PERFORMING1 = "PERFORMING1"
    PERFORMED1 = "PERFORMED1"
    FINISHING1 = "FINISHING1"
    # Post-copy (docs/postcopy.md): the switch is write-ahead; from its intent on, only
    # forward. The destination runs the guest while pages still come from the source.
    POSTCOPY_SWITCHING = "POSTCOPY_SWITCHING"
    POSTCOPY_ACTIVE = "POSTCOPY_ACTIVE"
    POSTCOPY_PAUSED = "POSTCOPY_PAUSED"
    POSTCOPY_RESUMING = "POSTCOPY_RESUMING"


STATE_OF: dict[str, State] = {s.value: s for s in State}
"""Each state by its text: a dictionary look-up costs a tenth of ``State(text)``."""


class Step(enum.StrEnum):
    BEGIN = "begin"
    PREPARE = "prepare"
    PERFORM = "perform"
    FINISH = "finish"
    CONFIRM = "confirm"
    PROBE = "probe"
    PREPARE_TUNNEL = "prepare_tunnel"
    DUMP_XML = "dump_xml"
    PREPARE2 = "prepare2"
    PERFORM2 = "perform2"
    FINISH2 = "finish2"
    PREPARE1 = "prepare1"
    PERFORM1 = "perform1"
    FINISH1 = "finish1"
    POSTCOPY = "postcopy"
    POSTCOPY_RESUME = "postcopy_resume"


class Trigger(enum.StrEnum):
    START_BEGIN = "start_begin"
    BEGIN_OK = "begin_ok"
    BEGIN_FAILED = "begin_failed"
    START_PREPARE = "start_prepare"
    PREPARE_OK = "prepare_ok"
    PREPARE_FAILED = "prepare_failed"
    START_PERFORM = "start_perform"
    PERFORM_OK = "perform_ok"
    PERFORM_FAILED = "perform_failed"
    START_FINISH = "start_finish"
    FINISH_OK = "finish_ok"
    FINISH_FAILED = "finish_failed"
    START_CONFIRM = "start_confirm"
    CONFIRM_FAILED = "confirm_failed"
    CONFIRMED = "confirmed"
    ROLLED_BACK = "rolled_back"
    ABANDON = "abandon"
    GIVE_UP = "give_up"
    RESOLVE = "resolve"
    # v1 and v2
    START_DUMP_XML = "start_dump_xml"
    DUMP_XML_OK = "dump_xml_ok"
    DUMP_XML_FAILED = "dump_xml_failed"
    START_PREPARE2 = "start_prepare2"
    PREPARE2_OK = "prepare2_ok"
    PREPARE2_FAILED = "prepare2_failed"
    START_PERFORM2 = "start_perform2"
    PERFORM2_OK = "perform2_ok"
    PERFORM2_FAILED = "perform2_failed"
    START_FINISH2 = "start_finish2"
    FINISH2_FAILED = "finish2_failed"
    START_PREPARE1 = "start_prepare1"
    PREPARE1_OK = "prepare1_ok"
    PREPARE1_FAILED = "prepare1_failed"
    START_PERFORM1 = "start_perform1"
    PERFORM1_OK = "perform1_ok"
    PERFORM1_FAILED = "perform1_failed"
    START_FINISH1 = "start_finish1"
    FINISH1_FAILED = "finish1_failed"
    DOMAIN_LOST = "domain_lost"
    FAIL = "fail"
    RESOLVE_DST = "resolve_dst"
    # Post-copy
    START_POSTCOPY = "start_postcopy"
    POSTCOPY_OK = "postcopy_ok"
    POSTCOPY_FAILED = "postcopy_failed"
    START_POSTCOPY_RESUME = "start_postcopy_resume"
    POSTCOPY_RESUME_OK = "postcopy_resume_ok"
    POSTCOPY_RESUME_FAILED = "postcopy_resume_failed"
    # Queued migrations (docs/workers.md)
    CLAIM = "claim"
    REQUEUE = "requeue"


@dataclass(frozen=True, slots=True)
class Transition:
    trigger: Trigger
    source: State
    dest: State


S, T = State, Trigger

TERMINAL: frozenset[State] = frozenset({S.CONFIRMED, S.ROLLED_BACK, S.FAILED, S.LOST})
"""States no trigger leaves, shared by every protocol. IN_DOUBT is not among them: an
operator resolves it. LOST is reachable only with v1 and v2, whose Perform kills the source
before the destination has started the domain."""

PROTOCOLS = (1, 2, 3)

INTENT_STATES: dict[State, Step] = {
    S.BEGINNING: Step.BEGIN,
    S.PREPARING: Step.PREPARE,  # or PREPARE_TUNNEL: the intent event says which
    S.PERFORMING: Step.PERFORM,
    S.FINISHING: Step.FINISH,
    S.CONFIRMING: Step.CONFIRM,
    S.DUMPING: Step.DUMP_XML,
    S.PREPARING2: Step.PREPARE2,
    S.PERFORMING2: Step.PERFORM2,
    S.FINISHING2: Step.FINISH2,
    S.PREPARING1: Step.PREPARE1,
    S.PERFORMING1: Step.PERFORM1,
    S.FINISHING1: Step.FINISH1,
    S.POSTCOPY_SWITCHING: Step.POSTCOPY,
    S.POSTCOPY_RESUMING: Step.POSTCOPY_RESUME,
}
"""The states entered when a step's intent is committed, before its hook is called."""

START: dict[Step, Trigger] = {
    Step.BEGIN: Trigger.START_BEGIN,
    Step.PREPARE: Trigger.START_PREPARE,
    Step.PREPARE_TUNNEL: Trigger.START_PREPARE,  # tunnelled v3: same states as Prepare
    Step.PERFORM: Trigger.START_PERFORM,
    Step.FINISH: Trigger.START_FINISH,
    Step.CONFIRM: Trigger.START_CONFIRM,
    Step.DUMP_XML: Trigger.START_DUMP_XML,
    Step.PREPARE2: Trigger.START_PREPARE2,
    Step.PERFORM2: Trigger.START_PERFORM2,
    Step.FINISH2: Trigger.START_FINISH2,
    Step.PREPARE1: Trigger.START_PREPARE1,
    Step.PERFORM1: Trigger.START_PERFORM1,
    Step.FINISH1: Trigger.START_FINISH1,
    Step.POSTCOPY: Trigger.START_POSTCOPY,
    Step.POSTCOPY_RESUME: Trigger.START_POSTCOPY_RESUME,
}
"""The trigger that commits each step's intent."""

RUNS_ON: dict[Step, str] = {
    Step.BEGIN: "src",
    Step.PREPARE: "dst",
    Step.PREPARE_TUNNEL: "dst",
    Step.PERFORM: "src",
    Step.FINISH: "dst",
    Step.CONFIRM: "src",
    Step.DUMP_XML: "src",
    Step.PREPARE2: "dst",
    Step.PERFORM2: "src",
    Step.FINISH2: "dst",
    Step.PREPARE1: "dst",
    Step.PERFORM1: "src",
    Step.FINISH1: "dst",
    Step.POSTCOPY: "src",
    Step.POSTCOPY_RESUME: "src",
}
"""The host each step's hook runs on."""

SEQUENCES: dict[int, tuple[Step, ...]] = {
    3: (Step.BEGIN, Step.PREPARE, Step.PERFORM, Step.FINISH, Step.CONFIRM),
    2: (Step.DUMP_XML, Step.PREPARE2, Step.PERFORM2, Step.FINISH2),
    1: (Step.PREPARE1, Step.PERFORM1, Step.FINISH1),
}
"""Each protocol's steps in order, as libvirt's virDomainMigrateVersion1/2/3 call them."""

OWN_STATES: dict[int, frozenset[State]] = {
    2: frozenset({S.DUMPING, S.DUMPED, S.PREPARING2, S.PREPARED2, S.PERFORMING2, S.PERFORMED2,
                  S.FINISHING2}),
    1: frozenset({S.PREPARING1, S.PREPARED1, S.PERFORMING1, S.PERFORMED1, S.FINISHING1}),
}  # fmt: skip
OWN_STATES[3] = (
    frozenset(State) - OWN_STATES[1] - OWN_STATES[2] - TERMINAL - {S.QUEUED, S.NEW, S.IN_DOUBT}
)
"""The states only one protocol passes through; QUEUED, NEW, IN_DOUBT and the ends are
shared."""

POSTCOPY_STATES: frozenset[State] = frozenset(
    {S.POSTCOPY_SWITCHING, S.POSTCOPY_ACTIVE, S.POSTCOPY_PAUSED, S.POSTCOPY_RESUMING}
)
"""v3's post-copy phase: entered by the switch's intent, left by the transfer's end
(``PERFORMED``) or an operator's decision (``IN_DOUBT``); nothing in it goes back."""

# (trigger, sources, dest). The happy path of protocol v3 first, then each failure rule
# (docs/states.md), then the recovery moves (docs/recovery.md).
_TABLE: tuple[tuple[Trigger, tuple[State, ...], State], ...] = (
    (T.START_BEGIN, (S.NEW,), S.BEGINNING),
    (T.BEGIN_OK, (S.BEGINNING,), S.BEGUN),
    (T.START_PREPARE, (S.BEGUN,), S.PREPARING),
    (T.PREPARE_OK, (S.PREPARING,), S.PREPARED),
    (T.START_PERFORM, (S.PREPARED,), S.PERFORMING),
    (T.PERFORM_OK, (S.PERFORMING,), S.PERFORMED),
    # Finish(cancelled=0) after Perform; Finish(cancelled=1) to clean the destination
    # after a failure, or when recovery cancels a migration that never performed.
    (
        T.START_FINISH,
        (
            S.PERFORMED,
            S.PERFORM_FAILED,
            S.PREPARE_FAILED,
            S.PREPARING,
            S.PREPARED,
            S.FINISH_FAILED,
            S.IN_DOUBT,  # an operator resolved it to the source: clean the destination
        ),
        S.FINISHING,
    ),
    (T.FINISH_OK, (S.FINISHING,), S.FINISHED),
    # Confirm(cancelled = dst does not run the domain); from BEGUN/BEGINNING only to cancel.
    (
        T.START_CONFIRM,
        (S.FINISHED, S.FINISH_FAILED, S.BEGINNING, S.BEGUN),
        S.CONFIRMING,
    ),
    (T.CONFIRMED, (S.CONFIRMING,), S.CONFIRMED),
    (T.ROLLED_BACK, (S.CONFIRMING,), S.ROLLED_BACK),
    (T.BEGIN_FAILED, (S.BEGINNING,), S.FAILED),
    (T.PREPARE_FAILED, (S.PREPARING,), S.PREPARE_FAILED),
    (T.PERFORM_FAILED, (S.PERFORMING,), S.PERFORM_FAILED),
    (T.FINISH_FAILED, (S.FINISHING,), S.FINISH_FAILED),
    (T.CONFIRM_FAILED, (S.CONFIRMING,), S.CONFIRMING),
    (T.ABANDON, (S.NEW,), S.FAILED),
    (T.GIVE_UP, (S.PERFORMING, S.FINISHING, S.FINISHED, S.FINISH_FAILED), S.IN_DOUBT),
    (T.RESOLVE, (S.IN_DOUBT,), S.CONFIRMING),
    # Protocol v2. A failed Prepare2 or Perform leaves its intent state (the failure is an
    # event): recovery would do from there what the failure rule does. Finish2 ends it.
    (T.START_DUMP_XML, (S.NEW,), S.DUMPING),
    (T.DUMP_XML_OK, (S.DUMPING,), S.DUMPED),
    (T.DUMP_XML_FAILED, (S.DUMPING,), S.FAILED),
    (T.START_PREPARE2, (S.DUMPED,), S.PREPARING2),
    (T.PREPARE2_OK, (S.PREPARING2,), S.PREPARED2),
    (T.PREPARE2_FAILED, (S.PREPARING2,), S.PREPARING2),
    (T.START_PERFORM2, (S.PREPARED2,), S.PERFORMING2),
    (T.PERFORM2_OK, (S.PERFORMING2,), S.PERFORMED2),
    (T.PERFORM2_FAILED, (S.PERFORMING2,), S.PERFORMING2),
    # Finish2(cancelled=0) after Perform; Finish2(cancelled=1) cleans the destination.
    (
        T.START_FINISH2,
        (S.PERFORMED2, S.PERFORMING2, S.PREPARING2, S.PREPARED2, S.IN_DOUBT),
        S.FINISHING2,
    ),
    (T.FINISH2_FAILED, (S.FINISHING2,), S.FINISHING2),
    # Protocol v1: the destination cannot be told to cancel, so a failure ends FAILED.
    (T.START_PREPARE1, (S.NEW,), S.PREPARING1),
    (T.PREPARE1_OK, (S.PREPARING1,), S.PREPARED1),
    (T.PREPARE1_FAILED, (S.PREPARING1,), S.FAILED),
    (T.START_PERFORM1, (S.PREPARED1,), S.PERFORMING1),
    (T.PERFORM1_OK, (S.PERFORMING1,), S.PERFORMED1),
    (T.PERFORM1_FAILED, (S.PERFORMING1,), S.PERFORMING1),
    (T.START_FINISH1, (S.PERFORMED1, S.PERFORMING1), S.FINISHING1),
    (T.FINISH1_FAILED, (S.FINISHING1,), S.FINISHING1),
    # The ends of v1 and v2.
    (T.CONFIRMED, (S.FINISHING2, S.FINISHING1), S.CONFIRMED),
    (T.ROLLED_BACK, (S.FINISHING2,), S.ROLLED_BACK),
    (T.DOMAIN_LOST, (S.FINISHING2, S.FINISHING1), S.LOST),
    (T.FAIL, (S.DUMPING, S.DUMPED, S.PREPARING1, S.PREPARED1, S.PERFORMING1, S.IN_DOUBT), S.FAILED),
    (T.GIVE_UP, (S.PERFORMING2, S.FINISHING2, S.PERFORMING1, S.FINISHING1), S.IN_DOUBT),
    (T.RESOLVE_DST, (S.IN_DOUBT,), S.CONFIRMED),
    # Post-copy (docs/postcopy.md): the switch's intent commits while Perform runs; from
    # there only forward. Perform's end leaves the phase (PERFORMED, then Finish(0)); a
    # failure pauses it, and a resumption (recover on the destination, resume on the
    # source) carries it on; a destination whose copy is lost ends IN_DOUBT.
    (T.START_POSTCOPY, (S.PERFORMING,), S.POSTCOPY_SWITCHING),
    (T.POSTCOPY_OK, (S.POSTCOPY_SWITCHING,), S.POSTCOPY_ACTIVE),
    (T.POSTCOPY_FAILED, (S.POSTCOPY_SWITCHING,), S.POSTCOPY_SWITCHING),
    (T.PERFORM_OK, (S.POSTCOPY_SWITCHING, S.POSTCOPY_ACTIVE), S.PERFORMED),
    (T.PERFORM_FAILED, (S.POSTCOPY_SWITCHING, S.POSTCOPY_ACTIVE), S.POSTCOPY_PAUSED),
    (
        T.START_POSTCOPY_RESUME,
        (S.POSTCOPY_SWITCHING, S.POSTCOPY_ACTIVE, S.POSTCOPY_PAUSED),
        S.POSTCOPY_RESUMING,
    ),
    (T.POSTCOPY_RESUME_OK, (S.POSTCOPY_RESUMING,), S.PERFORMED),
    (T.POSTCOPY_RESUME_FAILED, (S.POSTCOPY_RESUMING,), S.POSTCOPY_PAUSED),
    (T.GIVE_UP, tuple(sorted(POSTCOPY_STATES)), S.IN_DOUBT),
    # A worker claims a queued migration, or hands one it has not begun back to the queue;
    # an abort ends a queued migration before anything is called (docs/workers.md).
    (T.CLAIM, (S.QUEUED,), S.NEW),
    (T.REQUEUE, (S.NEW,), S.QUEUED),
    (T.ABANDON, (S.QUEUED,), S.FAILED),
)

TRANSITIONS: tuple[Transition, ...] = tuple(
    Transition(trigger, source, dest) for trigger, sources, dest in _TABLE for source in sources
)
