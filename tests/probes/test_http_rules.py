"""The http probe's naming rules: a product only from a rule that knows it, every claim names its
rule, and ``Server`` values no rule knows stay text.

Examples and where they were seen:

* public captures (tests/data/pcaps-public, MANIFEST.tsv): ``Apache/2.4.3 (Fedora)``,
  ``Apache/2.4.52 (Ubuntu)``, ``Apache/2.2.17 (Ubuntu)``, ``Microsoft-IIS/10.0``,
  ``Microsoft-HTTPAPI/2.0``, ``Microsoft-IIS/7.5``, ``gws`` and ``Golfe``;
* the lab: nginx 1.22.1 (Debian 12); Python's ``http.server`` started by this file on loopback;
* vendor documentation: httpd's ServerTokens (``Apache``), Tomcat 7's HTTP connector ``server``
  attribute (default ``Apache-Coyote/1.1``), Caddy, LiteSpeed, ASP.NET Core Kestrel
  (AddServerHeader), Squid (httpd_suppress_version_string), Microsoft's IIS SDK and IIS native API
  reference for the IIS -> Windows table;
* public write-ups and READMEs on GitHub quoting real replies: ``openresty/1.15.8.3`` (Kong
  plugin docs), ``lighttpd/1.4.59`` (test.multipath-tcp.org), ``Jetty(9.4.44.v20210927)`` (Kafka
  Connect REST), ``gunicorn/19.9.0`` (httpbin.org), ``Werkzeug/2.2.2 Python/3.11.2`` (nmap output),
  ``TornadoServer/6.1``; issue trackers: intrigueio/intrigue-ident#51 and
  justjavac/ChromeSnifferPlus#1 (``Apache-Coyote/1.1`` is Tomcat, not Apache httpd).
"""

from __future__ import annotations

import http.server
import socket
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from probes.http import (
    EXCHANGE_PATHS,
    IIS_WINDOWS,
    SERVER_RULES,
    HTTPProbe,
    build_request,
    frame_http_response,
    parse_http_response,
    parse_server_header,
)
from scanner.testing import run_dialogue

