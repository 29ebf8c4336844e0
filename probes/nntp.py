"""NNTP probe.

Default ports: 119 (plain, STARTTLS), 563 (implicit TLS).

Sends: ``CAPABILITIES`` (RFC 3977), ``STARTTLS`` (RFC 4642) when listed on a plain connection and
then ``CAPABILITIES`` inside TLS, finally ``QUIT``. Never posts, never authenticates.

Collects: the greeting (200 posting allowed / 201 no posting, or 400/502 refusals), the
capability list (``IMPLEMENTATION`` names the product), the product and version (INN, Leafnode,
the Windows/IIS NNTP service that Exchange 2000/2003 also use), the reader/transit mode. Every
product claim comes from a named rule (``finding.rule``); greetings no rule knows are kept as
evidence and name nothing.
"""

from __future__ import annotations

import re

from probes._mail import IMPLEMENTATION, parse_capability_list, starttls_and_ask_again
from probes._microsoft import windows_of_service_build
from probes._replay import keep_greeting_in_replay
from scanner.api import (
    Dialogue,
    Finding,
    NotThisProtocol,
    Probe,
    ProbeContext,
    Recv,
    Send,
)
from scanner.ntlm import negotiate_b64, record_challenge_b64
from scanner.textproto import BannerRule, decode_text, frame_dot_block, frame_line, match_banner, rule_name

__all__ = ["NNTPProbe", "identify", "parse_capabilities", "parse_status"]


def parse_status(msg: bytes) -> tuple[int, str]:
    """Parse an NNTP status line: (code, text)."""
    line = decode_text(msg).rstrip("\r\n")
    m = re.match(r"([1-5]\d\d)(?: (.*))?$", line)
    if not m:
        raise NotThisProtocol("not an NNTP status line")
    return int(m.group(1)), m.group(2) or ""


def parse_capabilities(msg: bytes) -> dict[str, str]:
    """Parse a 101 CAPABILITIES reply into keyword -> params ({} for anything else)."""
    return parse_capability_list(msg, "101")


# Banner rules: each names a product only from the product's own words in the greeting (never a
# host name), with a stable id (finding.rule = "portproof:nntp/<id>"). Every row has a real greeting
# in tests/probes/test_mail_rules.py; Microsoft facts in docs/microsoft-mail.md. Products we know no
# sourced greeting for (Diablo, Typhoon/Cyclone, DNews ...) are left to the service database.
_BANNERS: list[BannerRule] = [
    # INN: "host InterNetNews NNRP server INN 2.7.1 ready (posting ok)" (nnrpd),
    # "host InterNetNews server INN 2.5.2 ready (transit mode)" (innd)
    BannerRule("inn", re.compile(r"\bInterNetNews (?:NNRP )?server INN (\d+\.\d+[\w.\-]*)"), "InterNetNews (INN)", 1),
    BannerRule("leafnode", re.compile(r"\bLeafnode NNTP Daemon, version (\d+\.\d+[\w.\-]*)"), "Leafnode", 1),
    # sn (snntpd): "Hi, you can't post (sn version 0.3.8)"
    BannerRule("sn", re.compile(r"\(sn version (\d+\.\d+[\w.]*)\)$"), "sn", 1),
    # IIS 4 (NT 4.0 Option Pack): "NNTP Service Microsoft(R) Internet Services 5.5 Version: 5.5.1774.x ..."
    # (the registered sign is sent as one latin-1 byte, decoded as "®", or written "(R)")
    BannerRule("iis-nntp-internet-services",
               re.compile(r"^NNTP Service Microsoft(?:®|\(R\))? Internet Services \d+\.\d+ "
                          r"Version: (\d+\.\d+\.\d+[\d.]*)"),
               "Microsoft IIS NNTP", 1),
    # Windows 2000 / Server 2003 NNTP service (also Exchange 2000/2003's news service):
    # "NNTP Service 6.0.3790.3959 Version: 6.0.3790.3959 Posting Allowed"
    BannerRule("iis-nntp-version",
               re.compile(r"^NNTP Service \d+\.\d+\.\d+[\d.]* Version: (\d+\.\d+\.\d+[\d.]*) "
                          r"Posting (?:Allowed|Not Allowed)"),
               "Microsoft IIS NNTP", 1),
    # Cyrus nntpd with serverinfo: on: "<host> Cyrus NNTP 3.6.1-Debian-3.6.1-4+deb12u5 server ready, ..."
    BannerRule("cyrus", re.compile(r"\bCyrus NNTP(?: Murder)? v?(\d+\.\d+[\d.]*)[\w.\-+~]* server ready"),
               "Cyrus NNTP", 1),
    # JamNNTPd (JAM message bases): "Welcome to JamNNTPd/<platform> <version> (posting may ...)"
    BannerRule("jamnntpd", re.compile(r"\bJamNNTPd/\w+ (\d+\.\d+[\w.]*)"), "JamNNTPd", 1),
    # Ginzicut (Python NNTP server): "<address> Ginzicut 1.0 server ready (no posting allowed)"
    BannerRule("ginzicut", re.compile(r"\bGinzicut (\d+\.\d+[\w.]*) server ready\b"), "Ginzicut", 1),
]

