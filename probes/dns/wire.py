"""DNS wire format: queries, the DNS-over-TCP/UDP framers and the reply parser (dnspython under size
caps). Part of the :mod:`probes.dns` package (what it sends and collects is described there)."""

from __future__ import annotations

import functools
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import dns.edns
import dns.exception
import dns.flags
import dns.ipv6
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


def as_database_reply(msg: bytes, udp: bool) -> bytes:
    """The ``version.bind`` reply as the service database expects it: the reply to nmap's own
    query, which carries no EDNS. Ours does (for NSID and the hidden-version rules), and about a
    fifth of the database's version.bind lines are anchored at the end of the reply, where the OPT
    record sits; so the OPT record is dropped (dnspython re-encodes the rest). Unparseable: as is."""
    wire = msg if udp else msg[2:]
    # the id (the first 2 bytes) changes nothing else of the re-encoding: the work is cached on the
    # rest, which is the same for every server of a kind (one parse per kind, not per target)
    rest = _without_opt(wire[2:])
    if rest is None:
        return msg
    out = wire[:2] + rest
    return out if udp else len(out).to_bytes(2, "big") + out


@functools.lru_cache(maxsize=256)
def _without_opt(after_id: bytes) -> bytes | None:
    """A message (given from its flags on) re-encoded without its OPT record, from its flags on;
    None when it has no OPT record or does not parse."""
    try:
        m = dns.message.from_wire(b"\0\0" + after_id)
        if m.edns < 0:
            return None
        m.use_edns(False)
        return m.to_wire()[2:]
    except (dns.exception.DNSException, ValueError):
        return None


@functools.lru_cache(maxsize=1024)
def _query_template(name: str, rdtype: str, rdclass: str, edns: bool, nsid: bool, rd: bool) -> bytes:
    """The query's wire bytes with id 0 (built once, then only the id changes)."""
    plain = _plain_query(name, rdtype, rdclass, edns, nsid, rd)
    return plain if plain is not None else _dnspython_query(name, rdtype, rdclass, edns, nsid, rd)


#: a label the fast query encoder writes as it is (dnspython's from_text: no escapes, no IDNA)
_PLAIN_LABEL = re.compile(r"[A-Za-z0-9_-]{1,63}")


def _plain_query(name: str, rdtype: str, rdclass: str, edns: bool, nsid: bool, rd: bool) -> bytes | None:
    """The bytes dnspython's ``make_query(...).to_wire()`` gives, for a name of plain labels (the
    PTR name of every target is new: dnspython would cost ~1 ms per target); None otherwise.

    Header (RFC 1035 4.1.1): id 0, flags (RD or nothing), QDCOUNT 1, ARCOUNT 1 with EDNS; the
    question; then the OPT record (RFC 6891): root owner, TYPE 41, CLASS = UDP payload, TTL 0
    (extended rcode, version 0, no DO), RDATA = the options (NSID: code 3, empty)."""
    labels = name.split(".")
    if labels and labels[-1] == "":
        labels.pop()
    if name in (".", ""):
        labels = []
    elif not all(_PLAIN_LABEL.fullmatch(label) for label in labels):
        return None
    qname = b"".join(len(label).to_bytes(1, "big") + label.encode("ascii") for label in labels) + b"\0"
    if len(qname) > 255:
        return None
    try:
        qtype = int(dns.rdatatype.from_text(rdtype))
        qclass = int(dns.rdataclass.from_text(rdclass))
    except (dns.exception.DNSException, ValueError):
        return None
    out = struct.pack(">HHHHHH", 0, 0x0100 if rd else 0, 1, 0, 0, 1 if (edns or nsid) else 0)
    out += qname + struct.pack(">HH", qtype, qclass)
    if edns or nsid:
        options = struct.pack(">HH", dns.edns.NSID, 0) if nsid else b""
        out += b"\0" + struct.pack(">HHIH", 41, EDNS_PAYLOAD, 0, len(options)) + options
    return out


def _dnspython_query(name: str, rdtype: str, rdclass: str, edns: bool, nsid: bool, rd: bool) -> bytes:
    """The query built by dnspython (any name it accepts; its errors for the others)."""
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