# Server value, product, version, rule id, where it was seen
POSITIVES: list[tuple[str, str, str | None, str, str]] = [
    ("Apache/2.4.3 (Fedora)", "Apache httpd", "2.4.3", "server-apache-httpd", "capture http-apache-2.4.3-fedora"),
    ("Apache/2.4.52 (Ubuntu)", "Apache httpd", "2.4.52", "server-apache-httpd", "capture http-webdav-apache-2.4.52"),
    ("Apache/2.2.17 (Ubuntu)", "Apache httpd", "2.2.17", "server-apache-httpd", "capture multi-apache-2.2.17"),
    ("Apache", "Apache httpd", None, "server-apache-httpd", "httpd docs, ServerTokens Prod"),
    ("Apache-Coyote/1.1", "Apache Tomcat", None, "server-apache-coyote", "Tomcat 7 docs; intrigue-ident#51"),
    ("Microsoft-IIS/10.0", "Microsoft IIS httpd", "10.0", "server-microsoft-iis", "capture http-webdav (IIS)"),
    ("Microsoft-IIS/7.5", "Microsoft IIS httpd", "7.5", "server-microsoft-iis", "capture multi-win10-epm"),
    ("Microsoft-HTTPAPI/2.0", "Microsoft HTTPAPI httpd", "2.0", "server-microsoft-httpapi", "capture http-webdav"),
    ("nginx/1.22.1", "nginx", "1.22.1", "server-nginx", "lab nginx (Debian 12)"),
    ("openresty/1.15.8.3", "OpenResty web app server", "1.15.8.3", "server-openresty", "Kong plugin docs"),
    ("lighttpd/1.4.59", "lighttpd", "1.4.59", "server-lighttpd", "test.multipath-tcp.org reply"),
    ("Caddy", "Caddy httpd", None, "server-caddy", "Caddy 2 default"),
    ("LiteSpeed", "LiteSpeed httpd", None, "server-litespeed", "LiteSpeed default server signature"),
    ("Jetty(9.4.44.v20210927)", "Jetty", "9.4.44.v20210927", "server-jetty", "Kafka Connect REST reply"),
    ("gunicorn/19.9.0", "Gunicorn", "19.9.0", "server-gunicorn", "httpbin.org"),
    ("Werkzeug/2.2.2 Python/3.11.2", "Werkzeug httpd", "2.2.2", "server-werkzeug", "nmap output in a write-up"),
    ("TornadoServer/6.1", "Tornado httpd", "6.1", "server-tornado", "Tornado app reply in a README"),
    ("gws", "Google httpd", None, "server-google-gws", "capture multi-apache-2.2.17 (Google)"),
    ("Kestrel", "Microsoft Kestrel httpd", None, "server-kestrel", "ASP.NET Core AddServerHeader"),
    ("squid", "Squid http proxy", None, "server-squid", "Squid httpd_suppress_version_string on"),
    # rows of tests/data/banners/http.tsv, with its source column
    ("BaseHTTP/0.6 Python/3.7.13", "BaseHTTPServer", "0.6", "server-python-basehttp",
     "https://github.com/curl/curl/issues/11802"),
    ("WSGIServer/0.2 CPython/3.11.7", "Python wsgiref httpd", "0.2", "server-python-wsgiref", "lab:python 3.11.7"),
    ("PasteWSGIServer/0.5 Python/3.11.7", "PasteWSGIServer", "0.5", "server-paste", "lab:python3-paste 3.5.2+repack-1"),
    ("waitress", "Pylons Waitress WSGI server", None, "server-waitress", "https://github.com/mozilla/ichnaea/issues/1867"),
    ("uvicorn", "Uvicorn ASGI server", None, "server-uvicorn", "lab:python3-uvicorn 0.17.6-1"),
    ("hypercorn-h11", "Hypercorn ASGI server", None, "server-hypercorn", "lab:python3-hypercorn 0.13.2-3"),
    ("libwww-perl-daemon/6.16", "libwww-perl-daemon httpd", "6.16", "server-perl-http-daemon",
     "lab:libhttp-daemon-perl 6.16-1+deb13u1~deb12u1"),
    ("Icecast", "Icecast streaming media server", None, "server-icecast",
     "https://github.com/karlheyes/icecast-kh/issues/395"),
    ("h2o/2.2.5", "H2O httpd", "2.2.5", "server-h2o", "lab:h2o 2.2.5+dfsg2-7"),
    ("nghttpd nghttp2/1.52.0", "nghttpd", "1.52.0", "server-nghttpd", "lab:nghttp2-server 1.52.0-1+deb12u3"),
    ("envoy", "Envoy proxy", None, "server-envoy", "https://github.com/envoyproxy/envoy/issues/37268"),
    ("ATS/9.2.9", "Apache Traffic Server", "9.2.9", "server-apache-traffic-server",
     "lab:trafficserver 9.2.5+ds-0+deb12u4"),
    ("CouchDB", "CouchDB httpd", None, "server-couchdb", "https://github.com/apache/couchdb/pull/4613"),
    ("WildFly/11", "JBoss WildFly Application Server", "11", "server-wildfly",
     "https://github.com/wildfly/wildfly/pull/10216"),
    ("JBoss-EAP/7", "JBoss Enterprise Application Platform", "7", "server-jboss-eap",
     "https://github.com/wildfly/wildfly/pull/10216"),
    ("Tasmota/9.2.0.5 (ESP8266)", "Tasmota httpd", "9.2.0.5", "server-tasmota",
     "https://github.com/arendst/Tasmota/issues/10831"),
    ("AmazonS3", "Amazon S3 httpd", None, "server-amazon-s3", "https://gist.github.com/deepfryed/1066972"),
    ("awselb/2.0", "AWS Elastic Load Balancing", None, "server-aws-elb", "https://github.com/esi/esi-issues/issues/902"),
    ("GoaHead", "GoAhead WebServer", None, "server-goahead", "https://github.com/home-assistant/core/issues/14960"),
    ("IBM_CICS_Transaction_Server/5.3.0(zOS)", "IBM CICS Transaction Server", "5.3.0", "server-ibm-cics",
     "https://www.ibm.com/support/knowledgecenter/SSGMCP_5.3.0/com.ibm.cics.ts.sysdefinition.doc/parameters/"
     "dfha2_httpserverhdr.html"),
    ("wso2-http-transport", "WSO2 HTTP transport (Ballerina)", None, "server-wso2-http-transport",
     "https://github.com/ballerina-platform/ballerina-lang/issues/5414"),
    ("InterPlanetary Wayback Replay/0.2023.08.16.1719", "InterPlanetary Wayback (ipwb)", "0.2023.08.16.1719",
     "server-ipwb", "https://github.com/oduwsdl/ipwb/issues/831"),
]

