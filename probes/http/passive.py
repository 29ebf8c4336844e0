"""The HTTP probe's passive hooks (pcap replay of conversations it did not lead). Part of :mod:`probes.http`.

A client opens with a request line, ``METHOD SP request-target SP HTTP/1.x`` (RFC 9112 3); the
server answers with a status line, ``HTTP/1.x SP code``. An NTLM (or Negotiate wrapping NTLM)
authentication carries the server's CHALLENGE base64-encoded in ``WWW-Authenticate``: its names and
Windows build are read wherever a response holds one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from probes._replay import record_passive_ntlm
from scanner.api import Finding
from scanner.textproto import decode_text

__all__ = ["http_client_hint", "identify_http_passive"]

#: request methods (RFC 9110 9, RFC 4918 WebDAV, RFC 5789 PATCH) a client opens with
_METHODS = (
    b"GET ", b"POST ", b"HEAD ", b"PUT ", b"DELETE ", b"OPTIONS ", b"CONNECT ", b"TRACE ", b"PATCH ",
    b"PROPFIND ", b"PROPPATCH ", b"MKCOL ", b"COPY ", b"MOVE ", b"LOCK ", b"UNLOCK ", b"RPC_IN_DATA ",
    b"RPC_OUT_DATA ",
)
_REQUEST_LINE = re.compile(rb"([A-Z_]{3,16}) (\S{1,2048}) HTTP/1\.[01]\r?\n")
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] [1-5][0-9][0-9]")
#: requests described in a client-only result at most
_MAX_REQUESTS = 8


def http_client_hint(data: bytes) -> bool:
    """A request line's method, then a target (``/``, ``*``, a URL or CONNECT's host:port)."""
    for method in _METHODS:
        if data.startswith(method):
            rest = data[len(method) : len(method) + 1]
            return rest != b"" and rest not in (b" ", b"\r", b"\n")
    return False


def identify_http_passive(server_messages: Sequence[bytes], client_messages: Sequence[bytes]) -> Finding | None:
    """HTTP from a server's status line (with an NTLM CHALLENGE of ``WWW-Authenticate``) or, when
    only the client was captured, from its request lines. Names no product (the dialogue reads
    ``Server``)."""
    server = next((bytes(m) for m in server_messages if m), b"")
    if server:
        if not _STATUS_LINE.match(server):
            return None
        f = Finding(service="http", confidence=4)
        f.add("status line", server.split(b"\n", 1)[0][:200])
        record_passive_ntlm(f, server_messages, "WWW-Authenticate NTLM challenge")
        return f
    client = bytes(client_messages[0][:65536]) if client_messages else b""
    # request lines start a line (a body may hold anything)
    requests = [m for m in _REQUEST_LINE.finditer(client) if m.start() == 0 or client[m.start() - 1] == 0x0A]
    if not requests or requests[0].start() != 0:
        return None
    f = Finding(service="http", confidence=3)
    f.details["client_requests"] = [
        f"{decode_text(m.group(1))} {decode_text(m.group(2))[:200]}" for m in requests[:_MAX_REQUESTS]
    ]
    f.add("client", f.details["client_requests"][0])
    return f
