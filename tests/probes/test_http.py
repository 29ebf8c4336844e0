"""probes.http: framer (byte by byte), parsers on real replies, dialogue transcripts, hostile input."""

from __future__ import annotations

import base64
import re
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probes.http import (
    BODY_CAP,
    EXCHANGE_PATHS,
    HEADER_CAP,
    HTTPProbe,
    build_request,
    exchange_facts,
    frame_http_response,
    host_header,
    ntlm_from_headers,
    parse_auth_schemes,
    parse_http_response,
    parse_server_header,
)
from scanner.api import NotThisProtocol, ProbeContext, RecvClosed, TLSFacts
from scanner.ntlm import NTLMError, parse_challenge
from scanner.testing import feed_bytewise, run_dialogue

PCAPS = Path(__file__).resolve().parents[1] / "data" / "pcaps-public"  # shipped with the tests (MANIFEST.tsv)


def server_streams(name: str, port: int = 80) -> list[bytes]:
    """Server->client byte streams (one per TCP connection) from a public capture, reassembled by
    sequence number with retransmissions dropped."""
    path = PCAPS / name
    if not path.exists():
        pytest.fail(f"public capture {path} is missing (the test data ships with the tests)")
    from scapy.layers.inet import TCP
    from scapy.utils import rdpcap

    flows: dict[tuple[str, int], dict[int, bytes]] = {}
    for pkt in rdpcap(str(path)):
        if TCP in pkt and pkt[TCP].sport == port:
            data = bytes(pkt[TCP].payload)
            if data:
                key = (str(pkt[TCP].underlayer.dst), pkt[TCP].dport)
                flows.setdefault(key, {}).setdefault(pkt[TCP].seq, data)
    return [b"".join(segs[s] for s in sorted(segs)) for segs in flows.values()]


HTTPSYS = "http-webdav-apache-2.4.52-and-ms-httpapi-2.0.pcapng"


def httpsys_challenge_response() -> bytes:
    """The real 401 that HTTP.sys sent with its NTLM CHALLENGE (one complete response)."""
    for stream in server_streams(HTTPSYS):
        if b"Microsoft-HTTPAPI/2.0" in stream and b"WWW-Authenticate: NTLM " in stream:
            n = frame_http_response(stream)
            assert n is not None
            return stream[:n]
    raise AssertionError("no HTTP.sys 401 in capture")


# ------------------------------------------------------------------------------------ framing


def test_frame_real_apache_response_bytewise() -> None:
    stream = server_streams("http-apache-2.4.3-fedora-vlan0.pcap")[0]
    n = feed_bytewise(frame_http_response, stream)
    assert n == len(stream)  # header + Content-Length 4705, nothing more
    resp = parse_http_response(stream[:n])
    assert resp.status == 200 and resp.body_read and len(resp.body) == 4705
    assert resp.header("server") == "Apache/2.4.3 (Fedora)"
    named = parse_server_header(resp.header("Server") or "")
    assert named is not None and (named.product, named.version, named.extra) == ("Apache httpd", "2.4.3", "(Fedora)")


def test_frame_real_keepalive_sequence() -> None:
    """Apache 2.2.17: a 304 (no body) then a 404 with a gzip body on one connection."""
    streams = [s for s in server_streams("multi-apache-2.2.17-ubuntu-ftp-ssh-dns.pcap") if b"Apache/2.2.17" in s]
    stream = next(s for s in streams if s.startswith(b"HTTP/1.1 304"))
    first = feed_bytewise(frame_http_response, stream)
    assert first is not None and stream[:first].endswith(b"\r\n\r\n")
    assert parse_http_response(stream[:first]).status == 304
    rest = stream[first:]
    if rest:
        second = feed_bytewise(frame_http_response, rest)
        assert second is not None
        assert parse_http_response(rest[:second]).status == 404


def test_frame_real_httpsys_401() -> None:
    msg = httpsys_challenge_response()
    assert feed_bytewise(frame_http_response, msg) == len(msg)
    resp = parse_http_response(msg)
    assert resp.status == 401 and parse_auth_schemes(resp) == ["NTLM"]
    named = parse_server_header(resp.header("server") or "")
    assert named is not None and named.product == "Microsoft HTTPAPI httpd" and named.version == "2.0"


