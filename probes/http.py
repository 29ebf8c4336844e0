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

Collects: the ``Server`` header, kept as text (``details['server']`` and the evidence), and the
product and version only when one of :data:`SERVER_RULES` knows the product (Apache httpd, Tomcat's
Coyote connector, Microsoft IIS with its Windows release, Microsoft HTTPAPI = HTTP.sys, nginx, ...;
each claim names its rule in ``Finding.rule``); other tells (``X-Powered-By``,
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
    FrameCursor,
    NotThisProtocol,
    Probe,
    ProbeContext,
    Recv,
    RecvClosed,
    RecvTimeout,
    ResumableFramer,
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
    "IIS_WINDOWS",
    "SERVER_RULES",
    "ServerProduct",
    "ServerRule",
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
    """Product and version named by a ``Server`` header, and the rule that named them."""

    product: str
    version: str | None = None
    #: the rest of the header (``(Debian)``, modules...)
    extra: str | None = None
    #: the rule: ``"portproof:http/<id>"`` (see :data:`SERVER_RULES`)
    rule: str = ""
    #: the operating system the product's version implies (IIS: the Windows release)
    os: str | None = None
    #: other facts the header carried (``{"coyote": "1.1"}``, ``{"python": "3.11.2"}``)
    facts: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ServerRule:
    """One rule that names a product from the whole ``Server`` value (full match, so a product
    token is never taken from the middle of someone else's header).

    Named groups: ``version``; ``extra`` (the rest: OS comment, modules); any other group becomes
    a fact. ``source`` says where the self-naming is documented or was seen (the tests in
    ``tests/probes/test_http_rules.py`` hold one real example per rule, with its origin).
    """

    id: str
    pattern: re.Pattern[str]
    #: the product as nmap's service database spells it, so the two layers compare by name
    product: str
    source: str


def _server_rule(rule_id: str, pattern: str, product: str, source: str, flags: int = 0) -> ServerRule:
    return ServerRule(rule_id, re.compile(pattern, flags | re.S), product, source)


_VER = r"\d[\w.\-+~]{0,63}"
#: the rules that may name a product from ``Server``; anything else stays text (``details['server']``
#: and the evidence) for the service database to name, never a product taken from its first word
SERVER_RULES: tuple[ServerRule, ...] = (
    # httpd's ServerTokens forms: Prod "Apache", Major "Apache/2", Minor/Min "Apache/2.4[.57]",
    # OS "Apache/2.4.57 (Debian)", Full adds modules (httpd.apache.org/docs/2.4/mod/core.html
    # #servertokens). A comment or module list only ever follows a version, so "Apache Tomcat/..."
    # or "Apache-Coyote/1.1" can never read as httpd.
    _server_rule("server-apache-httpd", rf"Apache(?:/(?P<version>{_VER})(?P<extra>\s.*)?)?", "Apache httpd",
                 "httpd ServerTokens documentation; public captures Apache/2.4.3 (Fedora), Apache/2.4.52 (Ubuntu)"),
    # Tomcat's HTTP connector (Coyote) default before 8.5: "Apache-Coyote/1.1" (Tomcat 7 HTTP connector
    # docs, attribute `server`). 1.1 is the connector's protocol version, not Tomcat's release.
    _server_rule("server-apache-coyote", r"Apache-Coyote/(?P<coyote>\d[\w.]{0,15})(?P<extra>\s.*)?", "Apache Tomcat",
                 "tomcat.apache.org/tomcat-7.0-doc/config/http.html (server); intrigueio/intrigue-ident#51"),
    _server_rule("server-microsoft-iis", r"Microsoft-IIS/(?P<version>\d{1,2}\.\d{1,2})(?P<extra>\s.*)?",
                 "Microsoft IIS httpd", "public captures Microsoft-IIS/10.0, Microsoft-IIS/7.5"),
    # HTTP.sys, the kernel HTTP listener (WinRM, WSUS, SSRS, Exchange back ends...), when no IIS site
    # answers the request
    _server_rule("server-microsoft-httpapi", r"Microsoft-HTTPAPI/(?P<version>\d{1,2}\.\d{1,2})",
                 "Microsoft HTTPAPI httpd", "public capture Microsoft-HTTPAPI/2.0 (WebDAV, NTLM)"),
    _server_rule("server-nginx", rf"nginx(?:/(?P<version>{_VER})(?P<extra>\s.*)?)?", "nginx",
                 "lab nginx/1.22.1 (Debian 12 package)"),
    _server_rule("server-openresty", rf"openresty(?:/(?P<version>{_VER}))?", "OpenResty web app server",
                 "OpenResty's nginx core sends openresty/<version> (Kong docs show openresty/1.15.8.3)"),
    _server_rule("server-lighttpd", rf"lighttpd(?:/(?P<version>{_VER}))?", "lighttpd",
                 "lighttpd server.tag default lighttpd/<version>; seen lighttpd/1.4.59 (test.multipath-tcp.org)"),
    _server_rule("server-caddy", r"Caddy", "Caddy httpd", "Caddy 2 sets Server: Caddy on every response"),
    _server_rule("server-litespeed", r"LiteSpeed", "LiteSpeed httpd",
                 "LiteSpeed/OpenLiteSpeed default server signature"),
    # Jetty's HttpConfiguration.sendServerVersion: "Jetty(<version>)" (9.x and later)
    _server_rule("server-jetty", rf"Jetty\((?P<version>{_VER})\)", "Jetty",
                 "Kafka Connect REST API replies Jetty(9.4.44.v20210927)"),
    _server_rule("server-gunicorn", rf"gunicorn(?:/(?P<version>{_VER}))?", "Gunicorn",
                 "httpbin.org (gunicorn) answers gunicorn/19.9.0"),
    # werkzeug.serving.WSGIRequestHandler: "Werkzeug/<version> Python/<version>" (Flask's dev server)
    _server_rule("server-werkzeug", rf"Werkzeug/(?P<version>{_VER})(?: Python/(?P<python>{_VER}))?",
                 "Werkzeug httpd", "Flask development server: Werkzeug/2.2.2 Python/3.11.2"),
    # tornado.web.RequestHandler.clear(): "TornadoServer/<version>"
    _server_rule("server-tornado", rf"TornadoServer/(?P<version>{_VER})", "Tornado httpd",
                 "Jupyter/Streamlit servers: TornadoServer/6.1"),
    # Python's http.server: server_version "SimpleHTTP/0.6" + sys_version "Python/x.y.z" (docs.python.org
    # library/http.server.html); the product version is the module's, Python's goes to extrainfo
    _server_rule("server-python-http-server",
                 rf"SimpleHTTP/(?P<version>{_VER}) Python/(?P<python>{_VER})", "SimpleHTTPServer",
                 "lab: python3 -m http.server"),
    # Google's front end names itself "gws" (Google Web Server)
    _server_rule("server-google-gws", r"gws", "Google httpd", "public capture multi-apache-2.2.17-ubuntu-ftp-ssh-dns"),
    # ASP.NET Core's Kestrel: KestrelServerOptions.AddServerHeader (default true) adds "Server: Kestrel"
    _server_rule("server-kestrel", r"Kestrel", "Microsoft Kestrel httpd",
                 "learn.microsoft.com KestrelServerOptions.AddServerHeader"),
    # Squid: "squid/<version>" unless httpd_suppress_version_string is on ("squid")
    _server_rule("server-squid", rf"squid(?:/(?P<version>{_VER}))?", "Squid http proxy",
                 "squid-cache.org httpd_suppress_version_string"),
    # Python's http.server base class alone: BaseHTTPRequestHandler.server_version "BaseHTTP/0.6" +
    # sys_version (the module's version; Python's goes to extrainfo)
    _server_rule("server-python-basehttp", rf"BaseHTTP/(?P<version>{_VER}) Python/(?P<python>{_VER})",
                 "BaseHTTPServer", "curl/curl#11802: BaseHTTP/0.6 Python/3.7.13"),
    # wsgiref.simple_server: server_version "WSGIServer/0.2" + sys_version "<implementation>/<version>"
    _server_rule("server-python-wsgiref",
                 rf"WSGIServer/(?P<version>{_VER}) (?:CPython|PyPy)/(?P<python>{_VER})", "Python wsgiref httpd",
                 "lab: python 3.11.7 wsgiref.simple_server (WSGIServer/0.2 CPython/3.11.7)"),
    # paste.httpserver: "PasteWSGIServer/<server class version> Python/<version>" (0.5, not Paste's release)
    _server_rule("server-paste", rf"PasteWSGIServer/(?P<version>{_VER}) Python/(?P<python>{_VER})",
                 "PasteWSGIServer", "lab: python3-paste 3.5.2 paste.httpserver (PasteWSGIServer/0.5)"),
    _server_rule("server-waitress", r"waitress", "Pylons Waitress WSGI server", "mozilla/ichnaea#1867"),
    _server_rule("server-uvicorn", r"uvicorn", "Uvicorn ASGI server", "lab: python3-uvicorn 0.17.6"),
    # Hypercorn names the HTTP implementation it serves with: hypercorn-h11, hypercorn-h2, hypercorn-h3
    _server_rule("server-hypercorn", r"hypercorn-(?P<protocol>h11|h2|h3)", "Hypercorn ASGI server",
                 "lab: python3-hypercorn 0.13.2 (hypercorn-h11)"),
    # Perl's HTTP::Daemon (libwww-perl): "libwww-perl-daemon/<HTTP::Daemon version>"
    _server_rule("server-perl-http-daemon", rf"libwww-perl-daemon/(?P<version>{_VER})", "libwww-perl-daemon httpd",
                 "lab: libhttp-daemon-perl 6.16"),
    # Icecast 2 sends "Icecast <version>" (icecast-kh: "Icecast 2.4.0-kh<n>"), or "Icecast" alone
    _server_rule("server-icecast", rf"Icecast(?: (?P<version>{_VER}))?", "Icecast streaming media server",
                 "karlheyes/icecast-kh#395 (Server: Icecast)"),
    _server_rule("server-h2o", rf"h2o(?:/(?P<version>{_VER}))?", "H2O httpd", "lab: h2o 2.2.5 (h2o/2.2.5)"),
    _server_rule("server-nghttpd", rf"nghttpd nghttp2/(?P<version>{_VER})", "nghttpd",
                 "lab: nghttp2-server 1.52.0 (nghttpd nghttp2/1.52.0)"),
    _server_rule("server-envoy", r"envoy", "Envoy proxy", "envoyproxy/envoy#37268 (server: envoy)"),
    # Apache Traffic Server's default proxy.config.http.response_server_str "ATS/<version>"; a bare
    # "ATS" is too short a word to name anything
    _server_rule("server-apache-traffic-server", r"ATS/(?P<version>\d{1,2}\.\d{1,3}[\w.\-]{0,32})",
                 "Apache Traffic Server", "lab: trafficserver 9.2.9 (ATS/9.2.9)"),
    # CouchDB 1.x: "CouchDB/1.6.1 (Erlang OTP/17)"; 3.x with server_header_versions off: "CouchDB"
    _server_rule("server-couchdb", rf"CouchDB(?:/(?P<version>{_VER})(?P<extra>\s.*)?)?", "CouchDB httpd",
                 "apache/couchdb#4613 (server_header_versions disabled: CouchDB)"),
    # Undertow's default in WildFly / JBoss EAP names the application server and its major release
    _server_rule("server-wildfly", rf"WildFly/(?P<version>{_VER})", "JBoss WildFly Application Server",
                 "wildfly/wildfly#10216 (WFLY-8962: WildFly/11)"),
    _server_rule("server-jboss-eap", rf"JBoss-EAP/(?P<version>{_VER})", "JBoss Enterprise Application Platform",
                 "wildfly/wildfly#10216 (JBoss-EAP/7)"),
    # Tasmota firmware's web server: "Tasmota/<version> (<chip>)"
    _server_rule("server-tasmota", rf"Tasmota/(?P<version>{_VER})(?: \((?P<hardware>[\w\-]{{1,32}})\))?",
                 "Tasmota httpd", "arendst/Tasmota#10831 (Tasmota/9.2.0.5 (ESP8266))"),
    _server_rule("server-amazon-s3", r"AmazonS3", "Amazon S3 httpd", "S3 object response (gist deepfryed/1066972)"),
    # AWS Elastic Load Balancing's own replies: "awselb/2.0" (2.0: the Application Load Balancer
    # generation, kept as a fact, not a product version)
    _server_rule("server-aws-elb", r"awselb(?:/(?P<elb_generation>\d{1,2}\.\d{1,2}))?",
                 "AWS Elastic Load Balancing", "esi/esi-issues#902 (awselb/2.0, 502 from an ALB)"),
    # GoAhead embedded web server: "GoAhead-Webs" (2.x), "GoAhead-http" (3.x and later), cameras
    # misspelling it "GoaHead"
    _server_rule("server-goahead", rf"Go(?:Ahead|aHead)(?:-Webs|-http)?(?:/(?P<version>{_VER})(?P<extra>\s.*)?)?",
                 "GoAhead WebServer", "home-assistant/core#14960 (GoaHead, IP camera)"),
    # CICS TS HTTPSERVERHDR=YES: "IBM_CICS_Transaction_Server/<release>(<platform>)"
    _server_rule("server-ibm-cics", r"IBM_CICS_Transaction_Server/(?P<version>\d[\w.]{0,31})"
                 r"(?:\((?P<platform>[\w/]{1,16})\))?", "IBM CICS Transaction Server",
                 "IBM CICS TS 5.3 documentation, HTTPSERVERHDR system initialization parameter"),
    # Ballerina's HTTP listener (WSO2 transport) names the transport
    _server_rule("server-wso2-http-transport", r"wso2-http-transport", "WSO2 HTTP transport (Ballerina)",
                 "ballerina-platform/ballerina-lang#5414"),
    _server_rule("server-ipwb", rf"InterPlanetary Wayback Replay/(?P<version>{_VER})",
                 "InterPlanetary Wayback (ipwb)", "oduwsdl/ipwb#831"),
)

#: IIS version -> the Windows release it ships with. Microsoft: IIS 6.0 SDK "Where Applicable"
#: (5.0 Windows 2000, 5.1 Windows XP Professional, 6.0 Windows Server 2003), and the IIS native API
#: reference's requirements tables, e.g. "WebhostGetVersion function" on learn.microsoft.com (7.0 Windows
#: Vista / Server 2008, 7.5 Windows 7 / Server 2008 R2, 8.0 Windows 8 / Server 2012, 8.5 Windows 8.1 /
#: Server 2012 R2, 10.0 Windows 10 / Server 2016; later Windows releases keep IIS 10.0).
IIS_WINDOWS: dict[str, str] = {
    "5.0": "Windows 2000",
    "5.1": "Windows XP",
    "6.0": "Windows Server 2003",
    "7.0": "Windows Server 2008 / Windows Vista",
    "7.5": "Windows Server 2008 R2 / Windows 7",
    "8.0": "Windows Server 2012 / Windows 8",
    "8.5": "Windows Server 2012 R2 / Windows 8.1",
    "10.0": "Windows Server 2016 or later / Windows 10 or later",
}


def parse_server_header(value: str) -> ServerProduct | None:
    """Name the product of a ``Server`` header by one of :data:`SERVER_RULES`, or None.

    ``nginx/1.22.1`` -> nginx 1.22.1 (rule ``server-nginx``); ``Apache/2.4.57 (Debian)`` -> Apache
    httpd 2.4.57, extra ``(Debian)``; ``Apache-Coyote/1.1`` -> Apache Tomcat (no version: 1.1 is the
    connector's); ``Microsoft-IIS/7.5`` -> Microsoft IIS httpd 7.5 on Windows Server 2008 R2 / Windows
    7. A value no rule knows (``Oracle``, ``HP``, ``Servlet 2.5; JBoss-5.0/JBossWeb-2.1``) gives None:
    its first word is not a product.
    """
    value = value.strip()
    if not value or len(value) > 1024:
        return None
    for rule in SERVER_RULES:
        match = rule.pattern.fullmatch(value)
        if not match:
            continue
        groups = match.groupdict()
        version = groups.pop("version", None)
        extra = (groups.pop("extra", None) or "").strip()[:256] or None
        facts = tuple((k, v) for k, v in groups.items() if v)
        os_name = IIS_WINDOWS.get(version or "") if rule.id == "server-microsoft-iis" else None
        return ServerProduct(rule.product, version, extra, f"portproof:http/{rule.id}", os_name, facts)
    return None


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


class _ResponseCursor:
    """Frames one response with h11 (its receive buffer remembers how far it searched, so a reply
    dripped one byte at a time costs linear time); ``fed`` counts the bytes given to h11."""

    __slots__ = ("conn", "fed", "head_end")

    def __init__(self) -> None:
        self.conn: Any = None
        self.fed = 0
        self.head_end: int | None = None

    def feed(self, buf: bytes | bytearray) -> int | None:
        import h11

        if self.conn is None:
            head_prefix = bytes(buf[: len(_HTTP_PREFIX)])
            if head_prefix != _HTTP_PREFIX[: len(head_prefix)]:
                raise NotThisProtocol("not an HTTP response")  # at once, not after HEADER_CAP bytes
            if len(buf) < len(_HTTP_PREFIX):
                return None
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

        # the reply to the first ``GET /`` is what nmap's service database calls the GetRequest
        # reply (its probe sends ``GET / HTTP/1.0``): the driver keeps it for the database
        first_step = Recv(frame_http_response, max_size=HEADER_CAP + BODY_CAP, tag="GetRequest")

        def exchange(
            path: str, authorization: str | None = None, recv: Recv = step
        ) -> Generator[Step, Any, HTTPResponse]:
            """Send one request and return its final response (skipping 1xx interim ones)."""
            yield Send(build_request(path, host, authorization))
            for _ in range(MAX_INTERIM):
                resp = parse_http_response((yield recv))
                if not (100 <= resp.status < 200 and resp.status != 101):
                    return resp
            raise NotThisProtocol("too many interim 1xx responses")

        first: HTTPResponse = yield from exchange("/", recv=first_step)
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
                finding.product, finding.version, finding.rule = named.product, named.version, named.rule
                extra = [e for e in (named.os, named.extra) if e]
                for fact, text in named.facts:
                    details[fact] = text
                    if fact == "python":
                        extra.append(f"Python {text}")
                if named.os:
                    details["os"] = named.os
                if extra:
                    finding.extrainfo = "; ".join(extra)
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
                    # the build -> release table above (Microsoft's Exchange build numbers page)
                    owa["rule"] = "portproof:http/owa-exchange-build"
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
