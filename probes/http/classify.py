"""HTTP Server-header rules: the product, version and Windows release a Server header names, each by a
rule with its source. Part of the :mod:`probes.http` package (what the probe sends and collects is
described there)."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "IIS_WINDOWS",
    "SERVER_RULES",
    "ServerProduct",
    "ServerRule",
    "parse_server_header",
]


# ---------------------------------------------------------------- server rules

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


