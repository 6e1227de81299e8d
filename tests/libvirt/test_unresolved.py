"""A destination that cannot resolve its own host name, as an operator first meets it: two
namespaced system daemons over ``qemu+tcp://``, ``qemu+tls://`` and ``qemu+ssh://``, and no
``migrate_uri``. Perform3 fails with libvirt's "Unable to resolve address" (the source
cannot resolve the destination's host name, which Prepare3 gave), and the error says what
fixes it."""

from __future__ import annotations

import json
from pathlib import Path

from migrator.journal.store import Journal
from tests.conftest import ROOT
from tests.crash.forkserver import SERVER
from tests.crash.harness import cli_env
from tests.libvirt import guests
from tests.libvirt.netns import NsPair


def test_an_unresolvable_destination_says_to_give_migrate_uri(
    ns_pair: NsPair, ns_guest: str, tmp_path: Path, transport: str
) -> None:
    db = f"sqlite:///{tmp_path / 'journal.db'}"
    Journal.open(db, upgrade=True).close()
    src, dst = ns_pair.uri(ns_pair.a, transport), ns_pair.uri(ns_pair.b, transport)
    argv = ["migrate", ns_guest, "--src", src, "--dst", dst, "--live", "--json"]
    proc = SERVER.run(argv, env=cli_env(db), cwd=ROOT, timeout=120.0)
    assert "Traceback" not in proc.stderr, proc.stderr
    outcome = json.loads(proc.stdout)
    assert (proc.returncode, outcome["state"]) == (1, "ROLLED_BACK"), outcome
    assert "Unable to resolve address" in outcome["reason"], outcome["reason"]
    assert "?migrate_uri=tcp://ADDRESS on the destination's URI" in outcome["reason"]
    assert guests.state(ns_pair.a, ns_guest)[0] == "running"  # type: ignore[arg-type]
    assert guests.state(ns_pair.b, ns_guest)[0] == "absent"  # type: ignore[arg-type]
