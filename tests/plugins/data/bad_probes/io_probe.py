"""Breaks the sans-I/O rule: opens its own socket (the contract must catch it)."""

from __future__ import annotations

from scanner.api import Dialogue, Finding, Probe, ProbeContext


class SocketProbe(Probe):
    """Connects by itself instead of yielding steps."""

    name = "bad_io"
    services = ("bad",)
    summary = "imports socket"

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        """Never runs in the test: the import check reads the source."""
        import socket  # the violation

        socket.getdefaulttimeout()
        yield from ()
        return Finding(service="bad")
