"""Convergence policies: what a migration may tune while Perform runs, and when it gives up.

``policy.py`` declares a ``Policy`` and checks its bounds; ``tracker.py`` decides, from the
job statistics a driver reports, when to raise the downtime, when the migration stalled or
overran its budget (pure logic, no I/O); ``policyfile.py`` reads named defaults from a
TOML file, matched by host and domain name (docs/convergence.md).
"""
