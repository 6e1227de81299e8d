"""Protocol v1 (libvirt's ``virDomainMigrateVersion1``): Prepare, Perform, Finish.

v2 (``flows/v2.py``) without DumpXML (Prepare gets no description) and without a way to
cancel on the destination: its Finish is called only after a Perform that succeeded, and
every way back ends ``FAILED`` with a note of what the destination may still hold. Each
difference from v2 is declared here, and only here.
"""

from __future__ import annotations

from typing import ClassVar

from migrator.drivers.uri import redact_uri
from migrator.engine import reasons
from migrator.engine.flows.base import Action, Engine, Plan
from migrator.engine.flows.v2 import V2Flow
from migrator.engine.run import Run
from migrator.states import State, Step, Trigger

NO_CANCEL = (
    "protocol v1 cannot cancel on the destination: an incoming copy that never ran may remain on "
)


class V1Flow(V2Flow):
    protocol: ClassVar[int] = 1
    describe: ClassVar[Step | None] = None
    prepare_step: ClassVar[Step] = Step.PREPARE1
    perform_step: ClassVar[Step] = Step.PERFORM1
    finish_step: ClassVar[Step] = Step.FINISH1
    ok: ClassVar[dict[Step, Trigger]] = {
        Step.PREPARE1: Trigger.PREPARE1_OK,
        Step.PERFORM1: Trigger.PERFORM1_OK,
    }
    failed: ClassVar[dict[Step, Trigger]] = {
        Step.PREPARE1: Trigger.PREPARE1_FAILED,
        Step.PERFORM1: Trigger.PERFORM1_FAILED,
        Step.FINISH1: Trigger.FINISH1_FAILED,
    }
    start_finish: ClassVar[Trigger] = Trigger.START_FINISH1
    preparing: ClassVar[tuple[State, ...]] = (State.PREPARING1, State.PREPARED1)
    performing: ClassVar[State] = State.PERFORMING1
    performed: ClassVar[State] = State.PERFORMED1
    finishing: ClassVar[State] = State.FINISHING1
    abortable: ClassVar[frozenset[State]] = frozenset(
        {State.PREPARING1, State.PREPARED1, State.PERFORMING1}
    )
    describing: ClassVar[tuple[State, ...]] = ()
    back_text: ClassVar[str] = "FAILED"
    finish_text: ClassVar[str] = "Finish (v1)"
    cleanup_plan: ClassVar[Plan] = Plan(
        Action.CANCEL_WITH_CLEANUP,
        "FAILED: the source never stopped; v1 cannot cancel on the destination",
        True,
    )

    def description(self, run: Run) -> str | None:
        return None

    def after_prepare_failed(self, e: Engine, run: Run) -> None:
        """PREPARE1_FAILED is FAILED already: nothing can be cancelled."""

    def back(self, e: Engine, run: Run) -> None:
        """The source never stopped (or resumed): FAILED, saying what dst may hold."""
        cause = run.migration.reason or "cancelled"
        reason = reasons.with_note(cause, NO_CANCEL + redact_uri(run.dst.uri))
        e.writes.decided(run, Trigger.FAIL, reason, end="FAILED")
