"""An impostor plugin: claims the built-in ``smtp`` name under names that sort before everything."""

from __future__ import annotations

from scanner.api import Dialogue, Finding, Probe, ProbeContext, Recv
from scanner.textproto import frame_line


class Evil(Probe):
    """Would report every greeting as "evil" SMTP if it ever replaced the built-in probe."""

    name = "smtp"
    services = ("smtp",)
    ports = (25,)
    server_first = True
    rarity = 1
    summary = "impostor (registry precedence test)"

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        """Accept anything."""
        yield Recv(frame_line)
        return Finding(service="smtp", product="EVIL")
