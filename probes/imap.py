"""IMAP probe.

Default ports: 143 (plain, STARTTLS), 993 (implicit TLS).

Sends: ``a1 CAPABILITY``, ``a2 ID NIL`` when the server offers ID (RFC 2971; the server may
answer with its name and version), ``a3 STARTTLS`` when offered on a plain connection and then
``a4 CAPABILITY`` inside TLS, finally ``a5 LOGOUT``. Never logs in.

Collects: the greeting and its response code, the capability list before and after TLS, the
AUTH mechanisms, the ID fields, the product and version (Dovecot, Cyrus, Courier, Domino,
Microsoft Exchange 5.5 .. 2019 including the Exchange 2013+ greeting whose bracketed token is
base64 of the UTF-16LE server name, Gmail ...). Every product claim comes from a named rule
(``finding.rule``); greetings no rule knows are kept as evidence and name nothing.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

from probes._mail import os_hint, starttls_and_ask_again
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
    Step,
)
from scanner.ntlm import negotiate_b64, record_challenge_b64
from scanner.textproto import (
    BannerRule,
    decode_text,
    frame_imap_tagged,
    frame_line,
    looks_like_version,
    match_banner,
    rule_name,
    split_lines,
)

__all__ = ["IMAPProbe", "IMAPResponse", "decode_exchange_token", "identify", "parse_greeting", "parse_response"]


@dataclass
class IMAPResponse:
    """A tagged IMAP response: untagged lines, the tagged status and text."""

    untagged: list[str] = field(default_factory=list)
    status: str = ""
    text: str = ""


def parse_greeting(msg: bytes) -> tuple[str, str]:
    """Parse the greeting line into its status (OK, PREAUTH, BYE) and the rest."""
    line = decode_text(msg).rstrip("\r\n")
    m = re.match(r"\* (OK|PREAUTH|BYE)\b ?(.*)$", line, re.I)
    if not m:
        raise NotThisProtocol("not an IMAP greeting")
    return m.group(1).upper(), m.group(2)


def parse_response(msg: bytes, tag: str) -> IMAPResponse:
    """Parse a framed response ending with the tagged line of ``tag``."""
    resp = IMAPResponse()
    for line in split_lines(msg):
        if line.startswith(tag + " "):
            status, _, text = line[len(tag) + 1 :].partition(" ")
            resp.status, resp.text = status.upper(), text
        elif line.startswith("* "):
            resp.untagged.append(line[2:])
    if resp.status not in ("OK", "NO", "BAD"):
        raise NotThisProtocol("tagged line without OK/NO/BAD")
    return resp


def capabilities_from(text: str) -> list[str]:
    """Capabilities from ``CAPABILITY a b c`` text (untagged line or a [CAPABILITY ...] code)."""
    m = re.search(r"CAPABILITY ([^\]]*)", text, re.I)
    return m.group(1).split()[:300] if m else []


def parse_id(untagged: list[str]) -> dict[str, str]:
    """Parse an ``ID ("name" "Dovecot" ...)`` response into a dict (NIL gives {})."""
    for line in untagged:
        if line.upper().startswith("ID "):
            pairs = re.findall(r'"((?:[^"\\]|\\.)*)"|(NIL)', line[3:])
            vals = [a if a else None for a, _ in pairs]
            return {str(vals[i]).lower(): str(vals[i + 1]) for i in range(0, len(vals) - 1, 2)
                    if vals[i] is not None and vals[i + 1] is not None}
    return {}


def decode_exchange_token(text: str) -> str | None:
    """Exchange 2013+ greets with ``[base64]``: UTF-16LE of the server's name; decode it."""
    for tok in re.findall(r"\[([A-Za-z0-9+/=]{8,})\]", text):
        try:
            raw = base64.b64decode(tok, validate=True)
            name = raw.decode("utf-16-le")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
        if name and all(ch.isprintable() for ch in name) and re.fullmatch(r"[\w.\-]+", name):
            return name
    return None