# values whose first word is not a product (issue 13 saw these claimed), and look-alikes
NEGATIVES = [
    "Oracle",
    "HP",
    "MS",
    "Servlet",
    "Servlet 2.5; JBoss-5.0/JBossWeb-2.1",
    "webserver",
    "-",
    "secret",
    "Golfe",  # capture multi-apache-2.2.17: a site's own name
    "Server",
    "Apache Tomcat/7.0.52",  # not httpd; Tomcat 8.5+ sends no Server header at all by default
    "Apache-AdvancedExtranetServer/2.0.50",
    "Oracle-Application-Server-10g/10.1.2.0.0 Oracle-HTTP-Server",
    "IBM_HTTP_Server",
    "Microsoft-IIS",  # no version: nothing to name the release by
    "nginx-but-not-really/1.0",
    "my nginx/1.22.1",  # a product token in the middle of someone else's value
    "ATS",  # too short a word without the Traffic Server version form
    "WSGIServer",  # the class name alone, without wsgiref's "<impl>/<version>" tail
    "hypercorn",  # Hypercorn always names its HTTP implementation (hypercorn-h11 ...)
    "envoy-gateway.example.com",
]


@pytest.mark.parametrize(("value", "product", "version", "rule_id", "source"), POSITIVES)
def test_server_rules(value: str, product: str, version: str | None, rule_id: str, source: str) -> None:
    named = parse_server_header(value)
    assert named is not None, source
    assert (named.product, named.version, named.rule) == (product, version, f"portproof:http/{rule_id}")


#: rules whose example is read from a live server below rather than written here
LIVE_EXAMPLES = {"server-python-http-server"}


def test_every_server_rule_has_a_positive_example() -> None:
    assert {row[3] for row in POSITIVES} | LIVE_EXAMPLES == {rule.id for rule in SERVER_RULES}
    assert len({rule.id for rule in SERVER_RULES}) == len(SERVER_RULES)


@pytest.mark.parametrize("value", NEGATIVES)
def test_unknown_server_values_name_no_product(value: str) -> None:
    assert parse_server_header(value) is None


def test_coyote_is_tomcat_never_apache_httpd() -> None:
    named = parse_server_header("Apache-Coyote/1.1")
    assert named is not None and named.product == "Apache Tomcat" and named.version is None
    assert dict(named.facts) == {"coyote": "1.1"}  # the connector's version, not Tomcat's release


def test_apache_modules_and_os_comment_go_to_extra() -> None:
    named = parse_server_header("Apache/2.4.71 (Debian) OpenSSL/3.0.22")
    assert named is not None and (named.version, named.extra) == ("2.4.71", "(Debian) OpenSSL/3.0.22")


@pytest.mark.parametrize(
    ("version", "windows"),
    [("5.0", "Windows 2000"), ("5.1", "Windows XP"), ("6.0", "Windows Server 2003"),
     ("7.0", "Windows Server 2008 / Windows Vista"), ("7.5", "Windows Server 2008 R2 / Windows 7"),
     ("8.0", "Windows Server 2012 / Windows 8"), ("8.5", "Windows Server 2012 R2 / Windows 8.1"),
     ("10.0", "Windows Server 2016 or later / Windows 10 or later")],
)
def test_iis_version_names_its_windows_release(version: str, windows: str) -> None:
    # Microsoft: IIS 6.0 SDK "Where Applicable" (5.0/5.1/6.0); IIS native API requirements tables (7.0-10.0)
    named = parse_server_header(f"Microsoft-IIS/{version}")
    assert named is not None and named.os == windows == IIS_WINDOWS[version]
    unknown = parse_server_header("Microsoft-IIS/4.2")
    assert unknown is not None and unknown.os is None


