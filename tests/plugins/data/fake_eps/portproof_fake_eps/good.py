"""A valid probe for the registry tests: no ports, never matches (it only has to load)."""

from __future__ import annotations

from scanner.api import Dialogue, Finding, NotThisProtocol, Probe, ProbeContext, Recv, Send
from scanner.textproto import frame_line


class FakeGoodProbe(Probe):
    """Sends PING, wants PONG."""

    name = "fakegood"
    services = ("fakegood",)
    ports = (7001,)
    rarity = 9
    summary = "registry test probe"

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        """PING / PONG."""
        yield Send(b"PING\r\n")
        if (yield Recv(frame_line)) != b"PONG\r\n":
            raise NotThisProtocol("no PONG")
        return Finding(service="fakegood")


class SecondGoodProbe(FakeGoodProbe):
    """The same protocol under another name (for the duplicate-name test it reuses 'fakegood')."""
