"""What a coordinator runs beside its steps, and keeps of policies and runtime requests
(docs/convergence.md): an applier (``applier.py``) beside each Perform of protocol v3 and
each resumption of a paused post-copy; the policy journaled for whoever takes the
migration over; the requests journaled by any process, and stamped when it ends."""

from __future__ import annotations

import dataclasses
import logging

from migrator.convergence.policy import Setting, from_dict
from migrator.engine.applier import BESIDE, Applier, PostcopyFactory, refuse_postcopy
from migrator.engine.run import Run
from migrator.errors import JournalError
from migrator.journal.requests import Requests
from migrator.journal.store import Journal
from migrator.records import Request, RequestKind
from migrator.states import TERMINAL, Step

log = logging.getLogger(__name__)


def honoured(driver: object) -> frozenset[Setting]:
    """The policy settings a driver acts on (``honoured_settings``; none if it says none)."""
    found: frozenset[Setting] = getattr(driver, "honoured_settings", frozenset())
    return frozenset(found)


class Convergence:
    """What a coordinator runs beside Perform, and keeps of policies and requests."""

    def __init__(
        self, journal: Journal, coordinator_id: str, postcopy: PostcopyFactory | None
    ) -> None:
        self.journal = journal
        self.requests = Requests(journal)
        self.coordinator_id = coordinator_id
        self.postcopy = postcopy

    def beside(self, run: Run, step: Step) -> Applier | None:
        """An applier for a Perform of protocol v3 and for a resumption of post-copy
        (``Steps(beside=...)``), which applies the requests journaled meanwhile; at the
        first call of a run with a policy not yet journaled (Begin's, its row now
        written), the policy is journaled for whoever may take the migration over."""
        if run.policy is not None and not run.policy_journaled:  # at the first call: Begin's
            self.requests.set_policy(run.migration.id, run.policy.as_dict())
            run.policy_journaled = True
        if step not in BESIDE or (run.policy is None and not run.blocking):
            return None  # an in-process host's Perform returns at once: nothing to apply
        start = refuse_postcopy if self.postcopy is None else self.postcopy(run)
        return Applier(
            self.journal,
            self.coordinator_id,
            run.migration,
            run.policy,
            settings=honoured(run.src),
            start_postcopy=start,
            step=step,
            switched=lambda: run.postcopy,
        )

    def request(self, migration_id: str, kind: RequestKind, value: int | None) -> Request:
        """Journal a runtime request for a migration (an id or a unique prefix) in Perform."""
        migration = self.journal.find(migration_id)
        return self.requests.add(migration.id, kind, value)

    def resumed(self, run: Run) -> Run:
        """``run`` (rebuilt from the journal) with the policy journaled for it, and the
        parallel connections its hosts were set up with and its post-copy bandwidth."""
        found = self.journal.policy(run.migration.id)
        if found is not None:
            run.policy, run.policy_journaled = from_dict(found), True
            run.params = dataclasses.replace(
                run.params,
                connections=run.policy.parallel_connections or 0,
                postcopy_bandwidth=run.policy.postcopy_bandwidth_mib or 0,
            )
        return run

    def ended(self, run: Run) -> None:
        """Stamp the requests still pending once the migration ended: never applied."""
        state = run.migration.state
        if state not in TERMINAL:
            return
        why = f"not applied: Perform had ended (the migration ended {state})"
        try:  # a read first: most migrations have no request, and a write is a commit
            if any(r.pending for r in self.journal.requests(run.migration.id)):
                self.requests.settle_all(run.migration.id, why)
        except JournalError as exc:  # shown as pending until the journal works again
            log.warning("requests of %s not stamped: %s", run.migration.id, exc)