#: INN's CAPABILITIES IMPLEMENTATION value (RFC 3977 §5.2: the server's own name and version)
_INN_IMPLEMENTATION = re.compile(r"INN (\d+\.\d+[\w.\-]*)")
_GENERIC_NAMES = frozenset({"nntp", "nntpd", "news", "news server", "nntp server", "server", "generic"})


def identify(code: int, greeting: str, caps: dict[str, str]) -> Finding:
    """Name the product from the greeting and the IMPLEMENTATION capability.

    Every product/version claim comes from a rule and sets ``finding.rule``; a greeting no rule
    knows keeps its text as evidence and names nothing.
    """
    f = Finding(service="nntp", confidence=8)
    f.add("greeting", f"{code} {greeting}")
    match_banner(_BANNERS, greeting, f, "nntp")
    if f.product == "Microsoft IIS NNTP" and f.version:
        os_name = windows_of_service_build(f.version)
        if os_name:
            f.details["os"] = os_name
            f.extrainfo = os_name
    impl = caps.get("IMPLEMENTATION")
    if impl:
        f.add("CAPABILITIES IMPLEMENTATION", impl)
        f.details["implementation"] = impl
        m = _INN_IMPLEMENTATION.fullmatch(impl.strip())
        im = IMPLEMENTATION.fullmatch(impl.strip())
        if m:
            f.product, f.version, f.confidence = "InterNetNews (INN)", m.group(1), 10
            f.rule = rule_name("nntp", "inn-implementation")
        elif f.product is None and im and im.group(1).lower() not in _GENERIC_NAMES:
            f.product, f.version, f.confidence = im.group(1), im.group(2), 10
            f.rule = rule_name("nntp", "rfc3977-implementation")
    f.details["posting"] = code == 200
    if "transit mode" in greeting:
        f.details["mode"] = "transit"
    elif "NNRP" in greeting or "READER" in caps:
        f.details["mode"] = "reader"
    host = greeting.split(" ", 1)[0] if greeting else ""
    if "." in host:
        f.details["banner_host"] = host
    return f


def _refusal(msg: bytes) -> str | None:
    """None when STARTTLS got 382 (continue with TLS negotiation), else the status line."""
    code, text = parse_status(msg)
    return None if code == 382 else f"{code} {text}"


