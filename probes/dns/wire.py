"""DNS wire format: queries, the DNS-over-TCP/UDP framers and the reply parser (dnspython under size
caps). Part of the :mod:`probes.dns` package (what it sends and collects is described there)."""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.reversename

from scanner.api import (
    NotThisProtocol,
    prefix_framer,
)

__all__ = [
    "BUILTIN_ZONE_QUERY",
    "CHAOS_NAMES",
    "DNSReply",
    "EDNS_PAYLOAD",
    "MAX_UNMATCHED",
    "RR",
    "UDP_TRIES",
    "build_query",
    "frame_dns_tcp",
    "frame_dns_udp",
    "parse_dns_reply",
    "reply_matches",
    "tcp_wrap",
]


#: EDNS0 UDP payload we advertise (the DNS flag day 2020 value)
EDNS_PAYLOAD = 1232
#: special-use name (RFC 6761) asked when the version is hidden: a local answer, never recursion
BUILTIN_ZONE_QUERY = "invalid."
#: the CHAOS TXT names servers use to tell their version / identity
CHAOS_NAMES = ("version.bind", "hostname.bind", "id.server", "version.server")
#: unmatched (wrong id/question) or malformed replies read per query before giving up on it
MAX_UNMATCHED = 4
#: sends of one query over UDP (the first plus one retry) before RecvTimeout is passed upward
UDP_TRIES = 2
#: most SOA queries for candidate zones
MAX_ZONE_QUERIES = 4
#: most resource records kept per section of one reply (the rest are only counted)
MAX_RRS = 64
#: longest RR text kept
MAX_RR_TEXT = 512
#: after this many queries that got no usable answer, the dialogue stops asking
MAX_UNANSWERED = 2
#: largest DNS-over-TCP message: 2-byte length prefix plus up to 65535 bytes
TCP_MAX = 2 + 0xFFFF
#: most replies read by the passive (replay) dialogue
MAX_PASSIVE = 256
#: a DNS header is 12 bytes; anything shorter cannot be DNS
HEADER_LEN = 12


# ----------------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class RR:
    """One resource record of a reply, as text (owner name with its final dot)."""

    name: str
    rdtype: str
    rdclass: str
    ttl: int
    text: str


@dataclass(frozen=True, slots=True)
class DNSReply:
    """One parsed DNS response."""

    id: int
    opcode: str
    #: the full (EDNS-extended) rcode as text: NOERROR, NXDOMAIN, REFUSED, NOTIMP, FORMERR...
    rcode: str
    #: header flags set, as text (QR, AA, TC, RD, RA, AD, CD)
    flags: tuple[str, ...]
    #: (name with final dot, lower-cased; type; class) of the first question, None when empty
    question: tuple[str, str, str] | None
    answer: tuple[RR, ...] = ()
    authority: tuple[RR, ...] = ()
    additional: tuple[RR, ...] = ()
    #: an OPT record came back
    edns: bool = False
    #: the UDP payload size the server advertised in its OPT record (0 without OPT)
    payload: int = 0
    #: the NSID option's bytes, None when absent
    nsid: bytes | None = None
    #: extended DNS error codes (RFC 8914)
    ede: tuple[int, ...] = ()
    #: wire size of the message
    size: int = 0
    #: records left out because a section held more than MAX_RRS
    dropped: int = 0

    @property
    def qr(self) -> bool:
        """True when this is a response (QR bit)."""
        return "QR" in self.flags

    @property
    def aa(self) -> bool:
        """True when the server says it is authoritative (AA bit)."""
        return "AA" in self.flags


# ------------------------------------------------------------------------------ build / frame


def build_query(
    name: str,
    rdtype: str,
    rdclass: str = "IN",
    *,
    qid: int,
    edns: bool = True,
    nsid: bool = False,
    rd: bool = False,
) -> bytes:
    """Build one query in wire format (no TCP length prefix).

    ``qid`` is the 16-bit message id (take it from ``ctx.rng``); ``edns`` adds an OPT record with
    payload :data:`EDNS_PAYLOAD`, ``nsid`` adds an empty NSID option to it; ``rd`` sets
    recursion desired (off by default: the probe never asks a server to recurse).
    """
    template = _query_template(name, rdtype, rdclass, edns, nsid, rd)
    return (qid & 0xFFFF).to_bytes(2, "big") + template[2:]


