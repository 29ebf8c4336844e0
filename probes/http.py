"""http: HTTP/1.1 web servers, with Outlook Web Access / Exchange detection and NTLM information.

Default ports: 80, 443 (implicit TLS), 8080, 8443 (implicit TLS).

Sends, on one keep-alive connection and never following a redirect:

1. ``GET /`` (HTTP/1.1, ``Host``, ``Connection: keep-alive``);
2. read-only ``GET`` requests for the Exchange paths ``/owa/``, ``/owa/auth/logon.aspx``,
   ``/ews/exchange.asmx``, ``/autodiscover/autodiscover.xml``, ``/Microsoft-Server-ActiveSync``
   and ``/rpc/``;
3. when one of them offers ``WWW-Authenticate: NTLM`` (or ``Negotiate``), the same ``GET`` again with
   ``Authorization: NTLM <NEGOTIATE>``; the server's CHALLENGE is parsed and the exchange stops
   there: no credentials are ever sent.

Collects: the ``Server`` header as product and version (nginx, Apache httpd, Microsoft IIS,
Microsoft HTTPAPI = HTTP.sys, or any ``name/version``), other tells (``X-Powered-By``,
``X-AspNet-Version``), the page title, the redirect targets (``Location``, flagged when off the
target), the authentication schemes offered, Exchange facts (``X-OWA-Version``, ``X-FEServer``,
``X-BEServer``, the build in OWA's logon page paths) and the NTLM CHALLENGE's names and Windows
build.

Bodies are read only when framed by ``Content-Length`` or chunked encoding, and at most
:data:`BODY_CAP` bytes; a body that is larger, or delimited only by the connection's close, is
not read (``body_read: false``) and no further request is sent on that connection since it can no
longer be framed.
"""

from __future__ import annotations

import base64
import binascii
import html
import re
from collections.abc import Generator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from scanner.api import (
    Dialogue,
    Finding,
    NotThisProtocol,
    Probe,
    ProbeContext,
    Recv,
    RecvClosed,
    RecvTimeout,
    Send,
    Step,
)
from scanner.ntlm import NTLMChallenge, NTLMError, build_negotiate, find_ntlmssp, parse_challenge

__all__ = [
    "BODY_CAP",
    "EXCHANGE_PATHS",
    "HEADER_CAP",
    "HTTPProbe",
    "HTTPResponse",
    "ServerProduct",
    "build_request",
    "exchange_facts",
    "frame_http_response",
    "host_header",
    "ntlm_from_headers",
    "parse_auth_schemes",
    "parse_http_response",
    "parse_server_header",
]

#: most bytes of status line + headers accepted
HEADER_CAP = 32 * 1024
#: most body bytes read from one response
BODY_CAP = 64 * 1024
#: most header lines in one response
MAX_HEADERS = 200
#: most chunks walked in a chunked body
MAX_CHUNKS = 4096
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


@dataclass(frozen=True, slots=True)
class ServerProduct:
    """Product and version named by a ``Server`` header."""

    product: str
    version: str | None = None
    #: the rest of the header (``(Debian)``, modules...)
    extra: str | None = None


# Server header product token -> product name as nmap spells it
_PRODUCTS = {
    "nginx": "nginx",
    "apache": "Apache httpd",
    "microsoft-iis": "Microsoft IIS httpd",
    "microsoft-httpapi": "Microsoft HTTPAPI httpd",
    "lighttpd": "lighttpd",
    "openresty": "OpenResty web app server",
    "caddy": "Caddy httpd",
}


def parse_server_header(value: str) -> ServerProduct | None:
    """Name the product of a ``Server`` header: ``nginx/1.22.1`` -> nginx 1.22.1, ``Apache/2.4.57
    (Debian)`` -> Apache httpd 2.4.57 (Debian), ``Microsoft-HTTPAPI/2.0`` -> HTTP.sys, ..."""
    value = value.strip()
    if not value:
        return None
    match = re.match(r"([A-Za-z][\w.\-]{0,63})(?:/([\w.\-+~]{1,64}))?\s*(.*)$", value, re.S)
    if not match:
        return ServerProduct(product=value[:128])
    token, version, rest = match.group(1), match.group(2), match.group(3).strip()
    product = _PRODUCTS.get(token.lower(), token)
    return ServerProduct(product=product, version=version, extra=rest[:256] or None)


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


