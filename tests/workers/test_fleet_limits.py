"""The workers of a journal agree on their limits, and a dead one leaves the list within
its own lease (docs/workers.md, "Per-host limits" and "What an operator sees")."""

from __future__ import annotations

import json
import time

import pytest

from migrator.errors import UsageError
from migrator.hostlimits import HostLimit, HostLimits
from migrator.journal.store import Journal
from migrator.states import State
from migrator.workers import Worker, fleet
from tests.conftest import Hosts, run_cli


def test_a_worker_whose_limits_differ_from_a_running_one_is_refused(journal: Journal) -> None:
    Worker(journal, limits=HostLimits(max_outgoing=1)).register()
    other = Worker(journal, limits=HostLimits(max_outgoing=3))
    with pytest.raises(UsageError, match="max_outgoing 3, not 1; give every worker the same"):
        other.register()
    assert [s.info.limits for s in fleet.seen(journal, lease=30)] == [
        {"max_outgoing": 1, "max_incoming": None, "hosts": {}}
    ]


def test_limits_that_apply_alike_are_the_same_limits(journal: Journal) -> None:
    """A host override equal to the default changes nothing: the workers agree."""
    Worker(journal, limits=HostLimits(max_outgoing=2)).register()
    same = HostLimits(max_outgoing=2, hosts={"test:///a": HostLimit(max_outgoing=2)})
    Worker(journal, limits=same).register()
    differs = HostLimits(max_outgoing=2, hosts={"test:///a": HostLimit(max_incoming=1)})
    with pytest.raises(UsageError, match=r"hosts\.test:///a\.max_incoming 1, not unlimited"):
        Worker(journal, limits=differs).register()


def test_the_worker_command_refuses_other_limits_in_one_line_claiming_nothing(
    db_url: str, hosts: Hosts
) -> None:
    with Journal.open(db_url) as journal:
        Worker(journal, limits=HostLimits(max_outgoing=1)).register()
    submitted = run_cli("submit", "vm1", "--src", hosts.src_uri, "--dst", hosts.dst_uri, db=db_url)
    proc = run_cli("worker", "--max-outgoing", "3", "--poll", "0.05", db=db_url, timeout=30)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "max_outgoing 3, not 1" in lines[0], proc.stderr
    with Journal.open(db_url) as journal:
        assert journal.get(submitted.stdout.strip()).state is State.QUEUED


def test_a_silent_worker_is_dead_after_its_own_lease(db_url: str) -> None:
    """Its row keeps its lease (0.5 s): the reader's ``--lease`` (30 s) does not apply."""
    with Journal.open(db_url, lease_seconds=0.5) as journal:
        Worker(journal).register()
        assert [s.status for s in fleet.seen(journal, lease=30)] == [fleet.Status.RUNNING]
        time.sleep(0.6)
        assert fleet.seen(journal, lease=30) == []
        assert [s.status for s in fleet.seen(journal, lease=30, dead=True)] == [fleet.Status.DEAD]
    listed = run_cli("workers", "--json", db=db_url)
    assert json.loads(listed.stdout) == []
    assert run_cli("workers", "forget", db=db_url).stdout.strip() == "forgot 1 dead worker"


def test_workers_json_shows_each_workers_lease_and_limits(db_url: str) -> None:
    with Journal.open(db_url, lease_seconds=7) as journal:
        Worker(journal, worker_id="w1", limits=HostLimits(max_incoming=2)).register()
    [row] = json.loads(run_cli("workers", "--json", db=db_url).stdout)
    assert (row["id"], row["state"], row["lease_seconds"]) == ("w1", "running", 7.0)
    assert row["limits"] == {"max_outgoing": None, "max_incoming": 2, "hosts": {}}
