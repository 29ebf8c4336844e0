"""Parses without bounds checks: short or odd answers raise IndexError/ValueError (must be caught)."""

from __future__ import annotations

from scanner.api import Dialogue, Finding, Probe, ProbeContext, Recv, Send
from scanner.textproto import frame_line


def parse_version(line: bytes) -> int:
    """Byte 4 must be a digit: no check, so hostile bytes raise."""
    return int(line.split(b" ")[1]) + line[4]


class FragileProbe(Probe):
    """Sends VERSION, parses carelessly."""

    name = "bad_fragile"
    services = ("bad",)
    summary = "unchecked parser"

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        """VERSION, then the careless parse."""
        yield Send(b"VERSION\r\n")
        line = yield Recv(frame_line)
        return Finding(service="bad", version=str(parse_version(line)))
