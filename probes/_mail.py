"""Pieces the mail and news probes (smtp, imap, pop3, nntp) share: the STARTTLS upgrade, the
dot-terminated capability list of POP3's ``CAPA`` and NNTP's ``CAPABILITIES``, the OS hint in a
greeting. Pure functions and dialogue fragments; no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from scanner.api import Finding, Framer, Recv, Send, StartTLS, Step, TLSFailed
from scanner.textproto import split_lines

__all__ = ["IMPLEMENTATION", "TLSUpgrade", "os_hint", "parse_capability_list", "starttls_and_ask_again"]

#: most capability keywords kept from one list (a hostile server may send thousands)
MAX_CAPABILITIES = 200

#: an IMPLEMENTATION capability value (POP3 CAPA, RFC 2449 §6.9; NNTP CAPABILITIES, RFC 3977 §5.2:
#: the server's own implementation name): "name version" with a real separator (space, slash,
#: underscore or hyphen) and a version that starts with a digit
IMPLEMENTATION = re.compile(r"([A-Za-z][\w\-]*?(?: [A-Za-z][\w\-]*?)*)[ _/-]v?(\d+(?:\.\d+)+[\w.\-]*)")

#: a parenthesised OS or distribution name in a greeting: "ESMTP Postfix (Debian/GNU)",
#: "Dovecot (Ubuntu) ready."
_OS_HINT = re.compile(r"\(([^()]*(?:Debian|Ubuntu|Red Hat|CentOS|FreeBSD|GNU)[^()]*)\)")


def os_hint(greeting: str) -> str | None:
    """The OS or distribution a greeting names in parentheses (``Debian/GNU``), None if none."""
    m = _OS_HINT.search(greeting)
    return m.group(1) if m else None


def parse_capability_list(msg: bytes, ok: str) -> dict[str, str]:
    """Parse a dot-terminated capability reply into keyword (upper case) -> parameters.

    ``ok`` is the status that opens a list (POP3 ``+OK``, RFC 2449; NNTP ``101``, RFC 3977); any
    other first line gives ``{}``. At most :data:`MAX_CAPABILITIES` keywords are kept.
    """
    lines = split_lines(msg)
    if not lines or not lines[0].startswith(ok):
        return {}
    caps: dict[str, str] = {}
    for line in lines[1:]:
        if line == ".":
            break
        kw, _, params = line.partition(" ")
        if kw and len(caps) < MAX_CAPABILITIES:
            caps[kw.upper()] = params.strip()
    return caps


@dataclass(frozen=True)
class TLSUpgrade:
    """How a STARTTLS attempt ended.

    ``reply`` is the framed answer to the capability command re-issued inside TLS (None when TLS
    did not come up); ``failed`` is True when the server agreed but the handshake failed, after
    which the connection is unusable.
    """

    reply: bytes | None = None
    failed: bool = False


def starttls_and_ask_again(
    finding: Finding,
    command: bytes,
    answer: Framer,
    refusal: Callable[[bytes], str | None],
    again: bytes,
    again_answer: Framer,
) -> Generator[Step, Any, TLSUpgrade]:
    """Send the STARTTLS ``command``, start TLS when accepted, then send ``again`` inside TLS.

    ``refusal`` parses the framed answer (raising ``NotThisProtocol`` on garbage) and returns None
    when the server agreed, else the text kept as ``details["starttls_refused"]``. A failed
    handshake is kept as ``details["starttls_error"]``.
    """
    yield Send(command)
    refused = refusal((yield Recv(answer)))
    if refused is not None:
        finding.details["starttls_refused"] = refused
        return TLSUpgrade()
    try:
        yield StartTLS()
    except TLSFailed as exc:
        finding.details["starttls_error"] = str(exc)
        return TLSUpgrade(failed=True)
    yield Send(again)
    return TLSUpgrade(reply=bytes((yield Recv(again_answer))))
