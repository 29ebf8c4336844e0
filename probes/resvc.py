"""resvc: the Exchange 2000/2003 routing engine's link-state port (691/tcp).

Default port: 691. Server speaks first.

Sends nothing: it reads the greeting. The Exchange routing engine (RESvc) greets with one line in
the format nmap's service signature records::

    {GUID} NODEINFO (n) {n}Version: X Microsoft Routing Server ready

Collects: the node GUID, the version and the whole banner. An SMTP-like greeting (a 220 line)
is left to the smtp probe, which the engine offers every greeting (Exchange can also carry link
state inside SMTP, ``X-LINK2STATE``); anything else is left to the engine (``unidentified`` with
the bytes).

No real server exists that we can run (Exchange 2000/2003 only): the tests use transcripts built
from the published banner format, and the lab's 691 stays closed. Port 522 (ULS) needs no probe:
the engine reports it closed, or open/unidentified with the bytes it saw.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from scanner.api import Dialogue, Finding, NotThisProtocol, Probe, ProbeContext, Recv
from scanner.textproto import LineFramer, decode_text, rule_name

__all__ = ["LinkStateBanner", "ResvcProbe", "frame_resvc_banner", "parse_resvc_banner"]

#: the longest banner line accepted
MAX_BANNER = 1024

_BANNER = re.compile(
    r"^\{(?P<guid>[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})\}\s+"
    r"NODEINFO\s+\((?P<n>\d{1,6})\)\s+\{(?P<m>\d{1,6})\}\s*"
    r"Version:\s*(?P<version>[^\s]+)\s+Microsoft Routing Server ready\s*$"
)


@dataclass(frozen=True, slots=True)
class LinkStateBanner:
    """The routing engine's greeting, parsed."""

    guid: str
    nodeinfo: int
    version: str
    banner: str


#: frame the greeting: one line, at most :data:`MAX_BANNER` bytes (resumable)
frame_resvc_banner = LineFramer(MAX_BANNER)


def parse_resvc_banner(line: bytes) -> LinkStateBanner:
    """Parse a link-state greeting; :class:`NotThisProtocol` when the line is not one."""
    text = decode_text(line).rstrip("\r\n")
    m = _BANNER.match(text)
    if not m:
        raise NotThisProtocol("not a Microsoft Routing Server greeting")
    return LinkStateBanner(m.group("guid").lower(), int(m.group("n")), m.group("version"), text)


class ResvcProbe(Probe):
    """Exchange routing engine link state (RESvc) on 691: banner only."""

    name = "resvc"
    services = ("resvc",)
    ports = (691,)
    server_first = True
    rarity = 8
    summary = "Exchange routing engine link-state greeting ('Microsoft Routing Server ready')"

    def match(self, greeting: bytes) -> bool:
        """A ``{GUID} NODEINFO`` line or one naming the routing server (a 220 line is smtp's)."""
        return b"Microsoft Routing Server" in greeting[:MAX_BANNER] or (
            greeting.startswith(b"{") and b"NODEINFO" in greeting[:MAX_BANNER]
        )

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        """Read one line and parse it."""
        line = yield Recv(frame_resvc_banner, max_size=MAX_BANNER + 1)
        banner = parse_resvc_banner(line)
        finding = Finding(
            service="resvc",
            product="Microsoft Exchange routing engine (link state)",
            version=banner.version,
            confidence=10,
            extrainfo=f"node {{{banner.guid}}}",
            # the greeting names the routing engine itself ("Microsoft Routing Server ready")
            rule=rule_name("resvc", "exchange-routing-server-greeting"),
        )
        finding.add("greeting", banner.banner)
        finding.details.update({"guid": banner.guid, "nodeinfo": banner.nodeinfo, "banner": banner.banner})
        return finding
