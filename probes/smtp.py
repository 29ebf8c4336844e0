"""SMTP probe.

Default ports: 25 (plain, STARTTLS), 465 (implicit TLS), 587 (submission); also the SMTP-like
answers on 691 (Exchange carries link state in SMTP as ``X-LINK2STATE``).

Sends: ``EHLO <client name>`` (``HELO`` when EHLO is refused), ``STARTTLS`` when offered on a plain
connection and then ``EHLO`` again inside TLS, finally ``QUIT``. Never authenticates, never starts
a mail transaction.

Collects: the greeting (host name, product, version), the EHLO extension list before and after
TLS, the AUTH mechanisms, the size limit, Exchange's private keywords (X-EXPS, X-ANONYMOUSTLS,
XEXCH50, X-LINK2STATE, XSHADOW, XRDST ...) and what they say about the Exchange generation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

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
from scanner.textproto import decode_text, frame_smtp_reply, match_banner

__all__ = ["SMTPProbe", "SMTPReply", "build_command", "frame_reply", "identify", "parse_ehlo", "parse_reply"]


@dataclass(frozen=True)
class SMTPReply:
    """One SMTP reply: its code and its text lines (without the code prefix)."""

    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        """All lines joined with a newline."""
        return "\n".join(self.lines)


def frame_reply(buf: bytes) -> int | None:
    """Frame one SMTP reply (multi-line up to the ``ddd<SP>`` line)."""
    return frame_smtp_reply(buf)


def parse_reply(msg: bytes) -> SMTPReply:
    """Parse one framed SMTP reply."""
    lines = [ln for ln in msg.replace(b"\r\n", b"\n").split(b"\n") if ln]
    if not lines or not lines[0][:3].isdigit():
        raise NotThisProtocol("not an SMTP reply")
    code = int(lines[0][:3])
    return SMTPReply(code, tuple(decode_text(ln[4:]) for ln in lines))


def build_command(verb: str, arg: str | None = None) -> bytes:
    """An SMTP command line (CR and LF removed from the argument)."""
    if arg:
        arg = arg.replace("\r", "").replace("\n", "")
        return f"{verb} {arg}\r\n".encode("ascii", "replace")
    return f"{verb}\r\n".encode("ascii")


@dataclass
class EHLOInfo:
    """The EHLO reply: the server's name and its extensions (keyword -> parameters)."""

    host: str
    greeting_text: str
    extensions: dict[str, str] = field(default_factory=dict)


def parse_ehlo(reply: SMTPReply) -> EHLOInfo:
    """Parse a 250 EHLO reply into the server name and the extension keywords."""
    first = reply.lines[0] if reply.lines else ""
    host = first.split(" ", 1)[0]
    ext: dict[str, str] = {}
    for line in reply.lines[1:]:
        kw, _, params = line.strip().partition(" ")
        if not kw or len(ext) >= 200:
            continue
        kw = kw.upper()
        if kw.startswith("AUTH="):  # old Netscape-style "AUTH=LOGIN"
            kw, params = "AUTH", kw[5:] + (" " + params if params else "")
        ext[kw] = (ext[kw] + " " + params).strip() if kw in ext else params.strip()
    return EHLOInfo(host=host, greeting_text=first, extensions=ext)