def test_frame_chunked_bytewise() -> None:
    msg = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nServer: x\r\n\r\n"
           b"7\r\n<title>\r\n3;ext=1\r\nabc\r\n8\r\n</title>\r\n0\r\nX-Trailer: 1\r\n\r\n")
    assert feed_bytewise(frame_http_response, msg + b"HTTP/1.1 200") == len(msg)
    resp = parse_http_response(msg)
    assert resp.body == b"<title>abc</title>" and resp.title == "abc" and resp.body_read


def test_large_content_length_is_cut_at_the_cap() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n"
    stream = head + b"<title>big</title>" + b"x" * (BODY_CAP + 100)
    assert frame_http_response(stream[: len(head) + BODY_CAP - 1]) is None
    assert frame_http_response(stream) == len(head) + BODY_CAP
    resp = parse_http_response(stream[: len(head) + BODY_CAP])
    assert resp.title == "big" and not resp.body_read and not resp.reusable


def test_large_chunked_is_cut_at_the_cap() -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"4000\r\n" + b"y" * 0x4000 + b"\r\n"
    stream = head + chunk * 6
    n = frame_http_response(stream)
    assert n == len(head) + BODY_CAP
    # the same length whatever the segmentation (checked on a stride: the stream is ~100 KiB)
    for cut in range(len(head), len(stream), 997):
        got = frame_http_response(stream[:cut])
        assert got is None or got == n
    assert not parse_http_response(stream[:n]).body_read


def test_close_delimited_body_is_headers_only() -> None:
    msg = b"HTTP/1.0 200 OK\r\nServer: old/1.0\r\n\r\n<html>...until close"
    n = frame_http_response(msg)
    assert n == msg.index(b"<html>")
    resp = parse_http_response(msg[:n])
    assert not resp.body_read and not resp.reusable


def test_bare_lf_headers() -> None:
    msg = b"HTTP/1.1 200 OK\nContent-Length: 2\nConnection: close\n\nok"
    assert feed_bytewise(frame_http_response, msg) == len(msg)
    resp = parse_http_response(msg)
    assert resp.body == b"ok" and not resp.reusable


@pytest.mark.parametrize(
    "data",
    [
        b"SSH-2.0-OpenSSH_9.2p1\r\n",
        b"220 mail.lab.example.test ESMTP Postfix\r\n",
        b"HTTX/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad header line\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc",
        b"HTTP/1.1 200 OK\r\nX: " + b"a" * (HEADER_CAP + 10),
        b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * 300 + b"\r\n",
    ],
    ids=["ssh", "smtp", "httx", "4-digit", "bad-header", "neg-length", "two-lengths", "bad-chunk",
         "chunk-no-crlf", "huge-header", "too-many-headers"],
)
def test_not_http_or_malformed(data: bytes) -> None:
    with pytest.raises(NotThisProtocol):
        frame_http_response(data)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_framer_and_parser(data: bytes) -> None:
    for buf in (data, b"HTTP/1.1 200 OK\r\n" + data):
        try:
            n = frame_http_response(buf)
            if n is not None:
                parse_http_response(buf[:n]).title  # noqa: B018
        except NotThisProtocol:
            pass


# ---------------------------------------------------------------------------- header parsers


@pytest.mark.parametrize(
    ("header", "product", "version"),
    [
        ("nginx/1.22.1", "nginx", "1.22.1"),
        ("nginx", "nginx", None),
        ("Apache/2.4.71 (Debian) OpenSSL/3.0.22", "Apache httpd", "2.4.71"),
        ("Microsoft-IIS/10.0", "Microsoft IIS httpd", "10.0"),
        ("Microsoft-HTTPAPI/2.0", "Microsoft HTTPAPI httpd", "2.0"),
        ("gws", "Google httpd", None),
        ("Golfe", None, None),  # names nothing a rule knows: no product (issue 13)
    ],
)
def test_parse_server_header(header: str, product: str | None, version: str | None) -> None:
    named = parse_server_header(header)
    if product is None:
        assert named is None, named
    else:
        assert named is not None and (named.product, named.version) == (product, version)


