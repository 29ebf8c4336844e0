"""IMAP probe.

Default ports: 143 (plain, STARTTLS), 993 (implicit TLS).

Sends: ``a1 CAPABILITY``, ``a2 ID NIL`` when the server offers ID (RFC 2971; the server may
answer with its name and version), ``a3 STARTTLS`` when offered on a plain connection and then
``a4 CAPABILITY`` inside TLS, finally ``a5 LOGOUT``. Never logs in.

Collects: the greeting and its response code, the capability list before and after TLS, the
AUTH mechanisms, the ID fields, the product and version (Dovecot, Cyrus, Courier, UW IMAP,
Microsoft Exchange 5.5 .. 2019 including the Exchange 2013+ greeting whose bracketed token is
base64 of the UTF-16LE server name, Zimbra, Gmail ...).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

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
    Step,
    TLSFailed,
)
from scanner.ntlm import negotiate_b64, record_challenge_b64
from scanner.textproto import decode_text, frame_imap_tagged, frame_line, match_banner, split_lines

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


_BANNERS: list[tuple[re.Pattern[str], str, int | None]] = [
    (re.compile(r"Microsoft Exchange Server (\d{4}) IMAP4(?:rev1)? server version ([\d.]+)"),
     "Microsoft Exchange Server", 2),
    (re.compile(r"Microsoft Exchange IMAP4rev1 server version ([\d.]+)"), "Microsoft Exchange Server", 1),
    (re.compile(r"Microsoft Exchange Server (\d{4}) IMAP4 service ready"), "Microsoft Exchange Server", 1),
    (re.compile(r"The Microsoft Exchange IMAP4 service is ready"), "Microsoft Exchange Server", None),
    (re.compile(r"Dovecot"), "Dovecot", None),
    (re.compile(r"Cyrus IMAP(?:4)?(?: Murder)? v?([\w.\-]+)"), "Cyrus IMAP", 1),
    (re.compile(r"Courier-IMAP"), "Courier-IMAP", None),
    (re.compile(r"IMAP4rev1 (20\d\d[a-z]?\.[\d.]+) "), "UW IMAP", 1),
    (re.compile(r"Zimbra"), "Zimbra", None),
    (re.compile(r"Gimap ready"), "Google Gmail IMAP", None),
    (re.compile(r"IMAP server ready H mi\w+"), "1&1 / United Internet mail platform", None),
    (re.compile(r"hMailServer"), "hMailServer", None),
    (re.compile(r"Kerio Connect ([\d.]+)"), "Kerio Connect", 1),
    (re.compile(r"MDaemon ([\w.]+)"), "MDaemon", 1),
    (re.compile(r"(?:Lotus|IBM) Domino IMAP4 Server Release ([\w.]+)"), "IBM Domino", 1),
    (re.compile(r"CommuniGate Pro IMAP Server ([\w.]+)"), "CommuniGate Pro", 1),
]


def identify(greeting: str, caps: list[str], ident: dict[str, str]) -> Finding:
    """Name the product from the greeting, the capabilities and the ID fields."""
    f = Finding(service="imap", confidence=8)
    f.add("greeting", greeting)
    match_banner(_BANNERS, greeting, f)
    if f.product == "Microsoft Exchange Server":
        m = re.search(r"Exchange Server (\d{4})", greeting)
        if m:
            f.details["exchange_release"] = m.group(1)
        if "version" not in f.details and f.version and f.version.startswith("5.5"):
            f.details["exchange_release"] = "5.5"
        name = decode_exchange_token(greeting)
        if name:
            f.details["server_name"] = name
            f.add("greeting token", f"base64 UTF-16LE server name: {name}")
            f.details.setdefault("exchange_release", "2013 or later")
    if ident:
        f.details["id"] = ident
        name = ident.get("name")
        if name and f.product is None:
            f.product = name
            f.confidence = 10
        if ident.get("version") and f.version is None:
            f.version = ident["version"]
        f.add("ID", " ".join(f"{k}={v}" for k, v in ident.items()))
    if f.product is None:
        m = re.search(r"Server Version ([\w.]+)", greeting, re.I)
        if m:  # a version with no product name: keep it, name nothing
            f.details["banner_version"] = m.group(1)
    m = re.search(r"\((Debian|Ubuntu|Red Hat|CentOS|FreeBSD)[^)]*\)", greeting)
    if m:
        f.extrainfo = m.group(0).strip("()")
    return f


class IMAPProbe(Probe):
    """IMAP: greeting, CAPABILITY, ID, STARTTLS; implicit TLS on 993."""

    name = "imap"
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
            yield Send(b"a3 STARTTLS\r\n")
            go = parse_response((yield Recv(frame_imap_tagged(b"a3"))), "a3")
            if go.status != "OK":
                finding.details["starttls_refused"] = f"{go.status} {go.text}"
            else:
                try:
                    yield StartTLS()
                except TLSFailed as exc:
                    finding.details["starttls_error"] = str(exc)
                    return finding
                yield Send(b"a4 CAPABILITY\r\n")
                after = parse_response((yield Recv(frame_imap_tagged(b"a4"))), "a4")
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

