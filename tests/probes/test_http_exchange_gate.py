"""The HTTP probe asks the Exchange paths beyond ``/owa/`` only where a reply hints at Exchange.

Most web servers are not Exchange: they now get ``GET /`` and ``GET /owa/`` (2 requests, was 7);
every hint named in :func:`probes.http.wire.exchange_hint` brings back the full list, in order.
The Exchange detection transcripts themselves are in tests/probes/test_http.py (unchanged).
"""

from __future__ import annotations

import pytest

from probes.http import EXCHANGE_FIRST_PATHS, EXCHANGE_PATHS, HTTPProbe
from scanner.testing import run_dialogue


def _resp(status: str, headers: list[str], body: bytes = b"") -> bytes:
    lines = [f"HTTP/1.1 {status}", *headers, f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _paths(sent: list[bytes]) -> list[str]:
    return [s.split(b" ", 2)[1].decode() for s in sent]


PLAIN = _resp("200 OK", ["Server: nginx/1.22.1"], b"<title>lab</title>")
NOT_FOUND = _resp("404 Not Found", ["Server: nginx/1.22.1"])


@pytest.mark.parametrize("server", ["nginx/1.22.1", "Apache/2.4.62 (Debian)", None])
def test_non_exchange_server_gets_two_requests(server: str | None) -> None:
    headers = [f"Server: {server}"] if server else []
    replies = [_resp("200 OK", headers, b"<title>x</title>"), _resp("404 Not Found", headers)] * 10
    run = run_dialogue(HTTPProbe(), replies, port=80)
    assert run.ok and run.finding is not None
    assert _paths(run.sent) == ["/", *EXCHANGE_FIRST_PATHS] == ["/", "/owa/"]
    assert len(run.sent) < 1 + len(EXCHANGE_PATHS)
    assert run.finding.details["owa"] == {"present": False, "probed": ["/owa/"]}


def test_unrelated_redirect_and_basic_auth_are_no_hint() -> None:
    root = _resp("302 Found", ["Server: nginx", "Location: /login?next=/"])
    owa = _resp("401 Unauthorized", ["Server: nginx", 'WWW-Authenticate: Basic realm="owa"'])
    run = run_dialogue(HTTPProbe(), [root, owa] + [NOT_FOUND] * 10, port=80)
    assert _paths(run.sent) == ["/", "/owa/"]


@pytest.mark.parametrize(
    "root_headers",
    [
        ["Server: Microsoft-IIS/10.0"],
        ["Server: Microsoft-HTTPAPI/2.0"],
        ["Server: nginx", "X-Powered-By: ASP.NET"],
        ["X-AspNet-Version: 4.0.30319"],
        ["WWW-Authenticate: Negotiate"],
        ["Server: nginx", "Location: https://mail.example.test/owa/"],
        ["Location: /exchweb/bin/auth/owalogon.asp"],
        ["Location: /Exchange"],
        ["Server: nginx", "X-FEServer: EXCH01"],
    ],
)
def test_root_hint_asks_every_path_in_order(root_headers: list[str]) -> None:
    status = "401 Unauthorized" if any(h.startswith("WWW-") for h in root_headers) else "302 Found"
    replies = [_resp(status, root_headers)] + [NOT_FOUND] * 20
    run = run_dialogue(HTTPProbe(), replies, port=80)
    assert run.finding is not None
    sent = _paths(run.sent)
    # (a Negotiate offer at ``/`` also brings the NEGOTIATE there at the end)
    assert sent[: 1 + len(EXCHANGE_PATHS)] == ["/", *EXCHANGE_PATHS]
    assert run.finding.details["owa"]["probed"] == list(EXCHANGE_PATHS)


def test_owa_reply_hint_asks_the_rest() -> None:
    """A proxy hiding IIS at ``/`` but passing ``/owa/`` through: its reply brings the rest."""
    owa = _resp("302 Found", ["Server: nginx", "Location: https://mail.example.test/owa/auth/logon.aspx"])
    run = run_dialogue(HTTPProbe(), [PLAIN, owa] + [NOT_FOUND] * 20, port=80)
    assert _paths(run.sent) == ["/", *EXCHANGE_PATHS]