# Banner rules: each names a product only from the product's own words in the greeting (never a
# host name), with a stable id (finding.rule = "portproof:imap/<id>"). Every row has a real greeting
# in tests/probes/test_mail_rules.py; Microsoft facts in docs/microsoft-mail.md.
_BANNERS: list[BannerRule] = [
    # Exchange 5.5 (5.0 had no IMAP): "Microsoft Exchange IMAP4rev1 server version 5.5.2650.23 (host) ready"
    BannerRule("exchange-5.5-greeting",
               re.compile(r"\bMicrosoft Exchange IMAP4rev1 server version (\d+\.\d+\.\d+[\d.]*)"),
               "Microsoft Exchange Server", 1),
    # Exchange 2000 / 2003: "Microsoft Exchange 2000 IMAP4rev1 server version 6.0.6249.0 (host) ready.",
    # "Microsoft Exchange Server 2003 IMAP4rev1 server version 6.5.7638.1 (host) ready."
    BannerRule("exchange-2000-2003-greeting",
               re.compile(r"\bMicrosoft Exchange (?:Server )?(2000|2003) IMAP4rev1 server version "
                          r"\(?(\d+\.\d+\.\d+[\d.]*)"),
               "Microsoft Exchange Server", 2),
    # Exchange 2003, German: "Der Microsoft Exchange Server 2003 IMAP4rev1-Server, Version 6.5.7638.1
    # (host), steht zur Verfügung."
    BannerRule("exchange-2003-greeting-de",
               re.compile(r"\bMicrosoft Exchange Server (2003) IMAP4rev1-Server, Version (\d+\.\d+\.\d+[\d.]*)"),
               "Microsoft Exchange Server", 2),
    # Exchange 2007: "Microsoft Exchange Server 2007 IMAP4 service ready" (also "... service is ready")
    BannerRule("exchange-2007-greeting",
               re.compile(r"\bMicrosoft Exchange Server (2007) IMAP4 service (?:is )?ready"),
               "Microsoft Exchange Server", 1),
    # Exchange 2010 and later: the default of Set-ImapSettings -Banner ("The Microsoft Exchange IMAP4
    # service is ready."; admins prefix their own words, so "The" is not required)
    BannerRule("exchange-2010-plus-greeting", re.compile(r"\bMicrosoft Exchange IMAP4 service is ready"),
               "Microsoft Exchange Server"),
    BannerRule("dovecot", re.compile(r"\bDovecot(?: \([^()]{1,40}\))? ready\b"), "Dovecot"),
    BannerRule("cyrus", re.compile(r"\bCyrus IMAP4?(?: Murder)? v?(\d+\.\d+[\d.]*)[\w.\-+~]* server ready"),
               "Cyrus IMAP", 1),
    BannerRule("courier-imap", re.compile(r"\bCourier-IMAP ready\b"), "Courier-IMAP"),
    BannerRule("gmail-gimap", re.compile(r"^Gimap ready for requests from "), "Google Gmail IMAP"),
    BannerRule("1and1-platform", re.compile(r"\bIMAP server ready H mi\w+"), "1&1 / United Internet mail platform"),
    BannerRule("domino", re.compile(r"\bDomino IMAP4 Server Release (\d+[\w.]*) ready"), "IBM Domino", 1),
    BannerRule("smartermail", re.compile(r"^IMAP4rev1 SmarterMail$"), "SmarterMail"),
    BannerRule("zoho-mail", re.compile(r"\(Zoho Mail IMAP4rev1 Server version (\d+\.\d+[\w.]*)\)"), "Zoho Mail", 1),
    BannerRule("yandex-mail", re.compile(r"^Yandex IMAP4rev1 at "), "Yandex Mail"),
    BannerRule("seznam", re.compile(r"^Seznam IMAP server ready"), "Seznam Email"),
    BannerRule("synametrics-xeams", re.compile(r"^Synametrics IMAP4rev1 server ready"), "Synametrics Xeams"),
    # perdition (IMAP/POP3 proxy): "perdition ready on <address> <id>"
    BannerRule("perdition", re.compile(r"\bperdition ready on \S+ [0-9a-f]+$"), "perdition"),
    # Stalwart: "Stalwart IMAP4rev2 at your service." (after the CAPABILITY response code)
    BannerRule("stalwart", re.compile(r"\bStalwart IMAP4(?:rev[12])? at your service\b"), "Stalwart Mail Server"),
    # twisted.mail.imap4.IMAP4Server.IDENT, sent after the CAPABILITY response code
    BannerRule("twisted", re.compile(r"\bTwisted IMAP4rev1 Ready$"), "Twisted IMAP"),
    # Hoodiecrow (scriptable IMAP test server, npm): "Hoodiecrow ready for rumble"
    BannerRule("hoodiecrow", re.compile(r"^Hoodiecrow ready for rumble\b"), "Hoodiecrow"),
    BannerRule("communigate-pro", re.compile(r"\bCommuniGate Pro IMAP Server (\d+\.\d+[\w.]*)"), "CommuniGate Pro", 1),
    # NetEase's Coremail (imap.163.com): "Coremail System IMap Server Ready(163com[<id>])"
    BannerRule("coremail", re.compile(r"\bCoremail System IMap Server Ready\b"), "Coremail"),
    # Tencent QQ Mail / Exmail: "QQMail XMIMAP4Server ready", "QQMail IMAP4Server ready"
    BannerRule("qq-mail", re.compile(r"\bQQMail (?:XM)?IMAP4Server ready\b"), "Tencent QQ Mail"),
]