# ----------------------------------------------------------------------------- through the dialogue


def _resp(headers: list[str], body: bytes = b"") -> bytes:
    lines = ["HTTP/1.1 200 OK", *headers, f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.mark.parametrize("value", ["Oracle", "Servlet 2.5; JBoss-5.0/JBossWeb-2.1", "HP"])
def test_dialogue_keeps_unknown_server_as_text(value: str) -> None:
    run = run_dialogue(HTTPProbe(), [_resp([f"Server: {value}"])] * (1 + len(EXCHANGE_PATHS)), port=80)
    assert run.ok and run.finding is not None
    f = run.finding
    assert f.service == "http" and f.product is None and f.version is None and f.rule is None
    assert f.details["server"] == value
    assert any(e.source == "Server" and e.value == value for e in f.evidence)


def test_dialogue_claim_names_its_rule_and_windows_release() -> None:
    run = run_dialogue(HTTPProbe(), [_resp(["Server: Microsoft-IIS/7.5"])] * (1 + len(EXCHANGE_PATHS)), port=80)
    f = run.finding
    assert f is not None and (f.product, f.version) == ("Microsoft IIS httpd", "7.5")
    assert f.rule == "portproof:http/server-microsoft-iis"
    assert f.details["os"] == "Windows Server 2008 R2 / Windows 7"
    assert f.extrainfo == "Windows Server 2008 R2 / Windows 7"


def test_first_get_reply_is_tagged_get_request() -> None:
    """Only the reply to the first ``GET /`` carries nmap's probe name (for the service database)."""
    first = _resp(["Server: nginx/1.22.1"])
    run = run_dialogue(HTTPProbe(), [first] * 50, port=80)
    # nginx gives no Exchange hint: ``GET /`` then ``/owa/`` only (tests/probes/test_http_exchange_gate.py)
    assert run.tags == ["GetRequest", None]
    assert run.ctx is not None and run.ctx.responses == {"GetRequest": first}


# ------------------------------------------------------------------- a real server: Python's http.server


@pytest.fixture(scope="module")
def python_http_server() -> Iterator[tuple[str, int]]:
    with tempfile.TemporaryDirectory() as root:

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=root, **kwargs)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield "127.0.0.1", server.server_address[1]
        finally:
            server.shutdown()
            server.server_close()


def _fetch_root(address: str, port: int) -> bytes:
    """Our ``GET /`` to a loopback server; the reply read to its close (bounded in size and time)."""
    with socket.create_connection((address, port), timeout=5) as sock:
        sock.sendall(build_request("/", f"{address}:{port}"))
        data = b""
        while len(data) < 1 << 20:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def test_python_http_server_live(python_http_server: tuple[str, int]) -> None:
    address, port = python_http_server
    reply = _fetch_root(address, port)
    n = frame_http_response(reply)
    assert n is not None
    resp = parse_http_response(reply[:n])
    handler = http.server.SimpleHTTPRequestHandler
    expected_server = f"{handler.server_version} {handler.sys_version}"
    assert resp.header("server") == expected_server
    named = parse_server_header(expected_server)
    module_version = handler.server_version.split("/")[1]
    python_version = handler.sys_version.split("/")[1]
    assert named is not None and (named.product, named.version) == ("SimpleHTTPServer", module_version)
    assert named.rule == "portproof:http/server-python-http-server"
    # the same bytes through the whole dialogue (http.server closes after one HTTP/1.0 reply)
    run = run_dialogue(HTTPProbe(), reply[:n], port=port, address=address)
    f = run.finding
    assert f is not None and f.product == "SimpleHTTPServer" and f.extrainfo == f"Python {python_version}"
    assert f.details["python"] == python_version