@functools.lru_cache(maxsize=256)
def as_database_reply(msg: bytes, udp: bool) -> bytes:
    """The ``version.bind`` reply as the service database expects it: the reply to nmap's own
    query, which carries no EDNS. Ours does (for NSID and the hidden-version rules), and about a
    fifth of the database's version.bind lines are anchored at the end of the reply, where the OPT
    record sits; so the OPT record is dropped (dnspython re-encodes the rest). Unparseable: as is."""
    wire = msg if udp else msg[2:]
    try:
        m = dns.message.from_wire(wire)
        if m.edns < 0:
            return msg
        m.use_edns(False)
        out = m.to_wire()
    except (dns.exception.DNSException, ValueError):
        return msg
    return out if udp else len(out).to_bytes(2, "big") + out


def _query_template(name: str, rdtype: str, rdclass: str, edns: bool, nsid: bool, rd: bool) -> bytes:
    """The query's wire bytes with id 0 (built once by dnspython, then only the id changes)."""
    qid = 0
    options: list[dns.edns.Option] | None = [dns.edns.GenericOption(dns.edns.NSID, b"")] if nsid else None
    if edns or nsid:
        msg = dns.message.make_query(
            name, rdtype, rdclass, use_edns=0, payload=EDNS_PAYLOAD, options=options, id=qid & 0xFFFF
        )
    else:
        # (dnspython turns EDNS on whenever a payload or options are passed, so pass neither)
        msg = dns.message.make_query(name, rdtype, rdclass, use_edns=False, id=qid & 0xFFFF)
    if not rd:
        msg.flags &= ~dns.flags.RD
    return msg.to_wire()


def tcp_wrap(wire: bytes) -> bytes:
    """Prefix a DNS message with its 2-byte length for DNS over TCP (RFC 1035 4.2.2)."""
    if len(wire) > 0xFFFF:
        raise ValueError("DNS message longer than 65535 bytes")
    return len(wire).to_bytes(2, "big") + wire


@prefix_framer
def frame_dns_tcp(buf: bytes) -> int | None:
    """Frame one DNS-over-TCP message: 2-byte big-endian length, then that many bytes.

    Returns the length including the prefix, ``None`` for "need more"; a declared length shorter
    than a DNS header is not DNS.
    """
    if len(buf) < 2:
        return None
    length = int.from_bytes(buf[:2], "big")
    if length < HEADER_LEN:
        raise NotThisProtocol(f"DNS/TCP length prefix {length} is shorter than a DNS header")
    # byte 2 of the message (buf[4]) holds QR: a reply always has it, so a text protocol
    # ("HTTP/1.1 ...": '/' there) is rejected at once instead of waiting for 18516 bytes
    if len(buf) > 4 and not buf[4] & 0x80:
        raise NotThisProtocol("QR bit clear: not a DNS response")
    if len(buf) < 2 + length:
        return None
    return 2 + length


@prefix_framer
def frame_dns_udp(buf: bytes) -> int | None:
    """Frame a UDP datagram: the whole datagram is one message (the parser judges it)."""
    return len(buf) if buf else None


# ------------------------------------------------------------------------------------ parse


def _rrs(sections: Iterable[Any]) -> tuple[tuple[RR, ...], int]:
    """RRsets of one section as RR records, bounded by MAX_RRS; returns (records, dropped)."""
    out: list[RR] = []
    dropped = 0
    for rrset in sections:
        owner = rrset.name.to_text().lower()
        rdtype = dns.rdatatype.to_text(rrset.rdtype)
        rdclass = dns.rdataclass.to_text(rrset.rdclass)
        for rdata in rrset:
            if len(out) >= MAX_RRS:
                dropped += 1
                continue
            out.append(RR(owner, rdtype, rdclass, int(rrset.ttl), rdata.to_text()[:MAX_RR_TEXT]))
    return tuple(out), dropped


#: most records handed to dnspython's decoder: it adds each record to its RRset with a duplicate
#: check, so its cost grows with the square of an RRset's size (4,000 A records: 175 ms; 128: ~10 ms)
MAX_DECODE_RECORDS = 128


