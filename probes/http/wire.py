"""HTTP/1.1 messages: requests, the response framer (h11, resumable), the response parser, and the
auth, NTLM and Exchange facts one response carries. Part of the :mod:`probes.http` package."""

from __future__ import annotations

import base64
import binascii
import html
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from scanner.api import (
    FrameCursor,
    NotThisProtocol,
    ProbeContext,
    ResumableFramer,
)
from scanner.ntlm import NTLMChallenge, NTLMError, find_ntlmssp, parse_challenge

__all__ = [
    "BODY_CAP",
    "EXCHANGE_FIRST_PATHS",
    "EXCHANGE_PATHS",
    "HEADER_CAP",
    "HTTPResponse",
    "build_request",
    "exchange_facts",
    "exchange_hint",
    "frame_http_response",
    "host_header",
    "ntlm_from_headers",
    "parse_auth_schemes",
    "parse_http_response",
]


# ---------------------------------------------------------------- messages

#: most bytes of status line + headers accepted
HEADER_CAP = 32 * 1024
#: most body bytes read from one response
BODY_CAP = 64 * 1024
#: most header lines in one response
MAX_HEADERS = 200
#: most interim (1xx) responses skipped before the final one
MAX_INTERIM = 5

#: read-only paths that reveal Exchange (OWA, EWS, Autodiscover, ActiveSync, RPC over HTTP)
EXCHANGE_PATHS: tuple[str, ...] = (
    "/owa/",
    "/owa/auth/logon.aspx",
    "/ews/exchange.asmx",
    "/autodiscover/autodiscover.xml",
    "/Microsoft-Server-ActiveSync",
    "/rpc/",
)
#: the paths asked of every web server: OWA's entry point (Exchange 2007 and later; a proxy
#: in front may hide IIS at ``/`` but still pass ``/owa/``). The other :data:`EXCHANGE_PATHS`
#: are asked only once a reply hints at Exchange (:func:`exchange_hint`). Exchange 2000/2003
#: (OWA under ``/exchange/``) only ran on IIS 5.0/6.0, whose ``Server`` header is such a hint.
EXCHANGE_FIRST_PATHS: tuple[str, ...] = ("/owa/",)
#: ``Location`` path prefixes of Exchange's web front ends (OWA 2007+, OWA 2000/2003)
_EXCHANGE_LOCATIONS = re.compile(r"(?i)^(?:[a-z][a-z0-9+.\-]*://[^/?#]*)?/(?:owa|exchange|exchweb)(?:[/?#]|$)")

USER_AGENT = "portproof"
#: headers other than Server that name the platform
_TELL_HEADERS = ("x-powered-by", "x-aspnet-version", "x-aspnetmvc-version", "microsoftsharepointteamservices")

_STATUS_LINE = re.compile(rb"HTTP/(\d)\.(\d) (\d{3})(?: ([^\r\n]*))?\r?\n")
_HTTP_PREFIX = b"HTTP/"
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@dataclass(slots=True)
class HTTPResponse:
    """One parsed HTTP response (status, headers in order, and the body if it was read)."""

    version: str
    status: int
    reason: str
    #: (name, value) pairs in the order received; names keep their case
    headers: list[tuple[str, str]]
    body: bytes = b""
    #: True when the whole body was read (False: larger than BODY_CAP, or delimited by close)
    body_read: bool = True
    #: the stream can carry another response after this one (framed, not ``Connection: close``)
    reusable: bool = True

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive), in order."""
        lname = name.lower()
        return [value for key, value in self.headers if key.lower() == lname]

    @property
    def title(self) -> str | None:
        """The HTML ``<title>`` of the body, whitespace-collapsed and unescaped (max 256 chars)."""
        return _title_of(self.body)


_TITLE = re.compile(rb"<title[^>]{0,200}>(.{0,2048}?)</title", re.I | re.S)


@lru_cache(maxsize=32)
def _title_of(body: bytes) -> str | None:
    """The title of ``body`` (cached: the dialogue asks for one response's title several times)."""
    match = _TITLE.search(body)
    if not match:
        return None
    text = match.group(1).decode("utf-8", "replace")
    return " ".join(html.unescape(text).split())[:256] or None


def host_header(ctx: ProbeContext) -> str:
    """The ``Host`` header value: the user's name for the target, else the address; the port is
    added when it is not the scheme's default."""
    host = ctx.hostname or ctx.address
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    tls = ctx.tls is not None or ctx.implicit_tls
    if ctx.port and ctx.port != (443 if tls else 80):
        host = f"{host}:{ctx.port}"
    return host


def build_request(path: str, host: str, authorization: str | None = None) -> bytes:
    """Build a ``GET`` request for ``path`` on a keep-alive connection."""
    if not path.startswith("/") or "\r" in path or "\n" in path or " " in path:
        raise ValueError(f"bad request path {path!r}")
    if "\r" in host or "\n" in host:
        raise ValueError("bad Host header")
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        f"User-Agent: {USER_AGENT}",
        "Accept: */*",
        "Connection: keep-alive",
    ]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _header_end(buf: bytes) -> int | None:
    """Offset just past the blank line that ends the header block, None if not yet seen."""
    limit = min(len(buf), HEADER_CAP + 4)
    crlf = buf.find(b"\r\n\r\n", 0, limit)
    lf = buf.find(b"\n\n", 0, limit)
    ends = [e + 4 for e in (crlf,) if e >= 0] + [e + 2 for e in (lf,) if e >= 0]
    if ends:
        return min(ends)
    if len(buf) > HEADER_CAP:
        raise NotThisProtocol(f"HTTP header block longer than {HEADER_CAP} bytes")
    return None