def _chunked_end(buf: bytes, start: int) -> tuple[int | None, int]:
    """Walk a chunked body from ``start``: (offset past the last CRLF, or None for need more;
    body bytes seen so far)."""
    pos = start
    data = 0
    for _ in range(MAX_CHUNKS):
        line_end = buf.find(b"\n", pos, pos + 1024)
        if line_end < 0:
            if len(buf) - pos > 1024:
                raise NotThisProtocol("chunk size line too long")
            return None, data
        size_text = buf[pos:line_end].split(b";", 1)[0].strip()
        if not size_text or len(size_text) > 15 or not re.fullmatch(rb"[0-9A-Fa-f]+", size_text):
            raise NotThisProtocol(f"bad chunk size {size_text[:20]!r}")
        size = int(size_text, 16)
        pos = line_end + 1
        if size == 0:
            # trailer fields, then an empty line
            for _ in range(MAX_HEADERS):
                end = buf.find(b"\n", pos, pos + 8192)
                if end < 0:
                    if len(buf) - pos > 8192:
                        raise NotThisProtocol("chunked trailer line too long")
                    return None, data
                line = buf[pos:end]
                pos = end + 1
                if line in (b"", b"\r"):
                    return pos, data
            raise NotThisProtocol("too many trailer fields")
        data += size
        if data > BODY_CAP:
            return None, data
        pos += size
        if len(buf) < pos + 1:
            return None, data
        if buf[pos : pos + 2] == b"\r\n":
            pos += 2
        elif buf[pos : pos + 1] == b"\n":
            pos += 1
        elif len(buf) >= pos + 2 or buf[pos : pos + 1] != b"\r":
            raise NotThisProtocol("chunk not followed by CRLF")
        else:
            return None, data
    raise NotThisProtocol(f"more than {MAX_CHUNKS} chunks")


def _body_framing(code: int, headers: list[tuple[str, str]]) -> str:
    """How the body is delimited: ``none``, ``chunked``, ``length`` or ``close``."""
    if 100 <= code < 200 or code in (204, 304):
        return "none"
    if _is_chunked(headers):
        return "chunked"
    if _content_length(headers) is not None:
        return "length"
    return "close"


def frame_http_response(buf: bytes) -> int | None:
    """Frame one HTTP response: status line and headers up to the blank line, then the body by
    ``Content-Length`` or chunked encoding, at most :data:`BODY_CAP` body bytes.

    A body bigger than the cap is cut at exactly ``BODY_CAP`` bytes (so the framed length does not
    depend on how the bytes arrived); a body delimited by the close is not framed (headers only).
    """
    head_prefix = buf[: len(_HTTP_PREFIX)]
    if head_prefix != _HTTP_PREFIX[: len(head_prefix)]:
        raise NotThisProtocol("not an HTTP response")
    end = _header_end(buf)
    if end is None:
        return None
    _version, code, _reason, headers = _parse_head(buf[:end])
    framing = _body_framing(code, headers)
    if framing in ("none", "close"):
        return end
    if framing == "length":
        length = _content_length(headers) or 0
        want = end + min(length, BODY_CAP)
        return want if len(buf) >= want else None
    done, seen = _chunked_end(buf, end)
    if done is not None:
        return done
    if seen > BODY_CAP and len(buf) >= end + BODY_CAP:
        return end + BODY_CAP
    # A body that grows past the cap but has not yet reached BODY_CAP bytes on the wire: wait.
    return None


def _dechunk(raw: bytes) -> bytes:
    """Body bytes of a (possibly cut) chunked body; stops quietly at the first malformed part."""
    out = bytearray()
    pos = 0
    for _ in range(MAX_CHUNKS):
        line_end = raw.find(b"\n", pos)
        if line_end < 0:
            break
        size_text = raw[pos:line_end].split(b";", 1)[0].strip()
        if not re.fullmatch(rb"[0-9A-Fa-f]{1,15}", size_text):
            break
        size = int(size_text, 16)
        if size == 0:
            break
        pos = line_end + 1
        out += raw[pos : pos + size]
        pos += size
        while raw[pos : pos + 1] in (b"\r", b"\n") and pos < len(raw):
            pos += 1
    return bytes(out[:BODY_CAP])


