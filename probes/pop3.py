"""POP3 probe.

Default ports: 110 (plain, STLS), 995 (implicit TLS).

Sends: ``CAPA`` (RFC 2449), ``STLS`` when offered on a plain connection and then ``CAPA`` inside
TLS, finally ``QUIT``. Never logs in.

Collects: the greeting (and its APOP timestamp if any), the capability list before and after TLS
(``IMPLEMENTATION`` often names the product), SASL mechanisms, the product and version (Dovecot,
Qpopper, Microsoft Exchange 5.0 .. 2019, the Windows POP3 service, CMailServer, lavad, Gmail, the
1&1 platform ...). Every product claim comes from a named rule (``finding.rule``); greetings no
rule knows are kept as evidence and name nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from probes._mail import IMPLEMENTATION, os_hint, parse_capability_list, starttls_and_ask_again
from probes._microsoft import exchange_release
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
from scanner.textproto import BannerRule, decode_text, frame_dot_block, frame_line, match_banner, rule_name

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
    return parse_capability_list(msg, "+OK")


# Banner rules: each names a product only from the product's own words in the greeting (never a
# host name), with a stable id (finding.rule = "portproof:pop3/<id>"). Every row has a real greeting
# in tests/probes/test_mail_rules.py; Microsoft facts in docs/microsoft-mail.md.
_BANNERS: list[BannerRule] = [
    # Exchange 5.0 / 5.5: "Microsoft Exchange POP3 server version 5.5.2653.23 ready"
    BannerRule("exchange-5.x-greeting",
               re.compile(r"\bMicrosoft Exchange POP3 server version (\d+\.\d+\.\d+[\d.]*) ready"),
               "Microsoft Exchange Server", 1),
    # Exchange 2000 / 2003: "Microsoft Exchange 2000 POP3 server version 6.0.6249.0 (host) ready.",
    # "Microsoft Exchange Server 2003 POP3 server version 6.5.7638.1 (host) ready."
    BannerRule("exchange-2000-2003-greeting",
               re.compile(r"\bMicrosoft Exchange (?:Server )?(2000|2003) POP3 server version (\d+\.\d+\.\d+[\d.]*)"),
               "Microsoft Exchange Server", 2),
    # Exchange 2007: "Microsoft Exchange Server 2007 POP3 service ready"
    BannerRule("exchange-2007-greeting", re.compile(r"\bMicrosoft Exchange Server (2007) POP3 service ready"),
               "Microsoft Exchange Server", 1),
    # Exchange 2010 and later: the default of Set-PopSettings -Banner ("The Microsoft Exchange POP3
    # service is ready."; admins prefix their own words: "The *WGS* Microsoft Exchange POP3 ...")
    BannerRule("exchange-2010-plus-greeting", re.compile(r"\bMicrosoft Exchange POP3 service is ready"),
               "Microsoft Exchange Server"),
    # the POP3 service of Windows Server 2003 (not Exchange)
    BannerRule("windows-pop3-service", re.compile(r"\bMicrosoft Windows POP3 Service Version (\d+\.\d+[\d.]*)"),
               "Microsoft Windows POP3 Service", 1),
    BannerRule("dovecot", re.compile(r"\bDovecot(?: \([^()]{1,40}\))? ready\b"), "Dovecot"),
    BannerRule("cyrus", re.compile(r"\bCyrus POP3(?: Murder)? v?(\d+\.\d+[\d.]*)[\w.\-+~]* server ready"),
               "Cyrus POP3", 1),
    BannerRule("mailenable", re.compile(r"^Welcome to MailEnable POP3 Server\b"), "MailEnable"),
    # JPOP: "JPOP server ready (jpop39) <stamp>", or behind a front end's words: "Maildrop ready, (JPOP
    # server ready)." (Verizon)
    BannerRule("jpop", re.compile(r"(?:^|\()JPOP server ready\b"), "JPOP"),
    # perdition's POP3 greeting carries a typo of its own name: "POP3 perditon ready on <address> <id>"
    BannerRule("perdition", re.compile(r"^POP3 perditi?on ready on \S+ [0-9a-f]+$"), "perdition"),
    # Qpopper: "Qpopper (version 4.0.5) at host starting." (older releases: "QPOP (version 2.53)")
    BannerRule("qpopper", re.compile(r"\b(?:Qpopper|QPOP) \(version (\d+\.\d+[\w.]*)\)"), "Qpopper", 1),
    BannerRule("cmailserver", re.compile(r"\bCMailServer (\d+\.\d+[\w.]*)"), "CMailServer", 1),
    BannerRule("1and1-platform", re.compile(r"\bPOP server ready H mi\w+"), "1&1 / United Internet mail platform"),
    # Lavabit's daemon greets with its bare name ("+OK lavad") and names its version in CAPA
    BannerRule("lavad", re.compile(r"^lavad(?=$| )"), "lavad"),
    BannerRule("gmail-gpop", re.compile(r"^Gpop ready for requests from "), "Google Gmail POP3"),
    BannerRule("e-novation", re.compile(r"^E\.Novation POP3 server ready\b"), "E.Novation mail server"),
    # Lotus Notes / Domino's POP3 task: "Lotus Notes POP3 server version X2.0 ready <stamp>"; "X2.0" is the
    # task's own mark, not a Domino release (and does not look like a version), so no version is claimed
    BannerRule("lotus-notes", re.compile(r"^Lotus Notes POP3 server version \S+ ready\b"), "IBM Domino"),
    BannerRule("popgun", re.compile(r"^POPgun POP3 server ready\b"), "POPgun"),
    # Stalwart's SERVER_GREETING constant: "Stalwart POP3 at your service."
    BannerRule("stalwart", re.compile(r"^Stalwart POP3 at your service\b"), "Stalwart Mail Server"),
    # GreenMail (Java test mail server): "POP3 GreenMail Server v1.6.12 ready"
    BannerRule("greenmail", re.compile(r"\bGreenMail Server v(\d+\.\d+[\w.]*) ready\b"), "GreenMail", 1),
    BannerRule("inbucket", re.compile(r"^Inbucket POP3 server ready\b"), "Inbucket"),
    # the sample POP3 service of the Windows NT 4.0 Resource Kit Mail Server (MailSrv), Microsoft KB Q165738
    BannerRule("nt-mailsrv-example", re.compile(r"^Welcome to NT Example POP3 server\.?$"),
               "Windows NT Resource Kit MailSrv"),
]

#: IMPLEMENTATION names that name no product
_GENERIC_NAMES = frozenset({"pop", "pop3", "pop3d", "server", "mail", "mail server", "pop3 server", "generic"})


def identify(greeting: str, caps: dict[str, str]) -> Finding:
    """Name the product from the greeting and the CAPA list.

    Every product/version claim comes from a rule and sets ``finding.rule``; a greeting no rule
    knows keeps its text as evidence and names nothing.
    """
    f = Finding(service="pop3", confidence=8)
    f.add("greeting", "+OK " + greeting)
    m = match_banner(_BANNERS, greeting, f, "pop3")
    if f.product == "Microsoft Exchange Server":
        if m is not None and m.re.groups >= 1 and f.rule in (
            rule_name("pop3", "exchange-2000-2003-greeting"), rule_name("pop3", "exchange-2007-greeting")
        ):
            f.details["exchange_release"] = m.group(1)
        elif f.version and exchange_release(f.version):
            f.details["exchange_release"] = exchange_release(f.version)
        elif f.rule == rule_name("pop3", "exchange-2010-plus-greeting"):
            f.details["exchange_release"] = "2010 or later"
    impl = caps.get("IMPLEMENTATION")
    if impl:
        f.add("CAPA IMPLEMENTATION", impl)
        f.details["implementation"] = impl
        im = IMPLEMENTATION.fullmatch(impl.strip())
        if im and im.group(1).lower() not in _GENERIC_NAMES:
            name, version = im.group(1), im.group(2)
            if f.product is None:
                f.product, f.version, f.confidence = name, version, 10
                f.rule = rule_name("pop3", "rfc2449-implementation")
            elif f.version is None and f.product.lower().startswith(name.lower()):
                f.version = version  # the same product names its version in CAPA
    m2 = re.search(r"<[^<>@\s]+@[^<>\s]+>", greeting)
    if m2:
        f.details["apop_timestamp"] = m2.group(0)
    hint = os_hint(greeting)
    if hint:
        f.extrainfo = hint
    return f


def _refusal(msg: bytes) -> str | None:
    """None when STLS got ``+OK``, else the ``-ERR`` text."""
    ok, text = parse_status(msg)
    return None if ok else text


#: commands a POP3 client opens with, and the ones it may send (RFC 1939, 2449, 2595, 5034)
_PASSIVE_FIRST = frozenset({"USER", "CAPA", "STLS", "AUTH", "APOP"})
_PASSIVE_VERBS = _PASSIVE_FIRST | frozenset(
    {"PASS", "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "QUIT", "TOP", "UIDL"}
)


class POP3Probe(Probe):
    """POP3: greeting, CAPA, STLS and CAPA again; implicit TLS on 995."""

    name = "pop3"
    #: ALPN id (RFC 7301 registry) of POP3 inside implicit TLS
    alpn = ("pop3",)
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

    # ---------------------------------------------------------------- passive hooks (replay)
    def identify_passive(self, server_messages: Sequence[bytes], client_messages: Sequence[bytes]) -> Finding | None:
        """The greeting and an ``AUTH NTLM`` CHALLENGE (``+ <base64>``); with only the client
        captured, its commands (USER, CAPA, STLS, AUTH, APOP first)."""
        return passive_text_finding(
            "pop3",
            server_messages,
            client_messages,
            greets=self.match,
            first_verbs=_PASSIVE_FIRST,
            verbs=_PASSIVE_VERBS,
            ntlm_source="AUTH NTLM challenge (+)",
        )

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
            upgrade = yield from starttls_and_ask_again(
                finding, b"STLS\r\n", frame_line, _refusal, b"CAPA\r\n", frame_dot_block
            )
            if upgrade.failed:
                return finding
            if upgrade.reply is not None:
                after = parse_capa(upgrade.reply)
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

