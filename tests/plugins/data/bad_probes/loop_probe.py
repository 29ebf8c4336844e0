"""Never ends on hostile input: loops without yielding (the contract's time limit must catch it)."""

from __future__ import annotations

from scanner.api import Dialogue, Finding, Probe, ProbeContext, Recv, Send
from scanner.textproto import frame_line


class LoopProbe(Probe):
    """Waits for a digit that never comes."""

    name = "bad_loop"
    services = ("bad",)
    summary = "unbounded loop"

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        """HI, then spins when the answer has no digit."""
        yield Send(b"HI\r\n")
        line = yield Recv(frame_line)
        i = 0
        while not line[i % len(line) : i % len(line) + 1].isdigit():
            i += 1  # the bug: no bound
        return Finding(service="bad")
