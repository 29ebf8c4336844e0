"""SMTP probe.

Default ports: 25 (plain, STARTTLS), 465 (implicit TLS), 587 (submission); also the SMTP-like
answers on 691 (Exchange carries link state in SMTP as ``X-LINK2STATE``).

Sends: ``EHLO <client name>`` (``HELO`` when EHLO is refused), ``STARTTLS`` when offered on a plain
connection and then ``EHLO`` again inside TLS, finally ``QUIT``. Never authenticates, never starts
a mail transaction.

Collects: the greeting (host name, product, version), the EHLO extension list before and after
TLS, the AUTH mechanisms, the size limit, Exchange's private keywords (X-EXPS, X-ANONYMOUSTLS,
XEXCH50, X-LINK2STATE, XSHADOW, XRDST ...) and what they say about the Exchange generation, the
Windows SMTP service build kept apart from the OS it names (docs/microsoft-mail.md). Every product
claim comes from a named rule (``finding.rule``); greetings no rule knows name nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from probes._mail import os_hint, starttls_and_ask_again
from probes._microsoft import exchange_release, windows_of_service_build
from probes._replay import keep_greeting_in_replay, passive_text_finding
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
from scanner.textproto import BannerRule, decode_text, frame_smtp_reply, match_banner, rule_name

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


#: frame one SMTP reply (multi-line up to the ``ddd<SP>`` line); resumable (see scanner.textproto)
frame_reply = frame_smtp_reply


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


# Banner rules: each names a product only from the product's own words in the greeting (never a
# host name), with a stable id (finding.rule = "portproof:smtp/<id>"). Sources: the tests in
# tests/probes/test_mail_rules.py cite a real greeting for every row; Microsoft facts are in
# docs/microsoft-mail.md.
_BANNERS: list[BannerRule] = [
    # Windows' SMTP service (IIS SMTP, SMTPSVC) names its build: 5.0.2195.x on Windows 2000,
    # 6.0.3790.x on Windows Server 2003, 7.5.7601.x on 2008 R2 SP1 ...; Exchange 2000/2003 use it
    BannerRule("iis-smtpsvc-version", re.compile(r"Microsoft ESMTP MAIL Service, Version: (\d+\.\d+\.\d+[\d.]*)"),
               "Microsoft IIS SMTP", 1),
    # Exchange 2007 and later: the receive connector's default banner (no Version: field); a
    # Microsoft support article shows it glued to the host name ("contoso.comMicrosoft ESMTP ..."),
    # hence no word boundary
    BannerRule("exchange-2007-plus-banner", re.compile(r"Microsoft ESMTP MAIL Service ready at "),
               "Microsoft Exchange Server"),
    # Exchange 5.5's Internet Mail Service: "ESMTP Server (Microsoft Exchange Internet Mail Service 5.5.2653.13)"
    BannerRule("exchange-5.5-ims", re.compile(r"\bMicrosoft Exchange Internet Mail Service (5\.5\.\d+[\d.]*)"),
               "Microsoft Exchange Server", 1),
    BannerRule("exim", re.compile(r"\bE?SMTP Exim (\d+\.\d+[\w.]*)"), "Exim", 1),
    # Sendmail's default greeting "$j ESMTP Sendmail $v/$Z; $b": the binary's version, then the
    # configuration's version (kept in details)
    BannerRule("sendmail-version", re.compile(r"\bSendmail (\d+\.\d+[\w.]*)(?:/(\d+\.\d+[\w.]*))?"), "Sendmail", 1),
    # Postfix's default smtpd_banner "$myhostname ESMTP $mail_name" (Debian adds "(Debian/GNU)")
    BannerRule("postfix", re.compile(r"\bESMTP Postfix(?=$|[ (;])(?: \(?(\d+\.\d+(?:\.\d+)?)\)?)?"), "Postfix", 1),
    BannerRule("e-mailrelay", re.compile(r"\bE-MailRelay V(\d[\w.]*)"), "E-MailRelay", 1),
    # aiosmtpd greets "<host> Python SMTP <version>" (aiosmtpd/smtp.py: __ident__)
    BannerRule("aiosmtpd", re.compile(r"\bPython SMTP (\d+\.\d+[\w.]*)"), "aiosmtpd (Python SMTP)", 1),
    BannerRule("communigate-pro", re.compile(r"\bCommuniGate Pro (\d+\.\d+[\w.]*)"), "CommuniGate Pro", 1),
    BannerRule("subethasmtp", re.compile(r"\bESMTP SubEthaSMTP\b(?: (\S+))?"), "SubEthaSMTP", 1),
    BannerRule("google-gsmtp", re.compile(r" - gsmtp$"), "Google gsmtp"),
    BannerRule("mdaemon", re.compile(r"\bESMTP MDaemon (\d+\.\d+[\w.]*)"), "MDaemon", 1),
    # Ipswitch IMail: "X1 NT-ESMTP Server host (IMail 6.00 45595-15)" or "host (IMail 8.15 78648-1) NT-ESMTP Server X1"
    BannerRule("imail", re.compile(r"^(?=.*\bNT-ESMTP Server\b).*?\(IMail (\d+\.\d+[\w.]*)"), "Ipswitch IMail", 1),
    # Domino's SMTP task: "<host> ESMTP Service (Lotus Domino Release 9.0.0) ready at <date>"
    BannerRule("domino", re.compile(r"\bESMTP Service \((?:Lotus|IBM|HCL) Domino Release (\d+[\w.]*)\)"),
               "IBM Domino", 1),
    # Python's smtpd module (removed in 3.12): __version__ = "Python SMTP proxy version 0.3", greeting
    # "<fqdn> <__version__>"; the version is the module's, not Python's
    BannerRule("python-smtpd", re.compile(r"\bPython SMTP proxy version (\d+\.\d+[\w.]*)"), "Python smtpd", 1),
    # Haraka: "<host> ESMTP Haraka/<version> ready" ("ESMTP Haraka ready" with the version hidden)
    BannerRule("haraka", re.compile(r"\bESMTP Haraka(?:/(\d+\.\d+[\w.]*))?(?= |$)"), "Haraka", 1),
    # Stalwart's default greeting: "<host> Stalwart ESMTP at your service"
    BannerRule("stalwart", re.compile(r"\bStalwart ESMTP at your service\b"), "Stalwart Mail Server"),
    BannerRule("mailhog", re.compile(r"\bESMTP MailHog$"), "MailHog"),
    # mailcow-dockerized sets Postfix's mail_name to "Postcow": "<host> ESMTP Postcow"
    BannerRule("mailcow-postcow", re.compile(r"\bESMTP Postcow(?=$|[ (;])"), "Postfix (mailcow)"),
    # Paul Smith Computer Services' VPOP3: "<host> VPOP3 ESMTP Server Ready"
    BannerRule("vpop3", re.compile(r"\bVPOP3 ESMTP Server\b"), "PSCS VPOP3"),
    # Tencent's QQ Mail front ends: "<host> XMail Esmtp QQ Mail Server."
    BannerRule("qq-mail", re.compile(r"\bXMail Esmtp QQ Mail Server\b"), "Tencent QQ Mail"),
    # Amazon SES SMTP endpoints: "email-smtp.<region>.amazonaws.com ESMTP SimpleEmailService-<build> <id>"
    BannerRule("amazon-ses", re.compile(r"\bESMTP SimpleEmailService-[\w\-]+"), "Amazon SES"),
    # Mailgun's SMTP service ("Influx") greets without a host name: "Mailgun Influx ready"
    BannerRule("mailgun-influx", re.compile(r"^Mailgun Influx ready\b"), "Mailgun"),
    # AOL's multi-line greeting: a policy text in AOL's own words on its second line (the first line,
    # host and "ESMTP MUA/Third Party Client Interface", names nothing)
    BannerRule("aol-policy-text", re.compile(r"^AOL and its affiliated companies do not\b", re.M), "AOL Mail"),
    # Yandex: "<host> ESMTP (Want to use Yandex.Mail for your domain? Visit http://pdd.yandex.ru)"
    BannerRule("yandex-mail", re.compile(r"\bESMTP \(Want to use Yandex\.Mail for your domain\?"), "Yandex Mail"),
]

#: a greeting that names SMTP itself (a bare 220 line is also an FTP greeting)
_SAYS_SMTP = re.compile(r"\b(?:E?SMTP|LMTP|MTA|mail ?service)\b(?!.*\bFTP\b)", re.I)

#: EHLO keywords that only Microsoft Exchange sends
_EXCHANGE_KEYWORDS = ("X-EXPS", "X-ANONYMOUSTLS", "XEXCH50", "X-LINK2STATE", "XSHADOW", "XRDST",
                      "XPROXYFROM", "XSHADOWREQUEST", "XOORG", "X-EXCHANGEAUTH", "XRSET", "XLOOPDETECT")
#: keywords of the Exchange 2007+ transport (never added to the Windows SMTP service by 2000/2003)
_EXCHANGE_2007_PLUS = ("X-ANONYMOUSTLS", "XSHADOW", "XRDST", "XSHADOWREQUEST", "XPROXYFROM")
#: keywords of the Exchange 2013+ transport
_EXCHANGE_2013_PLUS = ("XRDST", "XSHADOWREQUEST")
#: Exchange 2000/2003 register these verbs in the Windows SMTP service (peexch50.dll, link state)
_EXCHANGE_2000_2003 = ("XEXCH50", "X-LINK2STATE")


def _microsoft_facts(f: Finding) -> None:
    """Release and OS facts that follow from a Microsoft greeting rule (the build -> release maps)."""
    if f.product == "Microsoft IIS SMTP" and f.version:
        os_name = windows_of_service_build(f.version)
        if os_name:
            f.details["os"] = os_name
            f.extrainfo = os_name
    elif f.product == "Microsoft Exchange Server":
        if f.version:
            release = exchange_release(f.version)
            if release:
                f.details["exchange_release"] = release
        else:
            f.details["exchange_generation"] = "2007 or later"


def _exchange_keywords(f: Finding, exts: dict[str, str]) -> None:
    """Name Exchange and its generation from its private EHLO keywords (docs/microsoft-mail.md)."""
    exch = [k for k in _EXCHANGE_KEYWORDS if k in exts]
    if not exch:
        return
    f.add("EHLO", "Exchange keywords: " + " ".join(exch))
    if "X-LINK2STATE" in exts:
        f.details["link_state"] = True
    base = f.version if f.product == "Microsoft IIS SMTP" else None
    on_windows_smtp = f.rule == rule_name("smtp", "iis-smtpsvc-version")
    modern = any(k in exts for k in _EXCHANGE_2007_PLUS) or f.rule == rule_name("smtp", "exchange-2007-plus-banner")
    if modern:
        gen = "2013 or later" if any(k in exts for k in _EXCHANGE_2013_PLUS) else "2007 or later"
        f.product = "Microsoft Exchange Server"
        f.details["exchange_generation"] = gen
        if f.version is None:
            f.version = gen
        f.rule = rule_name("smtp", "exchange-2013-plus-ehlo-keywords" if gen.startswith("2013")
                           else "exchange-2007-plus-ehlo-keywords")
    elif "X-LINK2STATE" in exts or ("XEXCH50" in exts and on_windows_smtp):
        # link state travels in SMTP only between Exchange 2000/2003 servers (X-LINK2STATE, CVE-2005-0560:
        # "the SMTP service of Exchange Server 2000 and 2003"); XEXCH50 is registered by Exchange Setup
        # in the Windows SMTP service (peexch50.dll), which 2007+ no longer use
        f.product, f.version = "Microsoft Exchange Server", "2000/2003"
        f.details["exchange_generation"] = "2000/2003"
        f.rule = rule_name("smtp", "exchange-2000-2003-ehlo-keywords")
        if base:
            f.details["smtpsvc_version"] = base
            f.extrainfo = f"IIS SMTP service {base}" + (f" on {f.details['os']}" if f.details.get("os") else "")
            if f.details.get("os") == "Windows Server 2003":
                # Exchange 2000 is not supported on Windows Server 2003: only Exchange 2003 runs there
                f.details["exchange_release"] = "2003"
                f.rule = rule_name("smtp", "exchange-2003-on-windows-2003-smtpsvc")
    elif "XEXCH50" in exts:
        # "The XEXCH50 verb is not used by other SMTP providers": Exchange, generation not shown
        f.product, f.version = "Microsoft Exchange Server", None
        f.rule = rule_name("smtp", "exchange-xexch50")
    else:
        return  # X-EXPS and the like alone: kept as evidence, no claim
    f.confidence = 10


def identify(greeting: SMTPReply, ehlo: EHLOInfo | None) -> Finding:
    """Name the product from the greeting and the EHLO keywords, with the evidence.

    Every product/version claim comes from a rule and sets ``finding.rule``; a greeting no rule
    knows keeps its text as evidence and names nothing.
    """
    text = greeting.text
    f = Finding(service="smtp", confidence=7)
    f.add("greeting", f"{greeting.code} {greeting.lines[0] if greeting.lines else ''}")
    m = match_banner(_BANNERS, text, f, "smtp")
    if m is not None and f.rule == rule_name("smtp", "sendmail-version") and m.group(2):
        f.details["sendmail_config_version"] = m.group(2)
    _microsoft_facts(f)
    _exchange_keywords(f, ehlo.extensions if ehlo else {})
    if f.product is None and greeting.lines:
        f.confidence = 8 if ehlo else 6
    host = greeting.lines[0].split(" ", 1)[0] if greeting.lines else ""
    if host:
        f.details["banner_host"] = host
    hint = os_hint(text)
    if hint:
        f.details["os_hint"] = hint
        f.extrainfo = f.extrainfo or hint
    return f


def _refusal(msg: bytes) -> str | None:
    """None when STARTTLS got 220 (ready to start TLS), else the reply."""
    go = parse_reply(msg)
    return None if go.code == 220 else f"{go.code} {go.text}"


#: commands an SMTP client opens with, and the ones it may send (RFC 5321 4.1, 3207, 4954, 3030)
_PASSIVE_FIRST = frozenset({"EHLO", "HELO", "LHLO"})
_PASSIVE_VERBS = _PASSIVE_FIRST | frozenset(
    {"MAIL", "RCPT", "DATA", "BDAT", "QUIT", "RSET", "NOOP", "VRFY", "EXPN", "HELP", "STARTTLS", "AUTH"}
)


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

    # ---------------------------------------------------------------- passive hooks (replay)
    def identify_passive(self, server_messages: Sequence[bytes], client_messages: Sequence[bytes]) -> Finding | None:
        """The greeting and an ``AUTH NTLM`` CHALLENGE (``334 <base64>``); with only the client
        captured, its commands (EHLO/HELO first, then MAIL FROM, RCPT TO ...)."""
        return passive_text_finding(
            "smtp",
            server_messages,
            client_messages,
            greets=self.match,
            first_verbs=_PASSIVE_FIRST,
            verbs=_PASSIVE_VERBS,
            ntlm_source="AUTH NTLM challenge (334)",
            stop_verbs=frozenset({"DATA", "BDAT"}),
        )

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        """Greeting, EHLO/HELO, STARTTLS + EHLO, QUIT."""
        greeting = parse_reply((yield Recv(frame_reply)))
        finding = identify(greeting, None)
        finding.details["greeting"] = greeting.text
        if greeting.code != 220:
            finding.details["refused"] = f"{greeting.code} {greeting.text}"
            finding.confidence = min(finding.confidence, 6)
            return finding
        named = finding.product is not None or _SAYS_SMTP.search(greeting.text) is not None
        if named:
            # a greeting naming SMTP (or an SMTP product) proves the protocol: the runner keeps it
            # whatever ends the dialogue later; a bare 220 does not (FTP greets so too)
            ctx.found(finding)
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
            upgrade = yield from starttls_and_ask_again(
                finding, build_command("STARTTLS"), frame_reply, _refusal,
                build_command("EHLO", ctx.client_name), frame_reply,
            )
            if upgrade.failed:
                return finding
            if upgrade.reply is not None:
                after = parse_reply(upgrade.reply)
                if after.code == 250:
                    tls_ehlo = parse_ehlo(after)
                    finding.details["extensions_tls"] = tls_ehlo.extensions
                    if "AUTH" in tls_ehlo.extensions:
                        finding.details["auth_tls"] = tls_ehlo.extensions["AUTH"].split()
                    refined = identify(greeting, tls_ehlo)
                    if refined.product and refined.product != finding.product:
                        finding.product, finding.version = refined.product, refined.version
                        finding.rule = refined.rule
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

