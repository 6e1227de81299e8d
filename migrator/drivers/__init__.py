"""Drivers: the hosts' side of the protocol. The seam is ``migrator.drivers.api``."""