# ----------------------------------------------------------------- the fast path (common replies)
#
# dnspython builds a Name, an Rdata and an RRset object per record, and enum objects for every type,
# class and flag: about 0.3 ms per reply, the largest cost of a DNS port at scale. The replies a scan
# gets are nearly always small and plain, so _fast_reply reads those directly from the wire and
# gives exactly the DNSReply dnspython's parse gives (tests/probes/test_dns.py compares the two on
# real servers' replies and on mutated ones). It reads only what it can render exactly as dnspython
# does (opcode QUERY, at most one question, the types A, AAAA, NS, CNAME, PTR, SOA, TXT, SRV and an
# OPT record with NSID/EDE options, names of plain printable labels, no possible duplicate record)
# and hands anything else to dnspython, whose errors decide what is malformed.

class _Slow(Exception):
    """The fast path cannot read this reply exactly: dnspython parses it."""


#: label bytes that dnspython's Name.to_text writes as they are (0x21-0x7E, less the escaped ones)
_NAME_PLAIN = bytes(c for c in range(0x21, 0x7F) if c not in b'"().;\\@$')
#: TXT string bytes dnspython writes as they are (0x20-0x7E, less '"' and backslash)
_TXT_PLAIN = bytes(c for c in range(0x20, 0x7F) if c not in b'"\\')
#: header (RFC 1035 4.1.1): id, flags, QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT
_HEADER = struct.Struct(">HHHHHH")
#: a resource record after its owner name: TYPE, CLASS, TTL, RDLENGTH
_RR_HEAD = struct.Struct(">HHIH")
_SOA_TAIL = struct.Struct(">IIIII")
_SRV_HEAD = struct.Struct(">HHH")
#: types whose rdata the fast path renders; A/AAAA/SRV only in class IN (CH A is another type)
_FAST_ANY_CLASS = frozenset((2, 5, 6, 12, 16))  # NS CNAME SOA PTR TXT
_FAST_IN_ONLY = frozenset((1, 28, 33))  # A AAAA SRV
_FAST_CLASSES = frozenset((1, 3, 4))  # IN CH HS
#: dnspython's MAX_COMPRESSION_POINTER_CHAIN
_MAX_HOPS = 16


@functools.lru_cache(maxsize=1024)
def _type_text(rdtype: int) -> str:
    return dns.rdatatype.to_text(rdtype)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=64)
def _class_text(rdclass: int) -> str:
    return dns.rdataclass.to_text(rdclass)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=1024)
def _flags_text(flags: int) -> tuple[str, ...]:
    return tuple(dns.flags.to_text(flags).split())


@functools.lru_cache(maxsize=256)
def _rcode_text(value: int) -> str:
    return dns.rcode.to_text(dns.rcode.Rcode.make(value))


def _fast_name(data: bytes, pos: int, end: int) -> tuple[str, int]:
    """The name at ``pos`` as dnspython's ``to_text`` writes it, and the position after it; reads
    no byte at or past ``end``. Follows compression pointers under dnspython's rules (strictly
    backwards, never into the name's own bytes, at most 16 hops)."""
    labels: list[str] = []
    total = 1
    limit = end
    start = biggest = pos
    after = -1
    hops = 0
    while True:
        if pos >= limit:
            raise _Slow
        n = data[pos]
        if n == 0:
            pos += 1
            break
        if n < 64:
            stop = pos + 1 + n
            if stop > limit:
                raise _Slow
            label = data[pos + 1:stop]
            if label.translate(None, _NAME_PLAIN):
                raise _Slow  # a byte dnspython would escape
            labels.append(label.decode("ascii"))
            total += n + 1
            pos = stop
        elif n >= 192:
            if pos + 1 >= limit:
                raise _Slow
            target = (n & 0x3F) << 8 | data[pos + 1]
            hops += 1
            if target >= biggest or hops > _MAX_HOPS:
                raise _Slow
            if after < 0:
                after = pos + 2
            biggest = target
            limit = start  # the target must lie wholly before the bytes read so far
            pos = start = target
        else:
            raise _Slow
    if total > 255:
        raise _Slow
    return (".".join(labels) + "." if labels else "."), (after if after >= 0 else pos)


