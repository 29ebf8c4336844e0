"""POP3 probe.

Default ports: 110 (plain, STLS), 995 (implicit TLS).

Sends: ``CAPA`` (RFC 2449), ``STLS`` when offered on a plain connection and then ``CAPA`` inside
TLS, finally ``QUIT``. Never logs in.

Collects: the greeting (and its APOP timestamp if any), the capability list before and after TLS
(``IMPLEMENTATION`` often names the product), SASL mechanisms, the product and version (Dovecot,
Cyrus, Courier, qpopper, Microsoft Exchange, CMailServer, lavad, the 1&1 platform ...).
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

__all__ = ["POP3Probe", "identify", "parse_capa", "parse_status"]


def parse_status(msg: bytes) -> tuple[bool, str]:
    """Parse a status line: (+OK?, text)."""
    line = decode_text(msg).rstrip("\r\n")
    if line.startswith("+OK"):
        return True, line[3:].strip()
    if line.startswith("-ERR"):
        return False, line[4:].strip()
    raise NotThisProtocol("not a POP3 status line")


def parse_capa(msg: bytes) -> dict[str, str]:
    """Parse a CAPA reply (``+OK`` then capability lines up to ``.``) into keyword -> params."""
    lines = split_lines(msg)
    if not lines or not lines[0].startswith("+OK"):
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
    (re.compile(r"Microsoft Exchange Server (\d{4}) POP3 server version ([\d.]+)"), "Microsoft Exchange Server", 2),
    (re.compile(r"Microsoft Exchange (?:2000 )?POP3 server version ([\d.]+)"), "Microsoft Exchange Server", 1),
    (re.compile(r"The Microsoft Exchange POP3 service is ready"), "Microsoft Exchange Server", None),
    (re.compile(r"Microsoft Windows POP3 Service Version ([\d.]+)"), "Microsoft Windows POP3 Service", 1),
    (re.compile(r"Dovecot"), "Dovecot", None),
    (re.compile(r"Cyrus POP3(?: Murder)? v?([\w.\-]+)"), "Cyrus POP3", 1),
    (re.compile(r"Qpopper \(version ([\w.]+)\)"), "Qpopper", 1),
    (re.compile(r"POP3 (20\d\d[a-z]?\.[\d.]+) server ready"), "UW POP3", 1),
    (re.compile(r"CMailServer ([\w.]+)"), "CMailServer", 1),
    (re.compile(r"POP server ready H mi\w+"), "1&1 / United Internet mail platform", None),
    (re.compile(r"^lavad\b"), "lavad", None),
    (re.compile(r"Zimbra"), "Zimbra", None),
    (re.compile(r"hMailServer"), "hMailServer", None),
    (re.compile(r"Kerio Connect ([\d.]+)"), "Kerio Connect", 1),
    (re.compile(r"MDaemon(?: POP3 Server)? v?([\w.]+)"), "MDaemon", 1),
    (re.compile(r"Gpop ready"), "Google Gmail POP3", None),
]


def identify(greeting: str, caps: dict[str, str]) -> Finding:
    """Name the product from the greeting and the CAPA list."""
    f = Finding(service="pop3", confidence=8)
    f.add("greeting", "+OK " + greeting)
    match_banner(_BANNERS, greeting, f)
    impl = caps.get("IMPLEMENTATION")
    if impl:
        f.add("CAPA IMPLEMENTATION", impl)
        f.details["implementation"] = impl
        m = re.match(r"([A-Za-z][\w\-]*(?: [A-Za-z][\w\-]*)*?)[ -_/]v?(\d+(?:\.\d+)+\w*)", impl)
        if f.product is None or f.version is None:
            if m:
                f.product = f.product or m.group(1)
                f.version = f.version or m.group(2)
            elif f.product is None:
                f.product = impl.split()[0]
            f.confidence = 10
    m = re.search(r"<[^<>@\s]+@[^<>\s]+>", greeting)
    if m:
        f.details["apop_timestamp"] = m.group(0)
    m = re.search(r"\((Debian|Ubuntu|Red Hat|CentOS|FreeBSD)[^)]*\)", greeting)
    if m:
        f.extrainfo = m.group(0).strip("()")
    return f


class POP3Probe(Probe):
    """POP3: greeting, CAPA, STLS and CAPA again; implicit TLS on 995."""

    name = "pop3"
    services = ("pop3",)
    transports = ("tcp",)
    ports = (110, 995)
    tls_ports = (995,)
    server_first = True
    rarity = 1
    summary = "POP3 greeting, CAPA (IMPLEMENTATION), STLS; Dovecot, Cyrus, Exchange, qpopper"

    def match(self, greeting: bytes) -> bool:
        """POP3 greets with ``+OK`` (or ``-ERR`` when refusing)."""
        return greeting.startswith(b"+OK") or greeting.startswith(b"-ERR")

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        """Greeting, CAPA, STLS + CAPA, QUIT."""
        ok, text = parse_status((yield Recv(frame_line)))
        finding = ctx.found(identify(text, {}))
        if not ok:
            finding.details["refused"] = text
            finding.confidence = min(finding.confidence, 6)
            return finding
        # "+OK" / "* OK" greetings are this protocol's own: enough to keep in a replay
        return (yield from keep_greeting_in_replay(ctx, finding, self._after_greeting(ctx, text, finding), True))

    def _after_greeting(self, ctx: ProbeContext, text: str, finding: Finding) -> Dialogue:
        """CAPA, STLS + CAPA, NTLM information, QUIT."""
        yield Send(b"CAPA\r\n")
        reply = yield Recv(frame_dot_block)
        caps = parse_capa(reply)
        if not reply.startswith((b"+OK", b"-ERR")):
            raise NotThisProtocol("CAPA answered with neither +OK nor -ERR")
        finding = ctx.found(identify(text, caps).inherit(finding))
        finding.details["capabilities"] = caps
        if caps:
            finding.add("CAPA", " ".join(caps))
        finding.details["sasl"] = caps.get("SASL", "").split()
        finding.details["starttls"] = "STLS" in caps
        if "STLS" in caps and ctx.tls is None:
            yield Send(b"STLS\r\n")
            ok_tls, msg = parse_status((yield Recv(frame_line)))
            if not ok_tls:
                finding.details["starttls_refused"] = msg
            else:
                try:
                    yield StartTLS()
                except TLSFailed as exc:
                    finding.details["starttls_error"] = str(exc)
                    return finding
                yield Send(b"CAPA\r\n")
                after = parse_capa((yield Recv(frame_dot_block)))
                finding.details["capabilities_tls"] = after
                finding.details["sasl_tls"] = after.get("SASL", "").split()
        sasl = finding.details.get("sasl_tls") or finding.details.get("sasl") or []
        if "NTLM" in (m.upper() for m in sasl):
            yield Send(b"AUTH NTLM\r\n")
            line = decode_text((yield Recv(frame_line))).strip()
            if line.startswith("+"):
                yield Send(negotiate_b64().encode() + b"\r\n")
                line = decode_text((yield Recv(frame_line))).strip()
                if line.startswith("+ "):
                    record_challenge_b64(finding, "AUTH NTLM challenge", line[2:])
                    yield Send(b"*\r\n")  # cancel: no credentials are ever sent
                    yield Recv(frame_line)
                else:
                    finding.details["ntlm_error"] = line[:200]
            else:
                finding.details["ntlm_error"] = line[:200]
        yield Send(b"QUIT\r\n")
        return finding