#: the ID response's "name" field (RFC 2971) is the server naming itself
_ID_RULE = "rfc2971-id-name"


#: Exchange rules whose first group is the release year the greeting names
_YEAR_RULES = ("exchange-2000-2003-greeting", "exchange-2003-greeting-de", "exchange-2007-greeting")


def _exchange_facts(f: Finding, m: re.Match[str] | None, greeting: str) -> None:
    """Exchange release from the greeting's year or its build; the 2013+ greeting token."""
    if m is not None and f.rule in tuple(rule_name("imap", r) for r in _YEAR_RULES):
        f.details["exchange_release"] = m.group(1)
    elif f.version and exchange_release(f.version):
        f.details["exchange_release"] = exchange_release(f.version)
    name = decode_exchange_token(greeting)
    if name:
        f.details["server_name"] = name
        f.add("greeting token", f"base64 UTF-16LE server name: {name}")
        f.details.setdefault("exchange_release", "2013 or later")
        f.rule = rule_name("imap", "exchange-2013-plus-greeting-token")
    elif f.rule == rule_name("imap", "exchange-2010-plus-greeting"):
        f.details.setdefault("exchange_release", "2010 or later")


def identify(greeting: str, caps: list[str], ident: dict[str, str]) -> Finding:
    """Name the product from the greeting, the capabilities and the ID fields.

    Every product/version claim comes from a rule and sets ``finding.rule``; a greeting no rule
    knows keeps its text as evidence and names nothing.
    """
    f = Finding(service="imap", confidence=8)
    f.add("greeting", greeting)
    m = match_banner(_BANNERS, greeting, f, "imap")
    if f.product == "Microsoft Exchange Server":
        _exchange_facts(f, m, greeting)
    if ident:
        f.details["id"] = ident
        name = ident.get("name")
        if name and f.product is None:
            f.product = name
            f.confidence = 10
            f.rule = rule_name("imap", _ID_RULE)
            if looks_like_version(ident.get("version")):
                f.version = ident["version"]
        elif name and f.product and name.lower() in f.product.lower() and f.version is None \
                and looks_like_version(ident.get("version")):
            f.version = ident["version"]
        f.add("ID", " ".join(f"{k}={v}" for k, v in ident.items()))
    if f.product is None:
        m2 = re.search(r"Server Version (\d[\w.]*)", greeting, re.I)
        if m2:  # a version with no product name: keep it, name nothing
            f.details["banner_version"] = m2.group(1)
    hint = os_hint(greeting)
    if hint:
        f.extrainfo = hint
    return f


def _refusal(msg: bytes) -> str | None:
    """None when STARTTLS got a tagged OK, else the tagged status and text."""
    go = parse_response(msg, "a3")
    return None if go.status == "OK" else f"{go.status} {go.text}"


#: commands an IMAP client opens with, and the ones it may send (RFC 9051 6)
_PASSIVE_FIRST = frozenset({"CAPABILITY", "LOGIN", "AUTHENTICATE", "STARTTLS", "ID", "NOOP"})
_PASSIVE_VERBS = _PASSIVE_FIRST | frozenset(
    {
        "SELECT", "EXAMINE", "LIST", "LSUB", "STATUS", "FETCH", "UID", "LOGOUT", "IDLE", "APPEND", "SEARCH",
        "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE", "NAMESPACE", "ENABLE", "CLOSE", "EXPUNGE",
        "CHECK", "GETQUOTAROOT", "STORE", "COPY", "MOVE",
    }
)


