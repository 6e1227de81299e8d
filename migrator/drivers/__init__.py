"""Drivers: the hosts' side of the protocol. See ``migrator.drivers.base``."""