# (regex over the greeting text, product, version group or None, extra facts)
_BANNERS: list[tuple[re.Pattern[str], str, int | None]] = [
    (re.compile(r"Microsoft ESMTP MAIL Service, Version: ([\d.]+)"), "Microsoft IIS SMTP", 1),
    (re.compile(r"Microsoft ESMTP MAIL Service ready"), "Microsoft Exchange Server", None),
    (re.compile(r"Microsoft Exchange Internet Mail Service ([\d.]+)"), "Microsoft Exchange Server", 1),
    (re.compile(r"Microsoft SMTP MAIL ready at"), "Microsoft IIS SMTP", None),
    (re.compile(r"ESMTP Exim ([\w.]+)"), "Exim", 1),
    (re.compile(r"\bExim ([\d.]+)"), "Exim", 1),
    (re.compile(r"Sendmail ([\w.]+)(?:/[\w.]+)?"), "Sendmail", 1),
    (re.compile(r"Postfix \(?(\d+\.\d+(?:\.\d+)?)\)?"), "Postfix", 1),
    (re.compile(r"ESMTP Postfix"), "Postfix", None),
    (re.compile(r"\bPostfix\b"), "Postfix", None),
    (re.compile(r"E-MailRelay V([\w.]+)"), "E-MailRelay", 1),
    (re.compile(r"Python SMTP ([\d.]+)"), "aiosmtpd (Python SMTP)", 1),
    (re.compile(r"OpenSMTPD"), "OpenSMTPD", None),
    (re.compile(r"\bqmail\b", re.I), "qmail", None),
    (re.compile(r"Haraka(?:/| )?([\d.]+)?"), "Haraka", 1),
    (re.compile(r"CommuniGate Pro(?: SMTP)? ([\w.]+)"), "CommuniGate Pro", 1),
    (re.compile(r"MailEnable Service(?:, Version: ([\w.-]+))?"), "MailEnable", 1),
    (re.compile(r"hMailServer"), "hMailServer", None),
    (re.compile(r"Zimbra"), "Zimbra", None),
    (re.compile(r"Lotus Domino|IBM Domino"), "IBM Domino", None),
    (re.compile(r"Courier"), "Courier MTA", None),
    (re.compile(r"SubEthaSMTP(?: ([\w.]+))?"), "SubEthaSMTP", 1),
    (re.compile(r" - gsmtp\b"), "Google gsmtp", None),
    (re.compile(r"Kerio Connect ([\d.]+)"), "Kerio Connect", 1),
    (re.compile(r"MDaemon ESMTP(?: server)? ([\w.]+)"), "MDaemon", 1),
]

#: a greeting that names SMTP itself (a bare 220 line is also an FTP greeting)
_SAYS_SMTP = re.compile(r"\b(?:E?SMTP|LMTP|MTA|mail ?service)\b(?!.*\bFTP\b)", re.I)

#: EHLO keywords that only Microsoft Exchange sends
_EXCHANGE_KEYWORDS = ("X-EXPS", "X-ANONYMOUSTLS", "XEXCH50", "X-LINK2STATE", "XSHADOW", "XRDST",
                      "XPROXYFROM", "XSHADOWREQUEST", "XOORG", "X-EXCHANGEAUTH", "XRSET", "XLOOPDETECT")


def identify(greeting: SMTPReply, ehlo: EHLOInfo | None) -> Finding:
    """Name the product from the greeting and the EHLO keywords, with the evidence."""
    text = greeting.text
    f = Finding(service="smtp", confidence=7)
    f.add("greeting", f"{greeting.code} {greeting.lines[0] if greeting.lines else ''}")
    match_banner(_BANNERS, text, f)
    exts = ehlo.extensions if ehlo else {}
    exch = [k for k in _EXCHANGE_KEYWORDS if k in exts]
    if exch:
        f.add("EHLO", "Exchange keywords: " + " ".join(exch))
        modern = any(k in exts for k in ("X-ANONYMOUSTLS", "XSHADOW", "XRDST", "XSHADOWREQUEST", "XPROXYFROM"))
        modern = modern or "ready at" in text
        if not modern and ("X-LINK2STATE" in exts or "XEXCH50" in exts):
            # Exchange 2000/2003 add XEXCH50 and X-LINK2STATE to the IIS SMTP service; 2007+ still
            # offers XEXCH50 but adds X-ANONYMOUSTLS / XSHADOW and greets "... ready at <date>"
            f.details["exchange_generation"] = "2000/2003"
            base = f.version if f.product == "Microsoft IIS SMTP" else None
            f.product = "Microsoft Exchange Server"
            f.version = "2000/2003"
            if base:
                f.details["smtpsvc_version"] = base
                f.extrainfo = f"IIS SMTP service {base}"
        else:
            f.product = "Microsoft Exchange Server"
            gen = "2013 or later" if ("XRDST" in exts or "XSHADOWREQUEST" in exts) else "2007 or later"
            f.details["exchange_generation"] = gen
            if f.version is None:
                f.version = gen
        f.confidence = 10
        if "X-LINK2STATE" in exts:
            f.details["link_state"] = True
    if f.product is None and greeting.lines:
        f.confidence = 8 if ehlo else 6
    host = greeting.lines[0].split(" ", 1)[0] if greeting.lines else ""
    if host:
        f.details["banner_host"] = host
    m = re.search(r"\(([^()]*(?:Debian|Ubuntu|Red Hat|CentOS|FreeBSD|GNU)[^()]*)\)", text)
    if m:
        f.details["os_hint"] = m.group(1)
        f.extrainfo = f.extrainfo or m.group(1)
    return f


