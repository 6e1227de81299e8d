"""``qmp:///ABS/DIR``: real ``qemu-system-x86_64`` processes on this machine, over QMP.

Each host is a directory. ``DIR/host.json`` holds what the driver must remember between
processes (every read-modify-write under an exclusive ``flock`` on ``DIR/.lock``, replaced
atomically)::

    {"host_id": uuid,
     "domains": {name: {"config": {memory_mib, smp, machine, touch_mib, busy, seed,
                                   downtime_limit_ms},
                        "job": migration id | null, "state_before_job": str | null,
                        "arrived_with": migration id | null,
                        "outgoing": {migration id: "started" | "completed" | "abandoned"}}},
     "calls": {memo key: recorded result}, "fences": {migration id: highest fence}}

and ``DIR/run/NAME/`` each domain's runtime files: ``qemu.pid`` (written by QEMU itself),
the QMP socket ``qmp.sock``, the guest image ``payload.bin`` (see ``payload.py``) and
``qemu.log`` (QEMU's stderr). QEMU processes outlive the coordinator that started them
(they are started detached, never as our children), so the driver finds them again by pid
file, checks that the pid is still that QEMU (its command line names the pid file), and
asks it over QMP what it is doing: the journal may say anything, the process is the truth.

The protocol, as libvirt's qemu driver does it (docs/qmp.md):

- Begin: the domain's configuration is its description; the cookie carries host identity
  and QEMU version.
- Prepare: start the same configuration with ``-S -incoming defer``, then
  ``migrate-incoming tcp:127.0.0.1:PORT`` on a free port; that URI goes to Perform.
- Perform: ``migrate-set-parameters`` (bandwidth, downtime limit), ``migrate``, then
  ``query-migrate`` until the transfer ends, reporting progress; the source is left in
  ``postmigrate`` (paused). ``ctx.aborted()`` or the deadline turn into ``migrate_cancel``.
- Finish: the destination's own ``query-migrate`` must say completed and its process must
  be alive (a source can report "completed" while the destination died loading the
  state), then ``cont`` unless PAUSED; otherwise the incoming QEMU is stopped.
- Confirm: ``quit`` the source, or, cancelled, ``migrate_cancel`` what still runs and
  ``cont`` it (QEMU resumes from ``postmigrate``).

Text from QEMU (error descriptions, logs) is only ever carried as data.

Modules: ``config.py`` (configurations, names, URIs), ``process.py`` (QEMU processes),
``host.py`` (the ``qmp-host`` commands), ``source.py`` (Begin, Perform, Confirm),
``driver.py`` (Prepare, Finish, ``probe``).
"""

from __future__ import annotations

from migrator.drivers.qmphost.config import (
    check_name,
    config_from_description,
    map_status,
    new_config,
    pattern_of,
    qemu_binary,
)
from migrator.drivers.qmphost.driver import QmpDriver

__all__ = [
    "QmpDriver",
    "check_name",
    "config_from_description",
    "map_status",
    "new_config",
    "pattern_of",
    "qemu_binary",
]
