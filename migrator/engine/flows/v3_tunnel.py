"""Tunnelled v3's Perform: the source sends through the coordinator into the stream the
destination's PrepareTunnel3 opened (docs/protocols.md)."""

from __future__ import annotations

import dataclasses
from typing import cast

from migrator.drivers.api import PerformResult, TunnelledDriver
from migrator.engine.run import Run
from migrator.errors import DriverError
from migrator.records import StepContext


class _ClosedTunnel:
    """A replayed tunnelled Perform: the tunnel died with the coordinator that opened it.

    The hook is idempotent: once the transfer completed it answers from its record and
    sends nothing; should it send, the write fails and Perform fails (before Finish)."""

    def write(self, data: bytes) -> None:
        raise DriverError("the tunnel closed with the coordinator that opened it")

    def close(self) -> None:
        return None

    def abort(self) -> None:
        return None


def relay(ctx: StepContext, run: Run, cookie: bytes, *, replay: bool) -> PerformResult:
    """Tunnelled Perform: the source sends through us into the destination's stream."""
    stream = run.stream if run.stream is not None or not replay else _ClosedTunnel()
    if stream is None:
        raise DriverError("no tunnel to the destination: PrepareTunnel3 gave no stream")
    relayed = [0]

    def send(data: bytes) -> None:
        stream.write(data)
        relayed[0] += len(data)

    src = cast(TunnelledDriver, run.src)  # negotiation saw both hosts offer TUNNELLED
    try:
        result: PerformResult = src.perform_tunnel(ctx, run.params, cookie, send)
        stream.close()
    except BaseException:
        stream.abort()
        raise
    return dataclasses.replace(result, stats={**result.stats, "relayed_bytes": relayed[0]})