class NNTPProbe(Probe):
    """NNTP: greeting, CAPABILITIES, STARTTLS and CAPABILITIES again; implicit TLS on 563."""

    name = "nntp"
    services = ("nntp",)
    transports = ("tcp",)
    ports = (119, 563, 433)
    tls_ports = (563,)
    server_first = True
    rarity = 2
    summary = "NNTP greeting, CAPABILITIES (IMPLEMENTATION), STARTTLS; INN, Leafnode, Exchange"

    def match(self, greeting: bytes) -> bool:
        """NNTP greets with 200/201 (or 400/502 when refusing)."""
        return bool(re.match(rb"(200|201|400|502) ", greeting))

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        """Greeting, CAPABILITIES, STARTTLS + CAPABILITIES, QUIT."""
        code, text = parse_status((yield Recv(frame_line)))
        if code not in (200, 201, 400, 502):
            raise NotThisProtocol(f"greeting code {code} is not an NNTP greeting")
        finding = identify(code, text, {})
        if code >= 400:
            finding.details["refused"] = f"{code} {text}"
            finding.confidence = min(finding.confidence, 6)
            return finding
        named = finding.product is not None or re.search(r"\b(?:NNTP|NNRP|news)", text, re.I) is not None
        if named:
            # a greeting naming NNTP (or an NNTP product) proves the protocol: the runner keeps it
            # whatever ends the dialogue later; a bare 200 does not
            ctx.found(finding)
        rest = self._after_greeting(ctx, code, text, finding)
        return (yield from keep_greeting_in_replay(ctx, finding, rest, named))

    def _after_greeting(self, ctx: ProbeContext, code: int, text: str, finding: Finding) -> Dialogue:
        """CAPABILITIES, STARTTLS + CAPABILITIES, NTLM information, QUIT."""
        yield Send(b"CAPABILITIES\r\n")
        reply = yield Recv(frame_dot_block)
        rcode, rtext = parse_status(reply.split(b"\n", 1)[0])
        if rcode == 250:  # no NNTP answer to CAPABILITIES is 250 (parse_status admits 1xx-5xx only)
            raise NotThisProtocol("CAPABILITIES got a non-NNTP answer")
        caps = parse_capabilities(reply)
        finding = ctx.found(identify(code, text, caps).inherit(finding))
        if caps:
            finding.details["capabilities"] = caps
            finding.add("CAPABILITIES", " ".join(caps))
        else:
            finding.details["capabilities_reply"] = f"{rcode} {rtext}"
        finding.details["starttls"] = "STARTTLS" in caps
        if "STARTTLS" in caps and ctx.tls is None:
            upgrade = yield from starttls_and_ask_again(
                finding, b"STARTTLS\r\n", frame_line, _refusal, b"CAPABILITIES\r\n", frame_dot_block
            )
            if upgrade.failed:
                return finding
            if upgrade.reply is not None:
                finding.details["capabilities_tls"] = parse_capabilities(upgrade.reply)
        sasl = (finding.details.get("capabilities_tls") or caps).get("SASL", "").upper().split()
        if "NTLM" in sasl:
            # RFC 4643: AUTHINFO SASL NTLM <initial response> -> 383 <challenge>
            yield Send(b"AUTHINFO SASL NTLM " + negotiate_b64().encode() + b"\r\n")
            yield from _ntlm_reply(finding, 383)
        elif not caps and finding.product and "Microsoft" in finding.product:
            # Exchange / IIS NNTP: AUTHINFO GENERIC NTLM -> 381, NEGOTIATE -> 381 <challenge>
            yield Send(b"AUTHINFO GENERIC NTLM\r\n")
            go, _ = parse_status((yield Recv(frame_line)))
            if go == 381:
                yield Send(negotiate_b64().encode() + b"\r\n")
                yield from _ntlm_reply(finding, 381)
        yield Send(b"QUIT\r\n")
        return finding


def _ntlm_reply(finding: Finding, want: int) -> Dialogue:
    """Read the status line carrying the CHALLENGE, record it, and cancel with ``*``."""
    code, text = parse_status((yield Recv(frame_line)))
    if code != want or not text.strip():
        finding.details["ntlm_error"] = f"{code} {text}"[:200]
        return finding
    record_challenge_b64(finding, "AUTHINFO NTLM challenge", text.strip().split()[0])
    yield Send(b"*\r\n")  # cancel: no credentials are ever sent
    yield Recv(frame_line)
    return finding