def _parse_head(head: bytes) -> tuple[str, int, str, list[tuple[str, str]]]:
    """Parse the status line and header fields of a complete header block.

    The framer and then the parser both need the same head (and the framer again each time more
    body bytes arrive), so the last few parses are kept; callers get their own list.
    """
    version, code, reason, headers = _parse_head_cached(head)
    return version, code, reason, list(headers)


@lru_cache(maxsize=16)
def _parse_head_cached(head: bytes) -> tuple[str, int, str, tuple[tuple[str, str], ...]]:
    version, code, reason, headers = _parse_head_uncached(head)
    return version, code, reason, tuple(headers)


def _parse_head_uncached(head: bytes) -> tuple[str, int, str, list[tuple[str, str]]]:
    status = _STATUS_LINE.match(head)
    if not status:
        raise NotThisProtocol("not an HTTP status line")
    version = f"{int(status.group(1))}.{int(status.group(2))}"
    code = int(status.group(3))
    reason = (status.group(4) or b"").decode("latin-1").strip()
    headers: list[tuple[str, str]] = []
    lines = head[status.end() :].replace(b"\r\n", b"\n").split(b"\n")
    for line in lines:
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and headers:  # obsolete line folding
            prev_name, prev_value = headers[-1]
            headers[-1] = (prev_name, prev_value + " " + line.strip().decode("latin-1"))
            continue
        raw_name, sep, raw_value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(raw_name):
            raise NotThisProtocol(f"malformed HTTP header line {line[:40]!r}")
        headers.append((raw_name.decode("ascii"), raw_value.strip().decode("latin-1")))
        if len(headers) > MAX_HEADERS:
            raise NotThisProtocol(f"more than {MAX_HEADERS} HTTP headers")
    return version, code, reason, headers


def _get(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in headers if k.lower() == name]


def _content_length(headers: list[tuple[str, str]]) -> int | None:
    values = _get(headers, "content-length")
    if not values:
        return None
    lengths = {v.strip() for value in values for v in value.split(",")}
    if len(lengths) != 1:
        raise NotThisProtocol("conflicting Content-Length headers")
    text = lengths.pop()
    if not text.isdigit() or len(text) > 18:
        raise NotThisProtocol(f"bad Content-Length {text[:20]!r}")
    return int(text)


def _is_chunked(headers: list[tuple[str, str]]) -> bool:
    codings = [c.strip().lower() for value in _get(headers, "transfer-encoding") for c in value.split(",")]
    return bool(codings) and codings[-1] == "chunked"


def _body_framing(code: int, headers: list[tuple[str, str]]) -> str:
    """How the body is delimited: ``none``, ``chunked``, ``length`` or ``close``."""
    if 100 <= code < 200 or code in (204, 304):
        return "none"
    if _is_chunked(headers):
        return "chunked"
    if _content_length(headers) is not None:
        return "length"
    return "close"