def parse_http_response(message: bytes) -> HTTPResponse:
    """Parse one response framed by :func:`frame_http_response`."""
    end = _header_end(message)
    if end is None:
        raise NotThisProtocol("incomplete HTTP header block")
    version, code, reason, headers = _parse_head(message[:end])
    framing = _body_framing(code, headers)
    raw = message[end:]
    connection = {t.strip().lower() for v in _get(headers, "connection") for t in v.split(",")}
    reusable = "close" not in connection and not (version == "1.0" and "keep-alive" not in connection)
    body_read = True
    if framing == "none":
        body = b""
    elif framing == "close":
        body, body_read, reusable = b"", False, False
    elif framing == "length":
        length = _content_length(headers) or 0
        body = raw[:length]
        body_read = len(body) == length
    else:
        body = _dechunk(raw)
        done, _seen = _chunked_end(message, end)
        body_read = done is not None and done == len(message)
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
_EXCHANGE_RELEASES = {
    (15, 2): "Exchange Server 2019",
    (15, 1): "Exchange Server 2016",
    (15, 0): "Exchange Server 2013",
    (14, 0): "Exchange Server 2010",
    (14, 1): "Exchange Server 2010 SP1",
    (14, 2): "Exchange Server 2010 SP2",
    (14, 3): "Exchange Server 2010 SP3",
    (8, 0): "Exchange Server 2007",
    (8, 1): "Exchange Server 2007 SP1",
    (8, 2): "Exchange Server 2007 SP2",
    (8, 3): "Exchange Server 2007 SP3",
    (6, 5): "Exchange Server 2003",
    (6, 0): "Exchange 2000 Server",
}


def exchange_release(build: str) -> str | None:
    """Name the Exchange release of a build like ``15.1.2507.6``."""
    parts = build.split(".")
    try:
        return _EXCHANGE_RELEASES.get((int(parts[0]), int(parts[1])))
    except (ValueError, IndexError):
        return None


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


