"""A test host's state in shards: what a hook reads and writes does not grow with history."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from migrator.drivers.api import MigrationParams
from migrator.drivers.test import TestDriver
from migrator.drivers.test.shards import ENDED_KEPT, shard_name
from migrator.engine.coordinator import Coordinator
from migrator.errors import DriverError
from migrator.journal.store import Journal
from migrator.records import StepContext
from migrator.states import State, Step
from tests.conftest import Hosts, host_files


def _records(host: TestDriver) -> int:
    """How many migration records (recorded results, fences, departures) a host keeps."""
    total = 0
    for path in (host.dir / "domains").glob("*.json"):
        shard: dict[str, Any] = json.loads(path.read_text())
        total += sum(len(shard.get(part, {})) for part in ("calls", "fences", "departed"))
    return total


def _sizes(hosts: Hosts) -> tuple[int, int]:
    return tuple(len(host_files(h.dir) or b"") for h in (hosts.src, hosts.dst))  # type: ignore[return-value]


def _ping_pong(coordinator: Coordinator, hosts: Hosts, count: int, protocol: int) -> None:
    for i in range(count):
        src, dst = (hosts.src, hosts.dst) if i % 2 == 0 else (hosts.dst, hosts.src)
        m = coordinator.migrate("vm1", src=src, dst=dst, protocol=protocol)
        assert m.state is State.CONFIRMED


@pytest.mark.parametrize("protocol", [3, 2])
def test_a_hosts_state_does_not_grow_with_the_migrations_it_saw(
    tmp_path: Path, hosts: Hosts, protocol: int
) -> None:
    with Journal.open(f"sqlite:///{tmp_path / 'j.db'}", upgrade=True) as journal:
        coordinator = Coordinator(journal)
        _ping_pong(coordinator, hosts, 2 * ENDED_KEPT, protocol)
        after_some = _sizes(hosts)
        _ping_pong(coordinator, hosts, 2 * ENDED_KEPT, protocol)
        after_twice_as_many = _sizes(hosts)
        coordinator.close()
    assert after_twice_as_many == after_some
    assert _records(hosts.src) == _records(hosts.dst) == 0


def test_a_hook_reads_and_writes_only_its_domains_file(hosts: Hosts) -> None:
    for i in range(20):
        hosts.src.define(f"other{i}", memory_mib=1)
    ctx = StepContext(migration_id="m-1", step=Step.BEGIN, attempt=1, fence=1)
    hosts.src.begin(ctx, MigrationParams(domain="vm1"))
    shard: dict[str, Any] = json.loads((hosts.src.dir / "domains" / shard_name("vm1")).read_text())
    assert list(shard["domains"]) == ["vm1"]
    assert [k.split("/")[0] for k in shard["calls"]] == ["m-1"]
    assert "domains" not in json.loads((hosts.src.dir / "host.json").read_text())


def _begun(host: TestDriver, mid: str, fence: int = 1) -> tuple[StepContext, MigrationParams]:
    ctx = StepContext(migration_id=mid, step=Step.BEGIN, attempt=1, fence=fence)
    params = MigrationParams(domain="vm1")
    host.begin(ctx, params)
    return ctx, params


def test_forget_drops_a_migrations_records_and_refuses_its_late_calls(hosts: Hosts) -> None:
    ctx, params = _begun(hosts.src, "m-1")
    hosts.src.confirm(ctx, params, b"", cancelled=True)
    hosts.src.forget("m-1", params)
    hosts.src.forget("m-1", params)  # idempotent
    assert _records(hosts.src) == 0
    with pytest.raises(DriverError, match="m-1 has ended"):
        hosts.src.begin(ctx, params)
    assert hosts.src.domains()[0]["job"] is None


def test_forget_keeps_the_last_ended_migrations_only(hosts: Hosts) -> None:
    for i in range(ENDED_KEPT + 3):
        ctx, params = _begun(hosts.src, f"m-{i}")
        hosts.src.confirm(ctx, params, b"", cancelled=True)
        hosts.src.forget(f"m-{i}", params)
    shard = json.loads((hosts.src.dir / "domains" / shard_name("vm1")).read_text())
    assert sorted(shard["ended"]) == sorted(f"m-{i}" for i in range(3, ENDED_KEPT + 3))


def test_forget_of_a_migration_the_host_never_saw_writes_nothing(hosts: Hosts) -> None:
    before = host_files(hosts.src.dir)
    hosts.src.forget("m-unknown", MigrationParams(domain="vm1", dname="elsewhere"))
    assert host_files(hosts.src.dir) == before


def test_a_domain_name_that_is_no_file_name_gets_a_file_of_its_own(hosts: Hosts) -> None:
    for name in ("../x", ".", "a/b", "é" * 200):
        hosts.src.define(name, memory_mib=1)
    names = {d["name"] for d in hosts.src.domains()}
    assert names == {"vm1", "../x", ".", "a/b", "é" * 200}
    files = [p for p in hosts.src.dir.rglob("*.json") if p.name != "host.json"]
    assert len(files) == 5
    assert all(p.parent == hosts.src.dir / "domains" for p in files)


def test_a_host_in_the_old_single_file_layout_is_refused(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "host.json").write_text(json.dumps({"domains": {"vm1": {}}}))
    with pytest.raises(DriverError, match="older migrator"):
        TestDriver(f"test://{tmp_path / 'old'}").domains()
