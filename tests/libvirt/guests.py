"""Guests for the real daemons: a tiny transient domain, and one that writes a known pattern.

The tiny guest (64 MiB, 1 vCPU, ``pc`` machine, ``qemu64`` CPU, no disks, no USB, no
balloon) starts in a quarter of a second under TCG. The pattern guest boots the multiboot
image of ``migrator/drivers/payload.py`` with ``<os><kernel>``: it writes one dword into
every page of a region and halts, so its memory, read through libvirt before and after a
migration, must be the same.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from xml.sax.saxutils import escape

from migrator.drivers import payload
from tests.libvirt.daemons import Daemon

MEMORY_MIB = 64

_XML = """<domain type='qemu'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='MiB'>{memory}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>{kernel}
  </os>
  <features><acpi/></features>
  <cpu mode='custom' match='exact'><model fallback='allow'>qemu64</model></cpu>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def unique_name(prefix: str = "g") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def domain_xml(name: str, memory_mib: int = MEMORY_MIB, kernel: Path | None = None) -> str:
    """The domain XML of a guest; with ``kernel``, a direct boot of that image."""
    boot = f"\n    <kernel>{escape(str(kernel))}</kernel>" if kernel else ""
    return _XML.format(name=escape(name), uuid=uuid.uuid4(), memory=memory_mib, kernel=boot)


def create(daemon: Daemon, name: str, xml: str, paused: bool = False) -> None:
    """Start a transient guest from ``xml`` on ``daemon`` (``virsh create``)."""
    path = daemon.home / f"{name}.xml"
    path.write_text(xml)
    os.chmod(path, 0o644)
    daemon.virsh("create", str(path), *(["--paused"] if paused else []))


def state(daemon: Daemon, name: str) -> tuple[str, str]:
    """``(state, reason)`` as ``virsh domstate --reason`` says, ``("absent", "")`` if none."""
    out = daemon.virsh("domstate", name, "--reason", check=False).strip()
    if not out:
        return "absent", ""
    head, _, reason = out.partition(" (")
    return head.strip(), reason.rstrip(")").strip()


def destroy(daemon: Daemon, name: str) -> None:
    """Destroy (and undefine, when persistent) ``name`` on ``daemon``; absent is fine."""
    daemon.virsh("destroy", name, check=False)
    daemon.virsh("undefine", name, check=False)


def pattern_image(directory: Path, pattern: payload.Pattern) -> Path:
    """Write the payload image for ``pattern`` where both daemons' QEMUs can read it."""
    path = directory / f"payload-{pattern.touch_mib}-{pattern.seed:08x}.img"
    path.write_bytes(payload.image(pattern))
    os.chmod(path, 0o644)
    return path


def pattern_xml(name: str, image: Path, memory_mib: int = MEMORY_MIB) -> str:
    return domain_xml(name, memory_mib, kernel=image)


def read_memory(daemon: Daemon, name: str, start: int, size: int) -> bytes:
    """Guest-physical memory ``[start, start+size)`` of ``name``, read through libvirt.

    QEMU's ``pmemsave`` (over ``virsh qemu-monitor-command --hmp``) writes the bytes into a
    file of the daemon's own directory, which its QEMU may write and we may read.
    """
    out = daemon.home / f"pmem-{uuid.uuid4().hex[:8]}.bin"
    daemon.virsh("qemu-monitor-command", name, "--hmp", f'pmemsave {start} {size} "{out}"')
    try:
        return out.read_bytes()
    finally:
        out.unlink(missing_ok=True)


def marker_set(daemon: Daemon, name: str) -> bool:
    """Whether the payload finished writing its region (its done marker is set)."""
    data = read_memory(daemon, name, payload.marker_address(), 4)
    return int.from_bytes(data, "little") == payload.DONE_MAGIC


def wait_written(daemon: Daemon, name: str, timeout: float = 30.0) -> None:
    """Wait until the payload of ``name`` has written its whole region."""
    deadline = time.monotonic() + timeout
    while not marker_set(daemon, name):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the payload of {name} did not finish in {timeout} s")
        time.sleep(0.1)


def create_pattern_guest(
    daemon: Daemon, directory: Path, name: str, pattern: payload.Pattern, memory_mib: int
) -> None:
    """Start a guest booted from ``pattern``'s image; return once it wrote its region."""
    payload.check_fits(memory_mib, pattern.touch_mib)
    create(daemon, name, pattern_xml(name, pattern_image(directory, pattern), memory_mib))
    wait_written(daemon, name)
