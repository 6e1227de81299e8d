"""Real libvirt hosts over libvirt's RPC: ``qemu:///system``, ``qemu+tls://HOST/system``, ...

``uri`` parses host URIs, ``xdr`` and ``rpc`` speak the wire protocol, ``remote`` types the
procedures, ``driver`` implements the ``Driver`` Protocol with the five v3 steps, ``watch``
follows Perform, ``reconcile`` settles Finish and Confirm from what a host holds. See
``docs/libvirt.md``.
"""

from __future__ import annotations

from migrator.drivers.libvirt.driver import LibvirtDriver

__all__ = ["LibvirtDriver"]