def _cap_records(data: bytes) -> tuple[bytes, int]:
    """``data`` with its header's record counts lowered so at most :data:`MAX_DECODE_RECORDS`
    records are decoded (the rest is then trailing data, ignored); returns the records left out.

    Header (RFC 1035 4.1.1): id, flags, then QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT (16 bits each).
    """
    qd, an, ns, ar = struct.unpack(">HHHH", data[4:12])
    if qd + an + ns + ar <= MAX_DECODE_RECORDS:
        return data, 0
    room = MAX_DECODE_RECORDS
    counts = []
    for n in (qd, an, ns, ar):
        counts.append(min(n, room))
        room -= counts[-1]
    return data[:4] + struct.pack(">HHHH", *counts) + data[12:], qd + an + ns + ar - sum(counts)


#: what dnspython raises on malformed wire data (see parse_dns_reply)
_DECODE_ERRORS = (dns.exception.DNSException, ValueError, UnicodeError, struct.error)


def parse_dns_reply(data: bytes) -> DNSReply:
    """Parse one DNS response (no TCP prefix) into a :class:`DNSReply`.

    Raises :class:`NotThisProtocol` for anything that is not a well-formed DNS response: shorter
    than a header, QR bit clear, a compression loop, a truncated record, trailing bytes...
    """
    if len(data) < HEADER_LEN:
        raise NotThisProtocol(f"{len(data)} bytes: shorter than a DNS header")
    if not data[2] & 0x80:
        raise NotThisProtocol("QR bit clear: a query, not a response")
    data, cut = _cap_records(data)
    try:
        msg = dns.message.from_wire(data, ignore_trailing=cut > 0)
    except _DECODE_ERRORS as exc:
        # dnspython's own errors (DNSException: FormError, BadLabelType, ShortHeader, TrailingJunk,
        # ...) and the ValueError/UnicodeError/struct.error its rdata decoders raise on bad wire
        # data mean "not a well-formed DNS message"; anything else is a probe bug
        kind = type(exc).__name__
        raise NotThisProtocol(f"malformed DNS message ({kind}: {str(exc)[:120]})") from exc
    question: tuple[str, str, str] | None = None
    if msg.question:
        q = msg.question[0]
        question = (
            q.name.to_text().lower(),
            dns.rdatatype.to_text(q.rdtype),
            dns.rdataclass.to_text(q.rdclass),
        )
    answer, d1 = _rrs(msg.answer)
    authority, d2 = _rrs(msg.authority)
    additional, d3 = _rrs(msg.additional)
    nsid: bytes | None = None
    ede: list[int] = []
    for opt in msg.options:
        if opt.otype == dns.edns.NSID:
            nsid = opt.to_wire() or b""
        elif opt.otype == dns.edns.EDE:
            wire = opt.to_wire() or b""
            if len(wire) >= 2:
                ede.append(int.from_bytes(wire[:2], "big"))
    flags = dns.flags.to_text(msg.flags).split()
    return DNSReply(
        id=msg.id,
        opcode=dns.opcode.to_text(msg.opcode()),
        rcode=dns.rcode.to_text(msg.rcode()),
        flags=tuple(flags),
        question=question,
        answer=answer,
        authority=authority,
        additional=additional,
        edns=msg.edns >= 0,
        payload=int(msg.payload) if msg.edns >= 0 else 0,
        nsid=nsid,
        ede=tuple(ede),
        size=len(data),
        dropped=d1 + d2 + d3 + cut,
    )


def reply_matches(reply: DNSReply, qid: int, name: str, rdtype: str, rdclass: str = "IN") -> bool:
    """Does ``reply`` answer our query (same id, a response, opcode QUERY, same question)?

    An empty question section is accepted only with FORMERR/NOTIMP/SERVFAIL/REFUSED, which some
    servers send without echoing the question (RFC 1035 leaves it open).
    """
    if reply.id != (qid & 0xFFFF) or not reply.qr or reply.opcode != "QUERY":
        return False
    if reply.question is None:
        return reply.rcode in ("FORMERR", "NOTIMP", "SERVFAIL", "REFUSED")
    want = (dns.name.from_text(name).to_text().lower(), rdtype.upper(), rdclass.upper())
    return reply.question == want


