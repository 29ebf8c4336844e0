"""A local plugin (for --plugin-path) whose dialogue raises: the scan must go on (probe-bug).

Default ports: 110, 143 (hinted, rarity 1 and a name sorting first, so it runs before pop3/imap).
Sends nothing. Collects the greeting line, then looks up a key that is not there (the bug).
"""

from __future__ import annotations

from scanner.api import Dialogue, Probe, ProbeContext, Recv
from scanner.textproto import frame_line


class RaisingProbe(Probe):
    """Matches any greeting, then fails with a KeyError."""

    name = "a_raiser"
    services = ("raiser",)
    ports = (110, 143)
    server_first = True
    rarity = 1
    summary = "test plugin whose dialogue raises"

    def match(self, greeting: bytes) -> bool:
        """Claims every greeting."""
        return True

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        """Reads the greeting, then the bug."""
        line = yield Recv(frame_line)
        table: dict[bytes, str] = {}
        return table[line]  # KeyError: the bug the engine must contain
