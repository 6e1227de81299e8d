"""The checks of a request before anything is journaled: bounds, negotiation, probes.

Every call to a host that may block runs within the migration's step timeout (on the
calling thread's hook runner): a host that hangs (a FIFO for a state file, a stalled
daemon) fails the request with ``StepTimeout`` and nothing is journaled (docs/errors.md).
A driver that never blocks (``Driver.blocking`` false) is called inline, as its steps are.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from migrator import limits
from migrator.convergence.policy import Action, Policy
from migrator.drivers.api import DomainState, Driver, Feature, MigrationParams, is_blocking
from migrator.drivers.flagcheck import refuse_unhonoured
from migrator.drivers.uri import driver_scheme, redact_uri
from migrator.engine import negotiation
from migrator.engine.hookrunner import HookRunner
from migrator.errors import (
    DomainExists,
    DomainNotFound,
    PostcopyUnavailable,
    SettingNotHonoured,
    StepTimeout,
    UsageError,
)
from migrator.flags import MigrateFlags, cli_name

log = logging.getLogger(__name__)
R = TypeVar("R")

NOT_CARRIED = MigrateFlags.POSTCOPY_RESUME
"""Flags refused for every driver: resuming a post-copy migration is the engine's own
business (docs/postcopy.md), never a caller's flag."""


def refuse_postcopy(
    flags: MigrateFlags,
    hosts: dict[str, frozenset[Feature]],
    version: int,
    why: Callable[[str], str | None] = lambda uri: None,
) -> None:
    """``--flag postcopy`` only where both hosts can switch and resume (feature POSTCOPY),
    over plain (not tunnelled) protocol v3; else a one-line ``UsageError``, with the
    host's driver's reason where it gives one (``why(uri)``)."""
    if not flags & MigrateFlags.POSTCOPY:
        return
    for uri, features in hosts.items():
        if Feature.POSTCOPY not in features:
            reason = why(uri)
            raise UsageError(
                f"flag postcopy is refused: host {redact_uri(uri)} "
                + (reason or "cannot switch a migration to post-copy and resume it after a failure")
                + "; migrate without it"
            )
    if version != 3 or flags & MigrateFlags.TUNNELLED:
        raise UsageError(
            "flag postcopy is refused: post-copy needs protocol v3 without tunnelled;"
            " migrate without it"
        )


def refuse_parallel(flags: MigrateFlags, policy: Policy | None) -> None:
    """Parallel connections (a policy's ``parallel_connections``, libvirt's ``--flag
    parallel``) neither with post-copy nor tunnelled; else a one-line ``UsageError``."""
    parallel = flags & MigrateFlags.PARALLEL or (policy and policy.parallel_connections)
    if not parallel:
        return
    if flags & MigrateFlags.POSTCOPY:
        raise UsageError(
            "parallel connections are refused with post-copy: QEMU cannot switch a multifd"
            " migration to post-copy (the destination does not get the guest); migrate with"
            " one of them"
        )
    if flags & MigrateFlags.TUNNELLED:
        raise UsageError(
            "parallel connections are refused with tunnelled: a tunnelled migration goes"
            " over the daemons' one connection; migrate with one of them"
        )