def _h11_client() -> Any:
    """An h11 client connection that has sent ``GET /``: ready to read the response.

    h11 frames a response by the request it answers; every request of this probe is a ``GET``, so
    a stand-in ``GET /`` gives the very framing (HEAD or CONNECT would differ). Imported here, not
    at module level, so that ``import probes.http`` stays cheap.
    """
    import h11

    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=HEADER_CAP)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "portproof.invalid")]))
    conn.send(h11.EndOfMessage())
    return conn


#: a header block h11 surely accepts (a strict subset of h11's own grammar, h11/_abnf.py): an
#: HTTP/1.x status line with a 2xx-5xx code, then ``token: value`` fields (visible characters and
#: inner blanks, no obsolete line folding), CRLF line ends only
_PLAIN_HEAD = re.compile(
    rb"HTTP/1\.[01] [2-5][0-9]{2}(?: [\t\x20-\x7e\x80-\xff]*)?\r\n"
    rb"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[ \t]*(?:[\x21-\x7e\x80-\xff]+(?:[ \t]+[\x21-\x7e\x80-\xff]+)*)?[ \t]*\r\n)*"
    rb"\r\n"
)
_CONTENT_LENGTH_LINE = re.compile(rb"(?im)^content-length:[ \t]*([0-9]{1,18})[ \t]*\r$")
_TE_OR_CL = re.compile(rb"(?im)^(?:transfer-encoding|content-length):")


def _plain_frame(buf: bytes | bytearray) -> int | None:
    """The framed length of the common reply without h11: a whole plain head (:data:`_PLAIN_HEAD`)
    with one ``Content-Length`` of at most :data:`BODY_CAP` bytes, no ``Transfer-Encoding``, and
    the whole body in ``buf``. None for anything else (h11 then frames it from the start), so
    every length this returns is the one h11 gives (tests/probes/test_http_body_fastpath.py)."""
    end = buf.find(b"\r\n\r\n", 0, HEADER_CAP)
    if end < 0:
        return None
    end += 4
    head = bytes(buf[:end])
    # h11 ends the block at its first blank line; ours must be that one
    if head.find(b"\n\r\n") != end - 3 or b"\n\n" in head or not _PLAIN_HEAD.fullmatch(head):
        return None
    status = int(head[9:12])
    if status in (204, 304) or head.count(b"\r\n") - 1 > MAX_HEADERS:
        return None
    if len(_TE_OR_CL.findall(head)) != 1:
        return None  # no Content-Length, several, or a Transfer-Encoding: h11 decides
    match = _CONTENT_LENGTH_LINE.search(head)
    if match is None:
        return None
    length = int(match.group(1))
    if length > BODY_CAP or len(buf) < end + length:
        return None
    return end + length


class _ResponseCursor:
    """Frames one response with h11 (its receive buffer remembers how far it searched, so a reply
    dripped one byte at a time costs linear time); ``fed`` counts the bytes given to h11.

    The common reply, whole in the first buffer seen, is framed by :func:`_plain_frame` without
    h11 (building an h11 connection per reply was most of the HTTP probe's CPU)."""

    __slots__ = ("conn", "fed", "head_end", "tried_plain")

    def __init__(self) -> None:
        self.conn: Any = None
        self.fed = 0
        self.head_end: int | None = None
        self.tried_plain = False

    def feed(self, buf: bytes | bytearray) -> int | None:
        import h11

        if self.conn is None:
            head_prefix = bytes(buf[: len(_HTTP_PREFIX)])
            if head_prefix != _HTTP_PREFIX[: len(head_prefix)]:
                raise NotThisProtocol("not an HTTP response")  # at once, not after HEADER_CAP bytes
            if len(buf) < len(_HTTP_PREFIX):
                return None
            if not self.tried_plain:
                # once only: a reply still incomplete here goes to h11 (linear time on a drip)
                self.tried_plain = True
                framed = _plain_frame(buf)
                if framed is not None:
                    return framed
            self.conn = _h11_client()
        conn = self.conn
        if len(buf) > self.fed:  # (h11 takes b"" for the peer's close)
            conn.receive_data(bytes(buf[self.fed :]))
            self.fed = len(buf)
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise NotThisProtocol(f"not a valid HTTP response: {exc}") from None
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return None
            consumed = self.fed - len(conn.trailing_data[0])
            kind = type(event)
            if (kind is h11.Response or kind is h11.InformationalResponse) and len(event.headers) > MAX_HEADERS:
                raise NotThisProtocol(f"more than {MAX_HEADERS} HTTP headers")
            if kind is h11.InformationalResponse:
                return consumed  # a 1xx response is a message by itself
            if kind is h11.Response:
                self.head_end = consumed
                headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers.raw_items()]
                if _body_framing(event.status_code, headers) == "close":
                    return consumed  # a body delimited by the close is not framed: headers only
            elif kind is h11.Data:
                if self.head_end is not None and consumed > self.head_end + BODY_CAP:
                    # cut at exactly BODY_CAP wire bytes, whatever the segments were
                    return self.head_end + BODY_CAP
            elif kind is h11.EndOfMessage:
                return consumed