class IMAPProbe(Probe):
    """IMAP: greeting, CAPABILITY, ID, STARTTLS; implicit TLS on 993."""

    name = "imap"
    #: ALPN id (RFC 7301 registry) of IMAP inside implicit TLS
    alpn = ("imap",)
    services = ("imap",)
    transports = ("tcp",)
    ports = (143, 993)
    tls_ports = (993,)
    server_first = True
    rarity = 1
    summary = "IMAP greeting, CAPABILITY, ID, STARTTLS; Dovecot, Cyrus, Courier, Exchange"

    def match(self, greeting: bytes) -> bool:
        """IMAP greets with ``* OK``, ``* PREAUTH`` or ``* BYE``."""
        return bool(re.match(rb"\* (OK|PREAUTH|BYE)\b", greeting, re.I))

    # ---------------------------------------------------------------- passive hooks (replay)
    def identify_passive(self, server_messages: Sequence[bytes], client_messages: Sequence[bytes]) -> Finding | None:
        """The greeting and an ``AUTHENTICATE NTLM`` CHALLENGE (``+ <base64>``); with only the
        client captured, its tagged commands (CAPABILITY, LOGIN, AUTHENTICATE ... first)."""
        return passive_text_finding(
            "imap",
            server_messages,
            client_messages,
            greets=self.match,
            first_verbs=_PASSIVE_FIRST,
            verbs=_PASSIVE_VERBS,
            ntlm_source="AUTHENTICATE NTLM challenge (+)",
            tagged=True,
        )

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        """Greeting, CAPABILITY, ID, STARTTLS + CAPABILITY, LOGOUT."""
        status, text = parse_greeting((yield Recv(frame_line)))
        caps = capabilities_from(text)
        finding = ctx.found(identify(text, caps, {}))
        finding.details["greeting_status"] = status
        if status == "BYE":
            finding.details["refused"] = text
            finding.confidence = min(finding.confidence, 7)
            return finding
        # "+OK" / "* OK" greetings are this protocol's own: enough to keep in a replay
        return (yield from keep_greeting_in_replay(ctx, finding, self._after_greeting(ctx, text, caps, finding), True))

    def _after_greeting(self, ctx: ProbeContext, text: str, caps: list[str], finding: Finding) -> Dialogue:
        """CAPABILITY, ID, STARTTLS + CAPABILITY, NTLM information, LOGOUT."""
        yield Send(b"a1 CAPABILITY\r\n")
        resp = parse_response((yield Recv(frame_imap_tagged(b"a1"))), "a1")
        for line in resp.untagged:
            caps = capabilities_from(line) or caps
        if resp.status == "OK" and not caps:
            caps = capabilities_from(resp.text)
        finding.details["capabilities"] = caps
        if caps:
            finding.add("CAPABILITY", " ".join(caps))
        ident: dict[str, str] = {}
        if "ID" in (c.upper() for c in caps):
            yield Send(b"a2 ID NIL\r\n")
            idr = parse_response((yield Recv(frame_imap_tagged(b"a2"))), "a2")
            ident = parse_id(idr.untagged)
        finding = ctx.found(identify(text, caps, ident).inherit(finding))
        finding.details["auth"] = [c[5:] for c in caps if c.upper().startswith("AUTH=")]
        finding.details["starttls"] = "STARTTLS" in (c.upper() for c in caps)
        finding.details["login_disabled"] = "LOGINDISABLED" in (c.upper() for c in caps)
        if finding.details["starttls"] and ctx.tls is None:
            upgrade = yield from starttls_and_ask_again(
                finding, b"a3 STARTTLS\r\n", frame_imap_tagged(b"a3"), _refusal,
                b"a4 CAPABILITY\r\n", frame_imap_tagged(b"a4"),
            )
            if upgrade.failed:
                return finding
            if upgrade.reply is not None:
                after = parse_response(upgrade.reply, "a4")
                tls_caps: list[str] = []
                for line in after.untagged:
                    tls_caps = capabilities_from(line) or tls_caps
                finding.details["capabilities_tls"] = tls_caps
                finding.details["auth_tls"] = [c[5:] for c in tls_caps if c.upper().startswith("AUTH=")]
        auth = finding.details.get("auth_tls") or finding.details.get("auth") or []
        if "NTLM" in (a.upper() for a in auth):
            yield from _ntlm_info(finding)
        yield Send(b"a5 LOGOUT\r\n")
        return finding


def _continuation_or_tagged(tag: bytes) -> Generator[Step, Any, bytes]:
    """Read lines up to a ``+`` continuation or the tagged line; return that line (bounded)."""
    for _ in range(50):
        line = yield Recv(frame_line)
        if line.startswith(b"+") or line.startswith(tag + b" "):
            return bytes(line)
    raise NotThisProtocol("no continuation or tagged line within 50 lines")


def _ntlm_info(finding: Finding) -> Dialogue:
    """AUTHENTICATE NTLM: send a NEGOTIATE, read the CHALLENGE, then cancel with ``*``."""
    yield Send(b"a6 AUTHENTICATE NTLM\r\n")
    line = yield from _continuation_or_tagged(b"a6")
    if not line.startswith(b"+"):
        finding.details["ntlm_error"] = decode_text(line)[:200]
        return finding
    yield Send(negotiate_b64().encode() + b"\r\n")
    line = yield from _continuation_or_tagged(b"a6")
    if line.startswith(b"+ "):
        record_challenge_b64(finding, "AUTHENTICATE NTLM challenge", line[2:].strip())
        yield Send(b"*\r\n")  # cancel: no credentials are ever sent
        yield Recv(frame_imap_tagged(b"a6"))
    else:
        finding.details["ntlm_error"] = decode_text(line)[:200]
    return finding

