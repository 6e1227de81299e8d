"""libvirt's keepalive (``src/rpc/virkeepaliveprotocol.x``), the client's clock of it.

The keepalive program (``0x6b656570``, "keep") has two messages, PING and PONG, sent as
MESSAGE frames with serial 0 and no body. Either side answers a PING with a PONG. A
client that told the daemon it speaks keepalive (CONNECT_SUPPORTS_FEATURE
PROGRAM_KEEPALIVE, before CONNECT_OPEN, as libvirt's client does) is pinged by the daemon
after ``keepalive_interval`` s of silence and dropped after ``keepalive_count`` unanswered
PINGs (libvirtd.conf; 5 and 5 by default): that is how a daemon gets rid of a coordinator
that died without closing its socket.

The client side works the same way, with ``virsh``'s defaults (interval 5 s, count 6):
after ``interval`` s without a frame from the daemon it sends a PING, again every
``interval`` s, and once ``interval x count`` s passed without any frame the peer is dead
and the connection fails. ``Clock`` decides when; ``rpc.Connection`` sends and reads.
"""

from __future__ import annotations

from migrator.drivers.libvirt.uri import KeepAliveSettings

IDLE_POLL = 1.0
"""Most seconds between two looks at an idle connection (to answer the daemon's PINGs)."""


class Clock:
    """When the next PING is due and when the peer counts as dead (times: monotonic s)."""

    def __init__(self, settings: KeepAliveSettings, now: float) -> None:
        self.settings = settings
        self.active = False
        """Whether the daemon speaks keepalive (only then does the client ping)."""
        self._heard = now
        self._pinged: float | None = None

    @property
    def dead_after(self) -> float:
        return self.settings.interval * self.settings.count

    def start(self, now: float) -> None:
        self.active = self.settings.enabled
        self.heard(now)

    def heard(self, now: float) -> None:
        """A frame arrived: the peer is alive."""
        self._heard = now
        self._pinged = None

    def pinged(self, now: float) -> None:
        self._pinged = now

    def ping_due(self, now: float) -> bool:
        if not self.active:
            return False
        last = self._heard if self._pinged is None else self._pinged
        return now - last >= self.settings.interval

    def dead(self, now: float) -> bool:
        return self.active and now - self._heard >= self.dead_after

    def wait(self, now: float) -> float | None:
        """Seconds until the next PING or the death, whichever comes first; None if off."""
        if not self.active:
            return None
        last = self._heard if self._pinged is None else self._pinged
        to_ping = last + self.settings.interval - now
        to_death = self._heard + self.dead_after - now
        return max(0.0, min(to_ping, to_death))

    def idle_poll(self) -> float:
        """How often an idle connection is looked at."""
        if not self.active:
            return IDLE_POLL
        return min(IDLE_POLL, self.settings.interval / 2)

    def reason(self) -> str:
        s = self.settings
        return (
            f"no answer to keepalive for {self.dead_after:g} s (interval {s.interval:g} s"
            f" x count {s.count}): the daemon, its host or the network is gone"
        )