def test_parse_auth_schemes() -> None:
    resp = parse_http_response(
        b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Negotiate\r\nWWW-Authenticate: NTLM\r\n"
        b'WWW-Authenticate: Basic realm="mail.example, x", charset="UTF-8"\r\nContent-Length: 0\r\n\r\n'
    )
    assert parse_auth_schemes(resp) == ["Negotiate", "NTLM", "Basic"]


def test_ntlm_from_real_httpsys_header() -> None:
    ch = ntlm_from_headers(parse_http_response(httpsys_challenge_response()))
    assert ch is not None and ch.netbios_computer == "DLP-TEST-R5" and ch.os_version == (10, 0, 20348)


def test_ntlm_from_headers_bad_token() -> None:
    resp = parse_http_response(
        b"HTTP/1.1 401 X\r\nWWW-Authenticate: NTLM " + base64.b64encode(b"NTLMSSP\x00\x02\x00\x00\x00" + b"\xff" * 60)
        + b"\r\nContent-Length: 0\r\n\r\n"
    )
    with pytest.raises(NTLMError):
        ntlm_from_headers(resp)
    plain = parse_http_response(b"HTTP/1.1 401 X\r\nWWW-Authenticate: NTLM\r\nContent-Length: 0\r\n\r\n")
    assert ntlm_from_headers(plain) is None


def test_host_header() -> None:
    assert host_header(ProbeContext(address="127.0.0.1", port=80)) == "127.0.0.1"
    assert host_header(ProbeContext(address="127.0.0.1", port=8080, hostname="mail.example")) == "mail.example:8080"
    assert host_header(ProbeContext(address="::1", port=443, implicit_tls=True)) == "[::1]"
    assert host_header(ProbeContext(address="::1", port=80, implicit_tls=True)) == "[::1]:80"


def test_build_request_refuses_injection() -> None:
    assert build_request("/", "h").startswith(b"GET / HTTP/1.1\r\nHost: h\r\n")
    for path, host in (("/a b", "h"), ("x", "h"), ("/", "h\r\nX: y")):
        with pytest.raises(ValueError):
            build_request(path, host)


def test_exchange_facts_from_owa_logon_page() -> None:
    """Synthetic (no public OWA capture exists): the headers and build path Exchange 2016 sends."""
    resp = parse_http_response(
        b"HTTP/1.1 200 OK\r\nServer: Microsoft-IIS/10.0\r\nX-OWA-Version: 15.1.2507.6\r\nX-FEServer: EXCH01\r\n"
        b"Content-Length: 120\r\n\r\n"
        + b'<title>Outlook</title><link href="/owa/auth/15.1.2507/themes/resources/owafont.css">'.ljust(120)
    )
    facts = exchange_facts(resp)
    assert facts["owa_version"] == "15.1.2507.6" and facts["fe_server"] == "EXCH01"
    assert facts["owa_build_path"] == "15.1.2507" and facts["owa_title"] == "Outlook"


# --------------------------------------------------------------------------- dialogue transcripts