class HTTPResponseFramer(ResumableFramer):
    """Frame one HTTP response with h11: the status line and headers, then the body by
    ``Content-Length`` or chunked encoding, at most :data:`BODY_CAP` body bytes on the wire.

    A body bigger than the cap is cut at exactly ``BODY_CAP`` bytes (so the framed length does not
    depend on how the bytes arrived); a body delimited by the close is not framed (headers only);
    a 1xx interim response is a message by itself. What h11 refuses is not HTTP.
    """

    def cursor(self) -> FrameCursor:
        return _ResponseCursor()


#: frame one HTTP response (see :class:`HTTPResponseFramer`)
frame_http_response = HTTPResponseFramer()


def _body_of(message: bytes) -> tuple[bytes, bool]:
    """The body of a framed response as h11 reads it (de-chunked, at most :data:`BODY_CAP` bytes),
    and whether the message holds the whole body."""
    import h11

    conn = _h11_client()
    conn.receive_data(message)
    body = bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            return bytes(body[:BODY_CAP]), False
        kind = type(event)
        if kind is h11.Data:
            if len(body) < BODY_CAP:
                body += event.data
        elif kind is h11.EndOfMessage:
            return bytes(body[:BODY_CAP]), True
        elif kind is not h11.Response and kind is not h11.InformationalResponse:
            return bytes(body[:BODY_CAP]), False  # NEED_DATA: the body was cut


def _plain_head_end(message: bytes, end: int) -> bool:
    """True when ``end`` is where h11 too sees the header block end: the block ends in CRLF CRLF
    and holds no other blank line (h11 ends it at the first LF, optional CR, LF)."""
    return (
        message[end - 4 : end] == b"\r\n\r\n"
        and message.find(b"\n\r\n", 0, end) == end - 3
        and message.find(b"\n\n", 0, end) < 0
    )


def parse_http_response(message: bytes) -> HTTPResponse:
    """Parse one response framed by :func:`frame_http_response`."""
    end = _header_end(message)
    if end is None:
        raise NotThisProtocol("incomplete HTTP header block")
    version, code, reason, headers = _parse_head(message[:end])
    framing = _body_framing(code, headers)
    connection = {t.strip().lower() for v in _get(headers, "connection") for t in v.split(",")}
    reusable = "close" not in connection and not (version == "1.0" and "keep-alive" not in connection)
    body_read = True
    if framing == "none":
        body = b""
    elif framing == "close":
        body, body_read, reusable = b"", False, False
    elif framing == "length" and _plain_head_end(message, end):
        # the common reply: the framer (h11) already checked this very head, so the body is the
        # ``Content-Length`` bytes after it; no second h11 pass (it was half the probe's parsing)
        length = _content_length(headers) or 0
        body = message[end : end + min(length, BODY_CAP)]
        body_read = len(message) - end >= length
    else:
        body, body_read = _body_of(message)
    if not body_read:
        reusable = False
    return HTTPResponse(version, code, reason, headers, body, body_read, reusable)


def parse_auth_schemes(resp: HTTPResponse) -> list[str]:
    """The authentication schemes offered in ``WWW-Authenticate`` (``Basic``, ``NTLM``, ...)."""
    schemes: list[str] = []
    for value in resp.header_all("www-authenticate"):
        # a header may list several challenges: "Negotiate, NTLM" or 'Basic realm="x", NTLM'
        for match in re.finditer(r'(?:^|,)\s*([A-Za-z][\w\-]*)(?=\s|,|$)(?!\s*=)', value):
            scheme = match.group(1)
            if scheme not in schemes:
                schemes.append(scheme)
    return schemes