class Preflight:
    """Checks requests, each call to a host within ``timeout`` seconds (None: unbounded)
    on the calling thread's runner (``runner()``)."""

    def __init__(self, runner: Callable[[], HookRunner], timeout: float | None) -> None:
        self.runner = runner
        self.timeout = timeout

    def check(
        self,
        domain: str,
        src: Driver,
        dst: Driver,
        flags: MigrateFlags,
        dname: str | None,
        bandwidth: int,
        protocol: int | None,
        policy: Policy | None = None,
    ) -> tuple[MigrationParams, int]:
        """The request's parameters and protocol version; else a ``UsageError``, or
        ``StepTimeout`` for a host that did not answer in time."""
        for flag in MigrateFlags(flags & NOT_CARRIED):
            raise UsageError(
                f"flag {cli_name(flag)} is refused: migrator resumes a paused post-copy"
                " migration itself; migrate with postcopy alone"
            )
        limits.integer(bandwidth, name="bandwidth")
        limits.domain_name(domain, name="domain name")
        if dname is not None:
            limits.domain_name(dname, name="dname")
        if protocol is not None:
            limits.integer(protocol, name="protocol", low=1, high=3)
        if src.uri == dst.uri:
            raise UsageError(f"source and destination are the same host: {redact_uri(src.uri)}")
        src_features = self._bounded(src, "features", src.features)
        dst_features = self._bounded(dst, "features", dst.features)
        version = negotiation.negotiate(
            src_features,
            dst_features,
            forced=protocol,
            tunnelled=bool(flags & MigrateFlags.TUNNELLED),
        )
        refuse_postcopy(
            flags, {src.uri: src_features, dst.uri: dst_features}, version,
            why=lambda uri: self._postcopy_refusal(src if uri == src.uri else dst),
        )  # fmt: skip
        refuse_parallel(flags, policy)
        src_state = self._best_effort_probe(src, domain)
        if src_state is not None and not src_state.active:
            raise DomainNotFound(domain=domain, host=redact_uri(src.uri))
        dst_state = self._best_effort_probe(dst, dname or domain)
        if dst_state is not None and dst_state not in (DomainState.ABSENT, DomainState.SHUTOFF):
            # A shut-off definition on the destination is replaced, as libvirt does.
            raise DomainExists(domain=dname or domain, host=redact_uri(dst.uri))
        if src_state is DomainState.PAUSED:
            flags |= MigrateFlags.PAUSED  # as libvirt: a paused source stays paused on dst
        refuse_unhonoured(flags, src, dst)
        if policy is not None:
            self._refuse_unhonoured_policy(policy, src, version, flags)
        connections = (policy.parallel_connections if policy is not None else None) or 0
        postcopy_mib = (policy.postcopy_bandwidth_mib if policy is not None else None) or 0
        params = MigrationParams(
            domain=domain, flags=flags, dname=dname, bandwidth=bandwidth,
            connections=connections, postcopy_bandwidth=postcopy_mib,
        )  # fmt: skip
        return params, version

    def _postcopy_refusal(self, driver: Driver) -> str | None:
        """Why ``driver``'s host cannot carry post-copy, if its driver says (libvirt)."""
        refusal = getattr(driver, "postcopy_refusal", None)
        return None if refusal is None else self._bounded(driver, "features", refusal)

    def _refuse_unhonoured_policy(
        self, policy: Policy, src: Driver, version: int, flags: MigrateFlags
    ) -> None:
        """Each setting of ``policy`` must be honoured by the source's driver in Perform of
        protocol v3, and the ``postcopy`` action needs ``--flag postcopy`` (which hosts that
        cannot switch refused already); else a one-line refusal, before Begin."""
        if version != 3 and (policy.settings() or policy.gives_up):
            raise UsageError(
                f"a convergence policy applies to Perform of protocol v3; this migration"
                f" would use v{version}: migrate without the policy's settings"
            )
        honoured = frozenset(getattr(src, "honoured_settings", frozenset()))
        for setting in policy.settings():
            if setting not in honoured:
                raise SettingNotHonoured(
                    setting=str(setting),
                    driver=driver_scheme(src.uri),
                    host=redact_uri(src.uri),
                    honoured=sorted(str(s) for s in honoured),
                )
        postcopy = policy.action is Action.POSTCOPY and policy.gives_up
        if postcopy and not flags & MigrateFlags.POSTCOPY:
            raise PostcopyUnavailable()

    def _bounded(self, driver: Driver, what: str, call: Callable[[], R]) -> R:
        """``call()`` within the timeout. A driver bounds its own calls by the same timeout
        (``bound_calls``), so its "no reply in time" and the runner's ``StepTimeout`` race:
        a failure that comes once the timeout has passed is the timeout, whichever won."""
        if not is_blocking(driver):
            return call()
        step = f"pre-flight {what} of {redact_uri(driver.uri)}"
        start = time.monotonic()
        try:
            return self.runner().call(call, step=step, timeout=self.timeout)
        except StepTimeout:
            raise
        except Exception as exc:
            if self.timeout is not None and time.monotonic() - start >= self.timeout:
                raise StepTimeout(step=step, seconds=self.timeout) from exc
            raise

    def _best_effort_probe(self, driver: Driver, domain: str) -> DomainState | None:
        """A host that cannot be probed is left for the steps to judge; one that hangs, or
        whose state is bad input (``HostStateInvalid``), fails the request."""
        try:
            return self._bounded(driver, "probe", lambda: driver.probe(domain)).state
        except (StepTimeout, UsageError):
            raise
        except Exception as exc:  # noqa: BLE001 -- any other driver failure: "cannot tell"
            log.warning(
                "probe of %s on %s failed before the migration: %s",
                domain,
                redact_uri(driver.uri),
                exc,
            )
            return None
