"""Reports a service it did not declare and puts bytes in details (the contract must catch both)."""

from __future__ import annotations

from scanner.api import Dialogue, Finding, Probe, ProbeContext, Recv, RecvClosed
from scanner.textproto import frame_line


class WrongServiceProbe(Probe):
    """Any greeting line is 'found'."""

    name = "bad_service"
    services = ("declared",)
    server_first = True
    summary = "undeclared service"

    def match(self, greeting: bytes) -> bool:
        """Anything."""
        return True

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        """One line, any line."""
        try:
            line = yield Recv(frame_line)
        except RecvClosed:
            line = b""
        return Finding(service="undeclared", details={"raw": line})
