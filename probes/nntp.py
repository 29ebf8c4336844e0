"""NNTP probe.

Default ports: 119 (plain, STARTTLS), 563 (implicit TLS).

Sends: ``CAPABILITIES`` (RFC 3977), ``STARTTLS`` (RFC 4642) when listed on a plain connection and
then ``CAPABILITIES`` inside TLS, finally ``QUIT``. Never posts, never authenticates.

Collects: the greeting (200 posting allowed / 201 no posting, or 400/502 refusals), the
capability list (``IMPLEMENTATION`` names the product), the product and version (INN, Leafnode,
Microsoft Exchange's and IIS's NNTP services, Diablo, Cyclone, ...), the reader/transit mode.
"""

from __future__ import annotations

import re

from probes._replay import keep_greeting_in_replay
from scanner.api import (
    Dialogue,
    Finding,
    NotThisProtocol,
    Probe,
    ProbeContext,
    Recv,
    Send,
    StartTLS,
    TLSFailed,
)
from scanner.ntlm import negotiate_b64, record_challenge_b64
from scanner.textproto import decode_text, frame_dot_block, frame_line, match_banner, split_lines

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
    lines = split_lines(msg)
    if not lines or not lines[0].startswith("101"):
        return {}
    caps: dict[str, str] = {}
    for line in lines[1:]:
        if line == ".":
            break
        kw, _, params = line.partition(" ")
        if kw and len(caps) < 200:
            caps[kw.upper()] = params.strip()
    return caps


_BANNERS: list[tuple[re.Pattern[str], str, int | None]] = [
    (re.compile(r"InterNetNews (?:NNRP )?server INN ([\w.\-]+)"), "InterNetNews (INN)", 1),
    (re.compile(r"\bINN ([\d][\w.\-]*)"), "InterNetNews (INN)", 1),
    (re.compile(r"Leafnode NNTP Daemon, version ([\w.\-]+)"), "Leafnode", 1),
    (re.compile(r"Microsoft Exchange Internet News Service Version ([\d.]+)"), "Microsoft Exchange Server", 1),
    (re.compile(r"NNTP Service ([\d.]+) Version: [\d.]+"), "Microsoft IIS NNTP", 1),
    (re.compile(r"Microsoft NNTP Service"), "Microsoft IIS NNTP", None),
    (re.compile(r"DIABLO|Diablo"), "Diablo", None),
    (re.compile(r"Cyclone"), "Cyclone", None),
    (re.compile(r"Typhoon"), "Typhoon", None),
    (re.compile(r"DNEWS Version ([\w.]+)"), "DNews", 1),
    (re.compile(r"Giganews"), "Giganews", None),
]


def identify(code: int, greeting: str, caps: dict[str, str]) -> Finding:
    """Name the product from the greeting and the IMPLEMENTATION capability."""
    f = Finding(service="nntp", confidence=8)
    f.add("greeting", f"{code} {greeting}")
    match_banner(_BANNERS, greeting, f)
    impl = caps.get("IMPLEMENTATION")
    if impl:
        f.add("CAPABILITIES IMPLEMENTATION", impl)
        f.details["implementation"] = impl
        m = re.match(r"INN ([\w.\-]+)", impl)
        if m:
            f.product, f.version = "InterNetNews (INN)", m.group(1)
        elif f.product is None:
            m2 = re.match(r"(.+?)[ /]v?(\d+(?:\.\d+)+\w*)", impl)
            f.product, f.version = (m2.group(1), m2.group(2)) if m2 else (impl, None)
        f.confidence = 10
    f.details["posting"] = code == 200
    if "transit mode" in greeting:
        f.details["mode"] = "transit"
    elif "NNRP" in greeting or "READER" in caps:
        f.details["mode"] = "reader"
    host = greeting.split(" ", 1)[0] if greeting else ""
    if "." in host:
        f.details["banner_host"] = host
    return f


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
        finding = ctx.found(identify(code, text, {}))
        if code >= 400:
            finding.details["refused"] = f"{code} {text}"
            finding.confidence = min(finding.confidence, 6)
            return finding
        named = finding.product is not None or re.search(r"\b(?:NNTP|NNRP|news)", text, re.I) is not None
        rest = self._after_greeting(ctx, code, text, finding)
        return (yield from keep_greeting_in_replay(ctx, finding, rest, named))

    def _after_greeting(self, ctx: ProbeContext, code: int, text: str, finding: Finding) -> Dialogue:
        """CAPABILITIES, STARTTLS + CAPABILITIES, NTLM information, QUIT."""
        yield Send(b"CAPABILITIES\r\n")
        reply = yield Recv(frame_dot_block)
        rcode, rtext = parse_status(reply.split(b"\n", 1)[0])
        if rcode == 250 or rcode >= 600:
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
            yield Send(b"STARTTLS\r\n")
            go, msg = parse_status((yield Recv(frame_line)))
            if go != 382:
                finding.details["starttls_refused"] = f"{go} {msg}"
            else:
                try:
                    yield StartTLS()
                except TLSFailed as exc:
                    finding.details["starttls_error"] = str(exc)
                    return finding
                yield Send(b"CAPABILITIES\r\n")
                after = parse_capabilities((yield Recv(frame_dot_block)))
                finding.details["capabilities_tls"] = after
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