def _txt_text(data: bytes, pos: int, end: int) -> str:
    """TXT rdata as dnspython writes it: each string quoted, ``"`` and ``\\`` escaped, bytes
    outside 0x20-0x7E as ``\\DDD``."""
    parts = []
    while pos < end:
        n = data[pos]
        stop = pos + 1 + n
        if stop > end:
            raise _Slow
        raw = data[pos + 1:stop]
        if not raw.translate(None, _TXT_PLAIN):
            parts.append('"' + raw.decode("ascii") + '"')
        else:
            text = []
            for c in raw:
                if c == 0x22 or c == 0x5C:
                    text.append("\\" + chr(c))
                elif 0x20 <= c < 0x7F:
                    text.append(chr(c))
                else:
                    text.append(f"\\{c:03d}")
            parts.append('"' + "".join(text) + '"')
        pos = stop
    if not parts:
        raise _Slow  # dnspython: "the list of strings must not be empty"
    return " ".join(parts)


def _fast_rdata(data: bytes, pos: int, end: int, rdtype: int, rdclass: int) -> str:
    """One record's rdata as dnspython's ``Rdata.to_text`` writes it (``_Slow`` when not sure)."""
    if rdclass not in _FAST_CLASSES:
        raise _Slow
    if rdtype in _FAST_IN_ONLY:
        if rdclass != 1:
            raise _Slow
        if rdtype == 1:
            if end - pos != 4:
                raise _Slow
            return ".".join(map(str, data[pos:end]))
        if rdtype == 28:
            if end - pos != 16:
                raise _Slow
            return dns.ipv6.inet_ntoa(data[pos:end])
        if end - pos < 7:
            raise _Slow
        prio, weight, port = _SRV_HEAD.unpack_from(data, pos)
        target, after = _fast_name(data, pos + 6, end)
        if after != end:
            raise _Slow
        return f"{prio} {weight} {port} {target}"
    if rdtype not in _FAST_ANY_CLASS:
        raise _Slow
    if rdtype == 16:
        return _txt_text(data, pos, end)
    if rdtype == 6:
        mname, pos = _fast_name(data, pos, end)
        rname, pos = _fast_name(data, pos, end)
        if end - pos != 20:
            raise _Slow
        serial, refresh, retry, expire, minimum = _SOA_TAIL.unpack_from(data, pos)
        return f"{mname} {rname} {serial} {refresh} {retry} {expire} {minimum}"
    target, after = _fast_name(data, pos, end)  # NS, CNAME, PTR
    if after != end:
        raise _Slow
    return target


def _fast_options(data: bytes, pos: int, end: int) -> tuple[bytes | None, tuple[int, ...]]:
    """(NSID, EDE codes) of an OPT record's options; ``_Slow`` for any other option."""
    nsid: bytes | None = None
    ede: list[int] = []
    while pos < end:
        if end - pos < 4:
            raise _Slow
        code = data[pos] << 8 | data[pos + 1]
        length = data[pos + 2] << 8 | data[pos + 3]
        pos += 4
        stop = pos + length
        if stop > end:
            raise _Slow
        value = data[pos:stop]
        if code == 3:  # NSID (RFC 5001): opaque bytes
            nsid = value
        elif code == 15:  # EDE (RFC 8914): INFO-CODE, then UTF-8 text (maybe NUL-terminated)
            if length < 2:
                raise _Slow
            text = value[2:]
            if text and text[-1] == 0:
                text = text[:-1]
            try:
                text.decode("utf8")
            except UnicodeError:
                raise _Slow from None
            ede.append(value[0] << 8 | value[1])
        else:
            raise _Slow
        pos = stop
    return nsid, tuple(ede)


