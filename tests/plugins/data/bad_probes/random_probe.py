"""Draws its request id from the global random generator, not ctx.rng (the contract must catch it)."""

from __future__ import annotations

import random

from scanner.api import Dialogue, Finding, NotThisProtocol, Probe, ProbeContext, Recv, Send
from scanner.textproto import frame_line


class GlobalRandomProbe(Probe):
    """Sends ``ID <random>``."""

    name = "bad_random"
    services = ("bad",)
    summary = "global random ids"

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        """ID request, any answer line."""
        yield Send(b"ID %d\r\n" % random.getrandbits(32))
        line = yield Recv(frame_line)
        if not line.startswith(b"OK"):
            raise NotThisProtocol("no OK")
        return Finding(service="bad")