class HTTPProbe(Probe):
    """HTTP/1.1 server: product from ``Server``, title, auth schemes, Exchange/OWA, NTLM facts."""

    name = "http"
    services = ("http",)
    transports = ("tcp",)
    ports = (80, 443, 8080, 8443)
    tls_ports = (443, 8443)
    server_first = False
    rarity = 1
    summary = "HTTP server product/version, title, auth schemes, Outlook Web Access and NTLM facts"

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        """``GET /``, then the Exchange paths, then one NTLM NEGOTIATE where NTLM is offered."""
        host = host_header(ctx)
        step = Recv(frame_http_response, max_size=HEADER_CAP + BODY_CAP)

        def exchange(path: str, authorization: str | None = None) -> Generator[Step, Any, HTTPResponse]:
            """Send one request and return its final response (skipping 1xx interim ones)."""
            yield Send(build_request(path, host, authorization))
            for _ in range(MAX_INTERIM):
                resp = parse_http_response((yield step))
                if not (100 <= resp.status < 200 and resp.status != 101):
                    return resp
            raise NotThisProtocol("too many interim 1xx responses")

        first: HTTPResponse = yield from exchange("/")
        finding = Finding(service="http", confidence=10)
        if first.status == 101:
            raise NotThisProtocol("server switched protocols on a plain GET")
        finding.add("status line", f"HTTP/{first.version} {first.status} {first.reason}")
        details: dict[str, Any] = {"requests": {"/": _summarise(first, host)}}
        finding.details = details
        server = first.header("server")
        if server is not None:
            finding.add("Server", server)
            details["server"] = server
            named = parse_server_header(server)
            if named:
                finding.product, finding.version = named.product, named.version
                if named.extra:
                    finding.extrainfo = named.extra
        else:
            finding.confidence = 8
        for tell in _TELL_HEADERS:
            value = first.header(tell)
            if value:
                details.setdefault("tells", {})[tell] = value[:256]
                finding.add(tell, value)
        if first.title:
            details["title"] = first.title
            finding.add("title", first.title)
        self._note_response(finding, "/", first)
        ctx.found(finding)

        usable = first.reusable
        ntlm_path: str | None = None
        ntlm_scheme = "NTLM"
        first_schemes = parse_auth_schemes(first)
        if "NTLM" in first_schemes or "Negotiate" in first_schemes:
            # IIS accepts a raw NTLMSSP token under Negotiate too (it sniffs the signature)
            ntlm_path, ntlm_scheme = "/", "NTLM" if "NTLM" in first_schemes else "Negotiate"
        requests: dict[str, Any] = details["requests"]
        try:
            for path in EXCHANGE_PATHS:
                if not usable:
                    details["stopped"] = f"connection not reusable after {len(requests)} request(s)"
                    break
                resp: HTTPResponse = yield from exchange(path)
                requests[path] = _summarise(resp, host)
                self._note_response(finding, path, resp)
                usable = resp.reusable
                schemes = parse_auth_schemes(resp)
                if ntlm_path is None and ("NTLM" in schemes or "Negotiate" in schemes):
                    ntlm_path = path
                    ntlm_scheme = "NTLM" if "NTLM" in schemes else "Negotiate"
                ctx.found(self._conclude(finding))
            if ntlm_path is not None and usable and "ntlm" not in details:
                token = base64.b64encode(build_negotiate()).decode("ascii")
                resp = yield from exchange(ntlm_path, f"{ntlm_scheme} {token}")
                self._record_ntlm(finding, ntlm_path, resp)
        except (RecvClosed, RecvTimeout) as exc:
            details["stopped"] = f"{type(exc).__name__} after {len(requests)} request(s)"
        except NotThisProtocol as exc:
            # the first response proved HTTP; a later garbled one only ends the exchange
            details["stopped"] = f"unparsable response after {len(requests)} request(s): {exc}"
        return ctx.found(self._conclude(finding))

    @classmethod
    def _note_response(cls, finding: Finding, path: str, resp: HTTPResponse) -> None:
        """Facts any response may carry: another ``Server`` header (IIS behind HTTP.sys), and an
        NTLM CHALLENGE already present (seen in captures, where the client sent the NEGOTIATE)."""
        server = resp.header("server")
        first = finding.details.get("server")
        servers: list[str] = finding.details.get("servers") or ([first] if first else [])
        if server and server[:256] not in servers and len(servers) < 8:
            servers.append(server[:256])
            if len(servers) > 1:
                finding.details["servers"] = servers
                finding.add(f"Server on {path}", server)
        if "ntlm" not in finding.details and resp.status == 401 and any(
            len(v.split()) == 2 for v in resp.header_all("www-authenticate")
        ):
            cls._record_ntlm(finding, path, resp, quiet=True)

    @staticmethod
    def _record_ntlm(finding: Finding, path: str, resp: HTTPResponse, quiet: bool = False) -> None:
        """Parse the CHALLENGE answering our NEGOTIATE on ``path`` into details and host facts."""
        try:
            challenge = ntlm_from_headers(resp)
        except NTLMError as exc:
            finding.details["ntlm_error"] = str(exc)
            return
        if challenge is None:
            if not quiet:
                finding.details["ntlm_error"] = f"no NTLM challenge in the {resp.status} answer on {path}"
            return
        facts = challenge.as_dict()
        facts["path"] = path
        finding.details["ntlm"] = facts
        finding.add(f"NTLM challenge on {path}", challenge.summary())
        for key in ("netbios_domain", "dns_domain", "dns_computer", "dns_tree"):
            value = getattr(challenge, key)
            if value:
                finding.host_facts[f"ntlm_{key}"] = value
        if challenge.windows_version:
            finding.host_facts["windows_version"] = challenge.windows_version

    @staticmethod
    def _conclude(finding: Finding) -> Finding:
        """Fold the per-path Exchange tells into ``details['owa']`` and the extrainfo."""
        requests: dict[str, Any] = finding.details.get("requests", {})
        tells: dict[str, str] = {}
        for path, summary in requests.items():
            for key, value in summary.get("exchange", {}).items():
                tells.setdefault(key, value)
                source = f"{path} {key}"
                if all(e.source != source for e in finding.evidence):
                    finding.add(source, value)
        probed = [p for p in EXCHANGE_PATHS if p in requests]
        owa: dict[str, Any] = {"present": bool(tells), "probed": probed}
        if tells:
            build = tells.get("owa_version") or tells.get("owa_build_path")
            if build:
                owa["build"] = build
                release = exchange_release(build)
                if release:
                    owa["release"] = release
            if tells.get("fe_server"):
                owa["fe_server"] = tells["fe_server"]
            extra = "Microsoft Exchange"
            if owa.get("release"):
                extra = f"{owa['release']}"
            if build:
                extra += f" build {build}"
            if "exchweb" in tells:
                extra = f"Microsoft Exchange ({tells['exchweb']})"
            base = (finding.extrainfo or "").split("; Outlook Web Access:")[0]
            finding.extrainfo = (f"{base}; " if base else "") + f"Outlook Web Access: {extra}"
            finding.host_facts["exchange"] = extra
        finding.details["owa"] = owa
        return finding
