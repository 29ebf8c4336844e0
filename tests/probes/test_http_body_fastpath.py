"""The common reply is framed (``_plain_frame``) and its body sliced without h11: both must give
exactly what h11 gives (``_body_of``, the h11 cursor) for every response."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from probes.http.wire import BODY_CAP, _body_of, _plain_frame, _ResponseCursor, frame_http_response, parse_http_response
from scanner.api import NotThisProtocol
from scanner.testing import feed_bytewise


def _framed(stream: bytes) -> bytes | None:
    """The first message the probe's framer cuts from ``stream`` (None: not HTTP / incomplete)."""
    cursor = frame_http_response.cursor()
    try:
        n = cursor.feed(stream)
    except NotThisProtocol:
        return None
    return None if n is None else stream[:n]


def _check(stream: bytes) -> None:
    message = _framed(stream)
    if message is None:
        return
    try:
        resp = parse_http_response(message)
    except NotThisProtocol:
        return
    if resp.status >= 200 and resp.status not in (204, 304) and resp.header("content-length") is not None:
        assert (resp.body, resp.body_read) == _body_of(message)


def test_common_reply_matches_h11() -> None:
    body = b"<html><title>lab</title></html>"
    stream = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    resp = parse_http_response(stream)
    assert (resp.body, resp.body_read, resp.reusable) == (body, True, True)
    _check(stream)
    _check(stream + b"HTTP/1.1 404 Not Found\r\n")


def test_body_over_cap_is_cut_and_not_reusable() -> None:
    stream = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (BODY_CAP + 10) + b"x" * (BODY_CAP + 10)
    message = _framed(stream)
    assert message is not None
    resp = parse_http_response(message)
    assert len(resp.body) == BODY_CAP and not resp.body_read and not resp.reusable
    assert (resp.body, resp.body_read) == _body_of(message)


def test_odd_blank_lines_take_the_h11_path() -> None:
    # LF-only and mixed line ends: the head end is then h11's to find
    for stream in (b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", b"HTTP/1.1 200 OK\r\nContent-Length: 2\n\r\nok"):
        _check(stream)


_HEAD = st.lists(
    st.sampled_from([b"Server: x", b"Content-Length: 3", b"Content-Length: 0", b"Content-Length: 70000",
                     b"Connection: close", b"X: a\n", b"", b"Transfer-Encoding: chunked", b"Y:\r"]),
    max_size=5,
)


@settings(max_examples=300, deadline=None)
@given(_HEAD, st.sampled_from([b"\r\n", b"\n"]), st.binary(max_size=80))
def test_fuzz_matches_h11(headers: list[bytes], eol: bytes, tail: bytes) -> None:
    stream = eol.join([b"HTTP/1.1 200 OK", *headers]) + eol + eol + tail
    _check(stream)


def test_bytewise_framing_unchanged() -> None:
    body = b"abc"
    stream = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n" + body
    n = feed_bytewise(frame_http_response, stream)
    assert n == len(stream) and parse_http_response(stream[:n]).body == body


def _h11_frame(stream: bytes) -> int | str | None:
    """The framed length h11 alone gives (the plain path switched off); "reject" when it refuses."""
    cursor = _ResponseCursor()
    cursor.tried_plain = True
    try:
        return cursor.feed(stream)
    except NotThisProtocol:
        return "reject"


def _check_frame(stream: bytes) -> None:
    plain = _plain_frame(stream)
    if plain is not None:
        assert plain == _h11_frame(stream)


def test_plain_frame_common_replies() -> None:
    ok = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 3\r\n\r\nabc"
    assert _plain_frame(ok) == len(ok) == _h11_frame(ok)
    assert _plain_frame(ok + b"HTTP/1.1") == len(ok)
    assert _plain_frame(ok[:-1]) is None  # body incomplete: h11's
    for odd in (ok.replace(b"Server", b"Transfer-Encoding: chunked\r\nServer"),  # TE: h11's
                ok.replace(b"Server: nginx", b"Content-Length: 3"),  # two lengths: h11's
                ok.replace(b"200 OK", b"204 No Content"), ok.replace(b"Server:", b"Server :"),
                ok.replace(b"nginx\r\n", b"nginx\r\n  folded\r\n"), ok.replace(b"\r\n\r\n", b"\n\n")):
        assert _plain_frame(odd) is None
        _check_frame(odd)


_LINES = st.lists(
    st.sampled_from([b"Server: x", b"Content-Length: 3", b"content-length:0 ", b"Content-Length: 70000",
                     b"Content-Length: 3, 3", b"Connection: close", b"X: a\x80b", b"X:\x7f", b"Bad Name: 1",
                     b" folded", b"Transfer-Encoding: chunked", b"Y: \t", b"Z:a\tb"]),
    max_size=6,
)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from([b"HTTP/1.1 200 OK", b"HTTP/1.0 404 Not Found", b"HTTP/1.1 304 x", b"HTTP/1.1 200",
                        b"HTTP/1.1 101 Switching", b"HTTP/2.0 200 OK", b"HTTP/1.1 500 \xff"]),
       _LINES, st.binary(max_size=8))
def test_fuzz_plain_frame_matches_h11(status: bytes, headers: list[bytes], tail: bytes) -> None:
    stream = b"\r\n".join([status, *headers]) + b"\r\n\r\nabc" + tail
    _check_frame(stream)
    _check(stream)
