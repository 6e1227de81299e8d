"""One migration being driven, and what one driver call gave."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from migrator.convergence.policy import Policy
from migrator.drivers.api import Driver, MigrationParams, TunnelStream, forget, is_blocking
from migrator.drivers.uri import redact_uri
from migrator.flags import MigrateFlags
from migrator.machine import Machine, MachineModel
from migrator.records import Change, Event, EventKind, Migration
from migrator.states import TERMINAL, State, Step

log = logging.getLogger(__name__)

Connect = Callable[[str], Driver]
"""How the engine reaches a journaled host URI (``drivers.registry.connect`` unless told)."""

DESCRIBE = (Step.BEGIN, Step.DUMP_XML)
"""The steps that give the domain description, in every protocol."""
PREPARE = (Step.PREPARE, Step.PREPARE_TUNNEL, Step.PREPARE2, Step.PREPARE1)
"""The steps that give the URI to send to, in every protocol."""


@dataclass
class Run:
    """One migration being driven: its journal record, its hosts and what the steps gave.

    ``model`` is the run's model on the machine (``machine.Machine``), attached by the first
    trigger the engine fires; the machine changes its state only once the change is
    committed or staged, so it always says ``state``. The journal is the truth.
    """

    migration: Migration
    src: Driver
    dst: Driver
    params: MigrationParams
    cookie: bytes = b""
    description: str = ""
    uri: str = ""
    model: MachineModel | None = None
    machine: Machine | None = None
    """The machine ``model`` is attached to (``WriteAhead.fire``)."""
    stream: TunnelStream | None = None
    """Tunnelled v3: the destination's end of the tunnel, from PrepareTunnel3."""
    resolved_on: str | None = None
    """Where an operator's ``resolve`` said the domain runs (``src``/``dst``), if one did."""
    staged: list[Change] = field(default_factory=list)
    """Outcomes that commit with the next write (``WriteAhead.outcome``, ``then=``)."""
    unwritten: bool = False
    """``migration`` is not in the journal yet: the first write inserts it."""
    lease_lost: Exception | None = None
    """The refusal the lease keeper met renewing this run's lease (``lease.Keeper``)."""
    policy: Policy | None = None
    """The convergence policy its Perform runs under (docs/convergence.md), if any."""
    policy_journaled: bool = False
    """``policy`` is in the journal (``journal/requests.py``) for whoever drives it next."""
    postcopy: bool = False
    """The switch to post-copy was journaled (its intent): from there only forward."""
    switcher: Any = None
    """While a post-copy capable Perform runs: what ``postcopy.switch`` asks."""

    @property
    def blocking(self) -> bool:
        """False when both drivers say their hooks never block: they are then called inline."""
        return is_blocking(self.src) or is_blocking(self.dst)

    @property
    def state(self) -> State:
        """The state the run is in: the journal's, or the last staged outcome's."""
        return self.staged[-1].state if self.staged else self.migration.state

    @property
    def tunnelled(self) -> bool:
        return bool(self.params.flags & MigrateFlags.TUNNELLED)

    def release(self) -> None:
        """Done driving: the model goes back to its pool and, if the migration ended, each
        host is told it may forget it (``forget``, docs/drivers.md)."""
        if self.model is not None and self.machine is not None:
            self.machine.release(self.model)
            self.model = None
        if self.migration.state not in TERMINAL:  # as journaled, not as staged
            return
        for driver in (self.src, self.dst):
            try:
                forget(driver, self.migration.id, self.params)
            except Exception:  # it ended all the same: a host that cannot forget only keeps more
                log.warning(
                    "%s could not forget migration %s",
                    redact_uri(driver.uri),
                    self.migration.id,
                    exc_info=True,
                )


@dataclass(frozen=True)
class Outcome:
    """What a driver call gave: a value, or the exception it raised, and how long it took."""

    value: Any = None
    error: BaseException | None = None
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def last_cookie(history: Sequence[Event]) -> bytes:
    """The cookie the next step takes: the newest output, or the newest step's input."""
    for event in reversed(history):
        if event.kind == EventKind.OK and event.cookie_out is not None:
            return event.cookie_out
        if event.kind == EventKind.INTENT and event.cookie_in is not None:
            return event.cookie_in
    return b""


def _first_ok(history: Sequence[Event], steps: tuple[Step, ...]) -> Event | None:
    return next((e for e in history if e.step in steps and e.kind == EventKind.OK), None)


def resume(migration: Migration, history: Sequence[Event], connect: Connect) -> Run:
    """A Run rebuilt from the journal: hosts, parameters and the last cookie handed on."""
    params = MigrationParams(
        domain=migration.domain,
        flags=MigrateFlags(migration.flags),
        dname=migration.dname,
        bandwidth=migration.bandwidth,
    )
    run = Run(migration, connect(migration.src), connect(migration.dst), params)
    run.cookie = last_cookie(history)
    begun, prepared = _first_ok(history, DESCRIBE), _first_ok(history, PREPARE)
    run.description = (begun.description if begun else None) or ""
    run.uri = (prepared.uri if prepared else None) or ""
    run.postcopy = switched(history)
    return run


def switched(history: Sequence[Event]) -> bool:
    """Whether the journal holds a switch to post-copy: its intent is the point of no return."""
    return any(e.step is Step.POSTCOPY and e.kind == EventKind.INTENT for e in history)
