"""The DNS probe's passive hooks (pcap replay of conversations it did not lead). Part of :mod:`probes.dns`.

DNS is recognised from any well-formed message, not only from answers to our own questions: a
GSS-TSIG ``TKEY`` negotiation, a signed update, another resolver's lookups. The wire format is
dnspython's (``dns.message.from_wire``, TSIG signatures parsed but not checked: we hold no key);
this module only splits captured bytes into messages:

* a TCP stream is a chain of messages, each behind a 2-byte big-endian length (RFC 1035 4.2.2);
* a UDP datagram is one message.

Header (RFC 1035 4.1.1), 12 bytes: ID (16 bits), flags (QR 1, OPCODE 4, AA TC RD RA Z AD CD,
RCODE 4), then QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT (16 bits each); the question follows: a name
as length-prefixed labels ending with a zero byte, then QTYPE and QCLASS (16 bits each).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import dns.message
import dns.opcode
import dns.rdatatype

from probes._replay import record_passive_ntlm
from probes.dns.classify import identify
from probes.dns.wire import _DECODE_ERRORS, HEADER_LEN, MAX_PASSIVE, DNSReply, _cap_records, parse_dns_reply
from scanner.api import Finding, NotThisProtocol

__all__ = ["dns_client_hint", "dns_pair_key", "identify_dns_passive", "split_dns_messages"]

#: opcodes a client starts a conversation with: QUERY, NOTIFY (RFC 1996), UPDATE (RFC 2136)
_CLIENT_OPCODES = frozenset({0, 4, 5})
#: longest label (RFC 1035 2.3.4) and most labels looked at in a name
_MAX_LABEL = 63
_MAX_LABELS = 128
#: client queries described (and parsed) at most
_MAX_DESCRIBED = 16
#: server messages parsed at most: a fallback and an enrichment, not the dialogue (which reads
#: up to MAX_PASSIVE): the first messages of a conversation tell the product as well
MAX_PASSIVE_MESSAGES = 64


def _question_key(d: bytes) -> tuple[bytes, tuple[bytes, ...], bytes] | None:
    """(id, lower-cased labels, qtype+qclass) of a message with one question, or None."""
    if len(d) < HEADER_LEN + 5 or int.from_bytes(d[4:6], "big") != 1:
        return None
    pos, labels = HEADER_LEN, []
    for _ in range(_MAX_LABELS):
        if pos >= len(d):
            return None
        n = d[pos]
        if n == 0:
            pos += 1
            break
        if n > _MAX_LABEL:
            return None  # a compression pointer cannot appear in the first name of a message
        labels.append(d[pos + 1 : pos + 1 + n].lower())
        pos += 1 + n
    else:
        return None
    if pos + 4 > len(d):
        return None
    return d[:2], tuple(labels), d[pos : pos + 4]


def dns_pair_key(datagram: bytes) -> Hashable | None:
    """The pairing key of a DNS datagram: ("dns", id, question); None when not DNS-shaped."""
    key = _question_key(datagram)
    return None if key is None else ("dns", *key)


def dns_client_hint(data: bytes) -> bool:
    """Do a TCP client's first bytes look like a length-prefixed DNS query, update or notify?

    The 2-byte prefix must be at least a header plus a question, QR clear, the opcode one a
    client starts with, exactly one question and no answers, and the name's labels well-formed as
    far as ``data`` goes (only the first bytes are given, so the name may be cut short).
    """
    if len(data) < 2 + HEADER_LEN + 1:
        return False
    if int.from_bytes(data[:2], "big") < HEADER_LEN + 5:
        return False
    flags = data[4]
    if flags & 0x80 or (flags >> 3) & 0x0F not in _CLIENT_OPCODES:
        return False
    if data[6:8] != b"\x00\x01" or data[8:10] != b"\x00\x00":
        return False
    pos = 2 + HEADER_LEN
    for _ in range(_MAX_LABELS):
        if pos >= len(data):
            return True  # cut short by the hint's window, well-formed so far
        n = data[pos]
        if n == 0:
            return True
        if n > _MAX_LABEL:
            return False
        pos += 1 + n
    return False


def split_dns_messages(chunk: bytes, limit: int = MAX_PASSIVE) -> list[tuple[bytes, dns.message.Message]]:
    """The well-formed DNS messages (raw, parsed) in one captured element: those of the chain of
    length-prefixed messages of a TCP stream (a last message cut by the capture's end is
    dropped), else, when not one of them parses, the whole element as one datagram. At most
    ``limit`` messages."""
    tcp: list[tuple[bytes, dns.message.Message]] = []
    pos = 0
    for _ in range(limit):
        if pos + 2 > len(chunk):
            break
        length = int.from_bytes(chunk[pos : pos + 2], "big")
        if length < HEADER_LEN or pos + 2 + length > len(chunk):
            break
        raw = chunk[pos + 2 : pos + 2 + length]
        msg = _parse(raw)
        if msg is None:
            break  # a junk prefix: the rest cannot be framed
        tcp.append((raw, msg))
        pos += 2 + length
    if tcp:
        return tcp
    whole = _parse(chunk)
    return [(chunk, whole)] if whole is not None else []


def _parse(data: bytes) -> dns.message.Message | None:
    """One well-formed DNS message (TSIG parsed, not verified), or None."""
    if len(data) < HEADER_LEN:
        return None
    capped, cut = _cap_records(data)
    try:
        return dns.message.from_wire(capped, ignore_trailing=cut > 0, keyring=False)
    except _DECODE_ERRORS:
        return None


def _describe(msg: dns.message.Message) -> str:
    """``QUERY name TYPE`` (or ``UPDATE zone SOA``...): one line per message, for the details."""
    op = dns.opcode.to_text(msg.opcode())
    if not msg.question:
        return op
    q = msg.question[0]
    return f"{op} {q.name.to_text()[:120]} {dns.rdatatype.to_text(q.rdtype)}"


def _negotiation(messages: Sequence[dns.message.Message]) -> dict[str, Any]:
    """What TKEY/TSIG records the messages carry (a GSS-TSIG negotiation, signed traffic)."""
    out: dict[str, Any] = {}
    for m in messages:
        if m.had_tsig:
            out["tsig_signed"] = out.get("tsig_signed", 0) + 1
        for section in (m.answer, m.additional):
            for rrset in section:
                if rrset.rdtype != dns.rdatatype.TKEY:
                    continue
                for rd in rrset:
                    out.setdefault(
                        "tkey",
                        {"algorithm": rd.algorithm.to_text(), "mode": int(rd.mode), "error": int(rd.error)},
                    )
    return out


def identify_dns_passive(server_messages: Sequence[bytes], client_messages: Sequence[bytes]) -> Finding | None:
    """DNS from any well-formed messages of a conversation (see :meth:`probes.dns.DNSProbe.identify_passive`).

    Server responses are identified as the live dialogue's replies are (:func:`identify`, with
    nothing known of the queries' EDNS); a server side that holds bytes but no well-formed
    response is not DNS. With no server bytes at all, well-formed client queries name DNS at a
    low confidence (the caller marks the result "only the client was seen").
    """
    replies: list[DNSReply] = []
    parsed_server: list[dns.message.Message] = []
    server_bytes = False
    for chunk in server_messages:
        server_bytes = server_bytes or bool(chunk)
        if len(parsed_server) >= MAX_PASSIVE_MESSAGES:
            continue
        for raw, msg in split_dns_messages(chunk, MAX_PASSIVE_MESSAGES - len(parsed_server)):
            if not msg.flags & 0x8000:
                continue  # QR clear: a query where the server speaks
            parsed_server.append(msg)
            try:
                replies.append(parse_dns_reply(raw))
            except NotThisProtocol:
                continue
    parsed_client = [
        m
        for chunk in client_messages[:_MAX_DESCRIBED]
        for _, m in split_dns_messages(chunk, _MAX_DESCRIBED)
        if not m.flags & 0x8000
    ][:_MAX_DESCRIBED]
    if replies:
        f = identify(replies, queries_had_edns=None)
        f.details["queries_answered"] = len(replies)
        neg = _negotiation(parsed_server + parsed_client)
        if neg:
            f.details.update(neg)
            f.add("passive", f"TKEY/TSIG: {neg}")
        if parsed_client:
            f.details["client_queries"] = [_describe(m) for m in parsed_client[:_MAX_DESCRIBED]]
        record_passive_ntlm(f, server_messages, "NTLMSSP CHALLENGE in a TKEY answer")
        return f
    if server_bytes or not parsed_client:
        return None
    f = Finding(service="dns", confidence=3)
    f.details["client_queries"] = [_describe(m) for m in parsed_client[:_MAX_DESCRIBED]]
    f.add("client", f"{len(parsed_client)} well-formed DNS message(s) from the client")
    return f