def _resp(status: str, headers: list[str], body: bytes = b"") -> bytes:
    lines = [f"HTTP/1.1 {status}", *headers, f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _requests(sent: list[bytes]) -> list[str]:
    return [s.split(b"\r\n", 1)[0].decode() for s in sent]


def test_dialogue_nginx_like() -> None:
    page = b"<html><title>lab</title></html>"
    server = [_resp("200 OK", ["Server: nginx/1.22.1"], page),
              _resp("302 Moved Temporarily", ["Server: nginx/1.22.1", "Location: http://192.0.2.1/owa/auth/logon.aspx"],
                    b"<title>302 Found</title>")]
    server += [_resp("200 OK", ["Server: nginx/1.22.1"], page)] * (len(EXCHANGE_PATHS) - 1)
    run = run_dialogue(HTTPProbe(), server, port=80)
    assert run.ok and run.finding is not None
    f = run.finding
    assert (f.service, f.product, f.version) == ("http", "nginx", "1.22.1")
    assert _requests(run.sent) == ["GET / HTTP/1.1"] + [f"GET {p} HTTP/1.1" for p in EXCHANGE_PATHS]
    assert all(b"Host: 192.0.2.1\r\n" in s and b"Authorization" not in s for s in run.sent)
    assert f.details["owa"]["present"] is False
    assert f.details["requests"]["/owa/"]["status"] == 302
    assert "location_off_target" not in f.details["requests"]["/owa/"]


def test_dialogue_httpsys_ntlm_stops_after_challenge() -> None:
    """HTTP.sys asking for NTLM: one NEGOTIATE is sent, the real CHALLENGE parsed, nothing more."""
    challenge_401 = httpsys_challenge_response()
    bare_401 = re.sub(rb"WWW-Authenticate: NTLM [^\r]+", b"WWW-Authenticate: NTLM", challenge_401)
    assert bare_401 != challenge_401
    not_found = _resp("404 Not Found", ["Server: Microsoft-HTTPAPI/2.0"], b"<title>Not Found</title>")
    server = [bare_401] + [not_found] * len(EXCHANGE_PATHS) + [challenge_401]
    run = run_dialogue(HTTPProbe(), server, port=80, hostname="www.dlp-test.com")
    assert run.ok and run.finding is not None
    f = run.finding
    assert (f.product, f.version) == ("Microsoft HTTPAPI httpd", "2.0")
    assert len(run.sent) == 1 + len(EXCHANGE_PATHS) + 1
    auth = re.search(rb"Authorization: NTLM ([A-Za-z0-9+/=]+)", run.sent[-1])
    assert auth is not None and run.sent[-1].startswith(b"GET / HTTP/1.1")
    token = base64.b64decode(auth.group(1))
    assert token[:8] == b"NTLMSSP\x00" and struct.unpack_from("<I", token, 8)[0] == 1
    assert not any(b"TlRMTVNTUAADAAAA" in s for s in run.sent)  # never an AUTHENTICATE
    ntlm = f.details["ntlm"]
    assert ntlm["netbios_computer"] == "DLP-TEST-R5" and ntlm["os_version"] == "10.0.20348"
    assert ntlm["windows_version"] == "Windows Server 2022" and ntlm["path"] == "/"
    assert f.host_facts["windows_version"] == "Windows Server 2022"
    assert f.details["owa"]["present"] is False


def test_dialogue_owa_detected() -> None:
    """Synthetic Exchange 2016 OWA behind IIS (no public OWA capture exists to replay)."""
    iis = ["Server: Microsoft-IIS/10.0", "X-Powered-By: ASP.NET"]
    logon = (b'<html><head><title>Outlook</title><link rel="shortcut icon" '
             b'href="/owa/auth/15.1.2507/themes/resources/favicon.ico"></head></html>')
    server = [
        _resp("200 OK", iis, b"<title>IIS Windows Server</title>"),
        _resp("302 Found", [*iis, "X-FEServer: EXCH01", "Location: https://192.0.2.1/owa/auth/logon.aspx"]),
        _resp("200 OK", [*iis, "X-OWA-Version: 15.1.2507.6", "X-FEServer: EXCH01"], logon),
        _resp("401 Unauthorized", [*iis, "WWW-Authenticate: Negotiate", "WWW-Authenticate: NTLM"]),
        *[_resp("404 Not Found", iis)] * 3,
    ]
    run = run_dialogue(HTTPProbe(), server, port=443, implicit_tls=True,
                       tls=TLSFacts(version="TLSv1.2", cipher="x"))
    f = run.finding
    assert f is not None and run.error is None
    owa = f.details["owa"]
    assert owa["present"] and owa["build"] == "15.1.2507.6" and owa["release"] == "Exchange Server 2016"
    assert owa["fe_server"] == "EXCH01"
    assert f.extrainfo is not None and "Exchange Server 2016 build 15.1.2507.6" in f.extrainfo
    assert f.details["tells"]["x-powered-by"] == "ASP.NET"
    assert f.details["requests"]["/ews/exchange.asmx"]["auth"] == ["Negotiate", "NTLM"]
    # /ews/ offered NTLM; the NEGOTIATE goes there after the paths, then the stream ends: the
    # finding survives, marked as stopped
    assert run.sent[-1].startswith(b"GET /ews/exchange.asmx") and b"Authorization: NTLM" in run.sent[-1]
    assert "stopped" in f.details


def test_dialogue_connection_close_keeps_finding() -> None:
    server = [_resp("200 OK", ["Server: Apache/2.4.71 (Debian)", "Connection: close"], b"<title>a</title>")]
    run = run_dialogue(HTTPProbe(), server, port=80)
    assert run.ok and run.finding is not None and run.finding.product == "Apache httpd"
    assert len(run.sent) == 1 and "not reusable" in run.finding.details["stopped"]


def test_dialogue_closed_midway_keeps_finding() -> None:
    server = [_resp("200 OK", ["Server: nginx/1.22.1"]), b"HTTP/1.1 404 Not"]
    run = run_dialogue(HTTPProbe(), server, port=80)
    assert run.ok and run.finding is not None and run.finding.version == "1.22.1"
    assert run.finding.details["stopped"].startswith("RecvClosed")


def test_dialogue_malformed_challenge_is_recorded_not_raised() -> None:
    bad = base64.b64encode(b"NTLMSSP\x00\x02\x00\x00\x00" + struct.pack("<HHI", 10, 10, 0xFFFFFF) + bytes(40))
    server = [_resp("401 Unauthorized", ["WWW-Authenticate: NTLM"])] + [_resp("404 Not Found", [])] * 6
    server += [_resp("401 Unauthorized", ["WWW-Authenticate: NTLM " + bad.decode()])]
    run = run_dialogue(HTTPProbe(), server, port=80)
    assert run.ok and run.finding is not None
    assert "ntlm" not in run.finding.details and "ntlm_error" in run.finding.details


def test_dialogue_not_http() -> None:
    run = run_dialogue(HTTPProbe(), b"220 mail.lab.example.test ESMTP Postfix\r\n", port=80)
    assert isinstance(run.error, NotThisProtocol)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_dialogue(data: bytes) -> None:
    for stream in (data, _resp("200 OK", ["Server: x"]) + data):
        run = run_dialogue(HTTPProbe(), stream, port=80)
        assert run.error is None or isinstance(run.error, NotThisProtocol | RecvClosed)


def test_real_challenge_matches_ntlm_module() -> None:
    """The probe and scanner.ntlm agree on the capture's token."""
    msg = httpsys_challenge_response()
    token = re.search(rb"WWW-Authenticate: NTLM ([A-Za-z0-9+/=]+)", msg)
    assert token is not None
    assert parse_challenge(base64.b64decode(token.group(1))) == ntlm_from_headers(parse_http_response(msg))


def test_replay_httpsys_capture() -> None:
    """The real HTTP.sys/IIS conversation (curl's NEGOTIATE already in it): HTTP.sys, IIS 10 behind
    it, the NTLM facts from the challenge, and no OWA."""
    stream = next(s for s in server_streams(HTTPSYS) if s.startswith(b"HTTP/1.1 401") and b"HTTPAPI" in s)
    run = run_dialogue(HTTPProbe(), stream, port=80, hostname="www.dlp-test.com")
    f = run.finding
    assert f is not None and isinstance(run.error, RecvClosed | type(None))
    assert (f.product, f.version) == ("Microsoft HTTPAPI httpd", "2.0")
    assert "Microsoft-IIS/10.0" in f.details["servers"]
    assert f.details["ntlm"]["netbios_computer"] == "DLP-TEST-R5"
    assert f.details["ntlm"]["windows_version"] == "Windows Server 2022"
    assert f.details["owa"]["present"] is False


def test_replay_apache_capture() -> None:
    stream = server_streams("http-apache-2.4.3-fedora-vlan0.pcap")[0]
    run = run_dialogue(HTTPProbe(), stream, port=80)
    f = run.finding
    assert f is not None and (f.product, f.version, f.extrainfo) == ("Apache httpd", "2.4.3", "(Fedora)")
    assert f.details["requests"]["/"]["status"] == 200 and "ntlm" not in f.details


def test_dialogue_negotiate_only_sends_raw_ntlmssp_under_negotiate() -> None:
    server = [_resp("401 Unauthorized", ["WWW-Authenticate: Negotiate"])] + [_resp("404 Not Found", [])] * 6
    server += [_resp("401 Unauthorized", ["WWW-Authenticate: Negotiate"])]
    run = run_dialogue(HTTPProbe(), server, port=80)
    assert run.ok and run.finding is not None
    assert run.sent[-1].startswith(b"GET / ") and b"Authorization: Negotiate TlRMTVNTUAABAAAA" in run.sent[-1]
    assert "ntlm" not in run.finding.details and "no NTLM challenge" in run.finding.details["ntlm_error"]
