"""A Hypothesis state machine over one SQLite journal and two test hosts, in-process.

Rules start migrations under random host faults with a random failpoint armed to
``raise`` (``failpoints.Crash``, an in-process stand-in for a crash), and recover with a
new ``Coordinator`` using ``recover(steal=True)``: the crashed coordinator lived in this
process, so its owner is not provably dead. The invariants run after every rule.

25 examples of up to 10 steps, the same every run (~20 s). To explore new ones:
``MIGRATOR_STATEFUL_EXPLORE=1 MIGRATOR_STATEFUL_EXAMPLES=500 pytest
tests/crash/test_stateful.py -o timeout=0`` (about 5 minutes).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from migrator import failpoints
from migrator.drivers.test import TestDriver
from migrator.engine.coordinator import Coordinator
from migrator.flags import MigrateFlags
from migrator.inspect import show
from migrator.journal.store import Journal
from tests.conftest import Hosts
from tests.crash.harness import (
    ACTIVE,
    FAILPOINTS,
    TERMINAL,
    check_confirm_flags,
    check_hosts,
    check_seq,
    where,
)

# The hook each step's fault goes to, and the modes it may take there. A probe fault makes
# a destination that cannot tell what it holds (IN_DOUBT) reachable.
FAULTS: dict[tuple[str, str], list[str]] = {
    ("src", "begin"): ["error", "lost-reply", "slow"],
    ("dst", "prepare"): ["error", "lost-reply", "slow"],
    ("src", "perform"): ["error", "lost-reply", "slow"],
    ("dst", "finish"): ["error", "lost-reply", "no-domain", "slow"],
    ("src", "confirm"): ["error", "lost-reply", "slow"],
    ("dst", "probe"): ["error", "lost-reply"],
    ("src", "probe"): ["error"],
}

# A fault: None (none), or (mode, count), count None meaning "until cleared".
fault_plans = st.fixed_dictionaries(
    {
        key: st.none() | st.tuples(st.sampled_from(modes), st.sampled_from([1, None]))
        for key, modes in FAULTS.items()
    }
)


class CrashAndRecover(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="migrator-stateful-"))
        self.journal = Journal.open(f"sqlite:///{self.root / 'journal.db'}")
        self.hosts = Hosts(
            TestDriver(f"test://{self.root / 'host-a'}"),
            TestDriver(f"test://{self.root / 'host-b'}"),
        )
        self.coordinators: list[Coordinator] = []
        self.count = 0
        self.pending: dict[str, str] = {}  # migration id -> the owner that left it unfinished

    def coordinator(self, armed: failpoints.Failpoints = failpoints.INERT) -> Coordinator:
        c = Coordinator(self.journal, confirm_attempts=2, retry_backoff=0.0, failpoints=armed)
        self.coordinators.append(c)
        return c

    def teardown(self) -> None:
        for c in self.coordinators:
            c.close()
        self.journal.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def views(self) -> list[dict[str, Any]]:
        return [show(self.journal, m.id) for m in self.journal.list()]

    # -- rules ---------------------------------------------------------------------------

    @rule(plan=fault_plans, failpoint=st.sampled_from([None, *FAILPOINTS]), live=st.booleans())
    def migrate(
        self, plan: dict[tuple[str, str], tuple[str, int | None] | None], failpoint: str | None,
        live: bool,
    ) -> None:  # fmt: skip
        self.count += 1
        domain = f"vm{self.count}"
        self.hosts.src.define(domain, memory_mib=1)
        for host in (self.hosts.src, self.hosts.dst):
            host.clear_faults()
        for (host, step), fault in plan.items():
            if fault is not None:
                mode, count = fault
                driver = self.hosts.src if host == "src" else self.hosts.dst
                driver.set_fault(step, mode, seconds=0 if mode == "slow" else None, count=count)
        c = self.coordinator(failpoints.Failpoints({failpoint: "raise"} if failpoint else None))
        flags = MigrateFlags.LIVE if live else MigrateFlags.NONE
        try:
            m = c.migrate(domain, src=self.hosts.src, dst=self.hosts.dst, flags=flags)
        except failpoints.Crash:
            [m] = [m for m in self.journal.list() if m.domain == domain]
            if m.state.value not in TERMINAL:
                self.pending[m.id] = c.id
            return
        assert m.state.value in (*TERMINAL, "IN_DOUBT", "CONFIRMING"), m.state
        if m.state.value == "CONFIRMING":  # Confirm kept failing: `recover` replays it
            assert m.reason is not None and "migrator recover" in m.reason
            self.pending[m.id] = c.id

    @precondition(lambda self: bool(self.pending))
    @rule(heal=st.booleans())
    def recover(self, heal: bool) -> None:
        if heal:  # the hosts were repaired before the coordinator came back
            for host in (self.hosts.src, self.hosts.dst):
                host.clear_faults()
        c = self.coordinator()
        reports = {r.id: r for r in c.recover(steal=True)}
        assert set(reports) == set(self.pending), "steal takes every unfinished migration"
        for mid, old_owner in self.pending.items():
            m = show(self.journal, mid)
            claim = [e for e in m["events"] if e["kind"] == "recovery"
                     and (e["detail"] or {}).get("previous_owner") == old_owner]  # fmt: skip
            assert claim and claim[-1]["coordinator"] == c.id != old_owner
            assert reports[mid].result is not None and reports[mid].result.value == m["state"]
        still = {}
        for mid in self.pending:
            state = self.journal.get(mid).state.value
            if state in (*TERMINAL, "IN_DOUBT"):
                continue
            # Only a Confirm that still fails on an unrepaired host may remain unfinished.
            assert not heal and state == "CONFIRMING", state
            still[mid] = c.id
        self.pending = still

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def every_migration_is_safe_or_awaits_recovery(self) -> None:
        for m in self.views():
            check_seq(m)
            check_confirm_flags(m)
            src, dst = where(m, self.hosts)
            assert not (src == "running" and dst == "running"), f"both copies run: {m['id']}"
            if m["state"] in TERMINAL or m["state"] == "IN_DOUBT":
                assert m["id"] not in self.pending
                check_hosts(m, self.hosts)
            else:
                assert m["id"] in self.pending, f"{m['state']} but nobody will recover it"
                assert src in ACTIVE or dst in ACTIVE, f"domain lost: {m['id']}"


CrashAndRecover.TestCase.settings = settings(
    max_examples=int(os.environ.get("MIGRATOR_STATEFUL_EXAMPLES", "25")),
    stateful_step_count=10,
    deadline=None,
    # The same runs every time; MIGRATOR_STATEFUL_EXPLORE=1 draws new ones (and then
    # --hypothesis-seed=N repeats a run).
    derandomize=os.environ.get("MIGRATOR_STATEFUL_EXPLORE") != "1",
    database=None,  # no .hypothesis directory in the checkout
    # Shrinking a sequence of real host and journal I/O takes minutes; a failure is
    # reported at once with every step that led to it instead.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)
test_crash_and_recover_keeps_the_invariants = CrashAndRecover.TestCase