def _fast_reply(data: bytes) -> DNSReply:
    """:func:`parse_dns_reply`'s result for a plain reply, read without dnspython (``_Slow`` when
    the reply holds anything the fast path does not render exactly as dnspython)."""
    end = len(data)
    qid, flags, qd, an, ns, ar = _HEADER.unpack_from(data)
    if flags & 0x7800 or qd > 1:  # opcode other than QUERY; several questions
        raise _Slow
    pos = HEADER_LEN
    question: tuple[str, str, str] | None = None
    if qd:
        qname, pos = _fast_name(data, pos, end)
        if end - pos < 4:
            raise _Slow
        qtype = data[pos] << 8 | data[pos + 1]
        qclass = data[pos + 2] << 8 | data[pos + 3]
        pos += 4
        question = (qname.lower(), _type_text(qtype), _class_text(qclass))
    opt: tuple[int, int] | None = None
    nsid: bytes | None = None
    ede: tuple[int, ...] = ()
    sections: list[tuple[RR, ...]] = []
    dropped = 0
    for section, count in ((1, an), (2, ns), (3, ar)):
        # RRsets in order of first appearance: (owner lower-cased, type, class) -> [owner, ttl, texts]
        rrsets: dict[tuple[str, int, int], list[Any]] = {}
        for _ in range(count):
            owner, pos = _fast_name(data, pos, end)
            if end - pos < 10:
                raise _Slow
            rdtype, rdclass, ttl, rdlen = _RR_HEAD.unpack_from(data, pos)
            pos += 10
            stop = pos + rdlen
            if stop > end:
                raise _Slow
            if rdtype == 41:  # OPT: once, in the additional section, owned by the root
                if section != 3 or opt is not None or owner != ".":
                    raise _Slow
                opt = (rdclass, ttl)
                nsid, ede = _fast_options(data, pos, stop)
                pos = stop
                continue
            text = _fast_rdata(data, pos, stop, rdtype, rdclass)
            pos = stop
            if ttl > 0x7FFFFFFF:
                ttl = 0  # as dnspython reads it
            key = (owner.lower(), rdtype, rdclass)
            rrset = rrsets.get(key)
            if rrset is None:
                rrsets[key] = [key[0], ttl, [text]]
                continue
            low = text.lower()
            if rdtype == 6 or any(t.lower() == low for t in rrset[2]):
                raise _Slow  # a second SOA replaces the first; a duplicate record is dropped
            rrset[1] = min(rrset[1], ttl)
            rrset[2].append(text)
        out: list[RR] = []
        for (owner_l, rdtype, rdclass), (_, ttl, texts) in rrsets.items():
            type_text, class_text = _type_text(rdtype), _class_text(rdclass)
            for text in texts:
                if len(out) >= MAX_RRS:
                    dropped += 1
                    continue
                out.append(RR(owner_l, type_text, class_text, ttl, text[:MAX_RR_TEXT]))
        sections.append(tuple(out))
    if pos != end:
        raise _Slow  # trailing bytes: dnspython's TrailingJunk
    ednsflags = opt[1] if opt is not None else 0
    return DNSReply(
        id=qid,
        opcode="QUERY",
        rcode=_rcode_text((flags & 0x000F) | ((ednsflags >> 20) & 0xFF0)),
        flags=_flags_text(flags),
        question=question,
        answer=sections[0],
        authority=sections[1],
        additional=sections[2],
        edns=opt is not None,
        payload=opt[0] if opt is not None else 0,
        nsid=nsid,
        ede=ede,
        size=end,
        dropped=dropped,
    )


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
    if not cut:
        try:
            return _fast_reply(data)
        except _Slow:
            pass
    return _slow_reply(data, cut)


def _slow_reply(data: bytes, cut: int) -> DNSReply:
    """:func:`parse_dns_reply` through dnspython (every reply the fast path does not take)."""
    try:
        # keyring=False: a TSIG-signed message (the end of a GSS-TSIG TKEY negotiation, a signed
        # update's answer) is parsed without checking its signature: we hold no key, and the
        # message is no less DNS for it (dnspython's default raises UnknownTSIGKey)
        msg = dns.message.from_wire(data, ignore_trailing=cut > 0, keyring=False)
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
    return reply.question == _question_key(name, rdtype, rdclass)


@functools.lru_cache(maxsize=1024)
def _question_key(name: str, rdtype: str, rdclass: str) -> tuple[str, str, str]:
    """The question a reply to our query echoes, as :class:`DNSReply` holds it."""
    return dns.name.from_text(name).to_text().lower(), rdtype.upper(), rdclass.upper()


