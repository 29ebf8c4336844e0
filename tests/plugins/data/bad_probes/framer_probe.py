"""A framer that says "complete, 0 bytes" and one that crashes on binary (the contract must catch both)."""

from __future__ import annotations

from scanner.api import Dialogue, Finding, NotThisProtocol, Probe, ProbeContext, Recv, Send


def frame_zero(buf: bytes) -> int | None:
    """Wrong: returns 0 for any buffer."""
    return 0


def frame_ascii(buf: bytes) -> int | None:
    """Wrong: decodes strictly, so non-ASCII raises UnicodeDecodeError."""
    text = buf.decode("ascii")
    end = text.find("\n")
    return None if end < 0 else end + 1


class ZeroFramerProbe(Probe):
    """Uses frame_zero."""

    name = "bad_framer"
    services = ("bad",)
    summary = "framer returns 0"

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        """HI, one message."""
        yield Send(b"HI\r\n")
        msg = yield Recv(frame_zero)
        if msg:
            raise NotThisProtocol("?")
        return Finding(service="bad")


class AsciiFramerProbe(Probe):
    """Uses frame_ascii."""

    name = "bad_ascii"
    services = ("bad",)
    summary = "framer raises on binary"

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        """HI, one line."""
        yield Send(b"HI\r\n")
        line = yield Recv(frame_ascii)
        if not line.startswith(b"HI"):
            raise NotThisProtocol("no HI")
        return Finding(service="bad")