def ntlm_from_headers(resp: HTTPResponse) -> NTLMChallenge | None:
    """Parse an NTLM CHALLENGE carried in ``WWW-Authenticate: NTLM <base64>`` (or ``Negotiate``).

    Returns None when no header carries a token; raises :class:`~scanner.ntlm.NTLMError` when one
    does but it is not a valid CHALLENGE.
    """
    for value in resp.header_all("www-authenticate"):
        match = re.match(r"\s*(NTLM|Negotiate)\s+([A-Za-z0-9+/=]{16,})\s*$", value, re.I)
        if not match:
            continue
        try:
            token = base64.b64decode(match.group(2), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise NTLMError("WWW-Authenticate token is not base64") from exc
        return parse_challenge(find_ntlmssp(token))
    return None


_OWA_BUILD = re.compile(rb"/owa/(?:auth/)?(\d{1,2}\.\d{1,2}\.\d{1,5}(?:\.\d{1,5})?)/", re.I)


def exchange_facts(resp: HTTPResponse) -> dict[str, str]:
    """Exchange tells in one response: ``X-OWA-Version``, ``X-FEServer``, ``X-BEServer``, the build
    path in OWA's pages, an OWA title, Exchange 2003's ``/exchweb/`` logon."""
    facts: dict[str, str] = {}
    for header, key in (("x-owa-version", "owa_version"), ("x-feserver", "fe_server"),
                        ("x-beserver", "be_server"), ("x-calculatedbetarget", "be_target"),
                        ("x-diaginfo", "diag_info")):
        value = resp.header(header)
        if value:
            facts[key] = value[:256]
    build = _OWA_BUILD.search(resp.body)
    if build:
        facts["owa_build_path"] = build.group(1).decode("ascii")
    title = resp.title or ""
    if re.match(r"(?:Microsoft )?Outlook(?: Web (?:App|Access))?(?:$|\s*[-|])", title):
        facts["owa_title"] = title
    if re.search(rb"/exchweb/bin/auth/owalogon\.asp", resp.body, re.I) or "/exchweb/" in (
        resp.header("location") or ""
    ).lower():
        facts["exchweb"] = "Exchange 2000/2003 OWA"
    return facts


def exchange_hint(resp: HTTPResponse, summary: dict[str, Any]) -> bool:
    """True when ``resp`` (summarised as ``summary`` by :func:`_summarise`) hints that Exchange may
    serve this site, so the rest of :data:`EXCHANGE_PATHS` is worth asking.

    Exchange's web front ends run on IIS (HTTP.sys), in ASP.NET, and may authenticate with
    NTLM/Negotiate; a proxy in front may hide ``Server`` but rarely all of these. Hints: an
    Exchange fact already (:func:`exchange_facts`), ``Server`` naming IIS, HTTP.sys or Exchange,
    ASP.NET in ``X-Powered-By`` or an ``X-AspNet-Version``, an NTLM/Negotiate offer, a redirect
    to ``/owa``, ``/exchange`` or ``/exchweb``."""
    if summary.get("exchange"):
        return True
    server = (resp.header("server") or "").lower()
    if "microsoft-iis" in server or "microsoft-httpapi" in server or "exchange" in server:
        return True
    if "asp.net" in (resp.header("x-powered-by") or "").lower() or resp.header("x-aspnet-version"):
        return True
    auth = summary.get("auth") or ()
    if "NTLM" in auth or "Negotiate" in auth:
        return True
    location = summary.get("location")
    return bool(location and _EXCHANGE_LOCATIONS.match(location))


def _location_off_target(location: str, host: str) -> bool:
    """True when a redirect points at another host (we never follow either kind)."""
    match = re.match(r"(?i)[a-z][a-z0-9+.\-]*://([^/?#]*)", location)
    if not match:
        return False  # relative: same host
    authority = match.group(1).rsplit("@", 1)[-1].lower()
    target = host.lower()
    strip_port = re.compile(r":\d+$")
    return strip_port.sub("", authority) != strip_port.sub("", target)


def _summarise(resp: HTTPResponse, host: str) -> dict[str, Any]:
    """The per-request facts kept in details."""
    out: dict[str, Any] = {"status": resp.status}
    location = resp.header("location")
    if location:
        out["location"] = location[:512]
        if _location_off_target(location, host):
            out["location_off_target"] = True
    schemes = parse_auth_schemes(resp)
    if schemes:
        out["auth"] = schemes
    if resp.title:
        out["title"] = resp.title
    if not resp.body_read:
        out["body_read"] = False
    facts = exchange_facts(resp)
    if facts:
        out["exchange"] = facts
    return out