class SMTPProbe(Probe):
    """SMTP: greeting, EHLO (HELO fallback), STARTTLS and EHLO again; implicit TLS on 465."""

    name = "smtp"
    services = ("smtp",)
    transports = ("tcp",)
    ports = (25, 465, 587, 691, 2525)
    tls_ports = (465,)
    server_first = True
    rarity = 1
    summary = "SMTP greeting, EHLO extensions, STARTTLS; Postfix, Exim, Sendmail, Exchange, IIS SMTP"

    def match(self, greeting: bytes) -> bool:
        """SMTP greets with 220 (ready), 421 or 554 (not available) and a three-digit code line."""
        return bool(re.match(rb"(220|421|554)[ -]", greeting))

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        """Greeting, EHLO/HELO, STARTTLS + EHLO, QUIT."""
        greeting = parse_reply((yield Recv(frame_reply)))
        finding = ctx.found(identify(greeting, None))
        finding.details["greeting"] = greeting.text
        if greeting.code != 220:
            finding.details["refused"] = f"{greeting.code} {greeting.text}"
            finding.confidence = min(finding.confidence, 6)
            return finding
        named = finding.product is not None or _SAYS_SMTP.search(greeting.text) is not None
        rest = self._after_greeting(ctx, greeting, finding)
        return (yield from keep_greeting_in_replay(ctx, finding, rest, named))

    def _after_greeting(self, ctx: ProbeContext, greeting: SMTPReply, finding: Finding) -> Dialogue:
        """EHLO/HELO, STARTTLS + EHLO, NTLM information, QUIT."""
        yield Send(build_command("EHLO", ctx.client_name))
        reply = parse_reply((yield Recv(frame_reply)))
        ehlo: EHLOInfo | None = None
        if reply.code == 250:
            ehlo = parse_ehlo(reply)
        else:
            finding.details["ehlo_refused"] = f"{reply.code} {reply.text}"
            yield Send(build_command("HELO", ctx.client_name))
            helo = parse_reply((yield Recv(frame_reply)))
            if helo.code != 250:
                raise NotThisProtocol(f"neither EHLO nor HELO accepted ({reply.code}, {helo.code})")
            finding.details["helo"] = helo.text
        finding = ctx.found(identify(greeting, ehlo).inherit(finding))
        if ehlo:
            finding.details["ehlo_host"] = ehlo.host
            finding.details["extensions"] = ehlo.extensions
            finding.add("EHLO", " ".join(ehlo.extensions))
            if "AUTH" in ehlo.extensions:
                finding.details["auth"] = ehlo.extensions["AUTH"].split()
            finding.details["starttls"] = "STARTTLS" in ehlo.extensions
        if ehlo and "STARTTLS" in ehlo.extensions and ctx.tls is None:
            yield Send(build_command("STARTTLS"))
            go = parse_reply((yield Recv(frame_reply)))
            if go.code != 220:
                finding.details["starttls_refused"] = f"{go.code} {go.text}"
            else:
                try:
                    yield StartTLS()
                except TLSFailed as exc:
                    finding.details["starttls_error"] = str(exc)
                    return finding
                yield Send(build_command("EHLO", ctx.client_name))
                after = parse_reply((yield Recv(frame_reply)))
                if after.code == 250:
                    tls_ehlo = parse_ehlo(after)
                    finding.details["extensions_tls"] = tls_ehlo.extensions
                    if "AUTH" in tls_ehlo.extensions:
                        finding.details["auth_tls"] = tls_ehlo.extensions["AUTH"].split()
                    refined = identify(greeting, tls_ehlo)
                    if refined.product and refined.product != finding.product:
                        finding.product, finding.version = refined.product, refined.version
        auth = finding.details.get("auth_tls") or finding.details.get("auth") or []
        if "NTLM" in (a.upper() for a in auth):
            yield from _ntlm_info(finding)
        yield Send(build_command("QUIT"))
        return finding


def _ntlm_info(finding: Finding) -> Dialogue:
    """AUTH NTLM with a NEGOTIATE, read the CHALLENGE's names and OS build, then cancel (``*``)."""
    yield Send(build_command("AUTH", "NTLM " + negotiate_b64()))
    reply = parse_reply((yield Recv(frame_reply)))
    if reply.code != 334:
        finding.details["ntlm_error"] = f"{reply.code} {reply.text}"
        return finding
    record_challenge_b64(finding, "AUTH NTLM challenge", reply.lines[0].strip())
    yield Send(b"*\r\n")  # cancel the exchange: no credentials are ever sent
    yield Recv(frame_reply)
    return finding

