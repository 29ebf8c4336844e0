"""DNS probe (UDP and TCP): confirm DNS and name the server product.

Default ports: 53/udp and 53/tcp.

Sends (all read-only, cheap, recursion-desired bit clear, EDNS0 with a 1232-byte payload):

1. ``. IN SOA`` with the EDNS NSID option (RFC 5001): every DNS server answers it somehow
   (NOERROR, REFUSED, FORMERR...), so it decides "this is DNS";
2. ``. IN NS``;
3. ``version.bind``, ``hostname.bind``, ``id.server``, ``version.server`` as CHAOS TXT;
4. the PTR of the target address (reverse zone names often reveal the forward zone);
   when no product is known by then: ``invalid. IN SOA`` (RFC 6761 special-use name: answered
   locally or refused, never recursed; Unbound answers it from a built-in zone);
5. SOA (then NS) of candidate zones: the AD domain another probe found (``ctx.host_facts``),
   the target's name and its parents, names seen in the replies (hostname.bind, NSID, PTR);
6. when a zone is found: ``_ldap._tcp.dc._msdcs.<zone>`` SRV; when that names domain
   controllers (an AD DNS server), also ``_kerberos._tcp.<zone>`` and ``_gc._tcp.<zone>``.

Collects: rcode/flags/OPT of every reply, the CHAOS strings, NSID, recursion available (RA),
authoritative zones seen, the AD domain and its DCs, and the product, each claim naming its rule in
``Finding.rule`` (``portproof:dns/<id>``): from version strings by :data:`VERSION_RULES` (BIND
4/8/9, Microsoft DNS, dnsmasq, Unbound, PowerDNS, Knot DNS, NSD, CoreDNS; a string no rule knows,
such as "none" or "[secured]", names nothing and stays in ``version_string``) or, where strings are
hidden, from behaviour (Samba's internal DNS: CHAOS names NXDOMAIN, no OPT in its answers, FORMERR
for the root; BIND: CHAOS answers carry a ``CH NS`` authority record for the CHAOS name; and with
the version hidden, each seen live in the lab: Unbound: the SOA ``localhost. nobody.invalid.`` of
its built-in local zones; PowerDNS Authoritative: version.bind SERVFAIL with AA; Knot DNS and NSD:
REFUSED with EDE 20 "Not Authoritative" outside their zones, NSD adding EDE 18 "Prohibited" to
refused CHAOS queries and Knot none).

Replies whose id, question or opcode do not match the query are ignored (at most
``MAX_UNMATCHED`` per query), never trusted. On UDP a query is sent at most ``UDP_TRIES`` times.

Wire format: dnspython's message layer (``dns.message``) builds and parses every message; this
module only adds the DNS-over-TCP 2-byte length framing (RFC 1035 4.2.2) and the rules.
"""

from __future__ import annotations

import functools
import re
import struct
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field
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
    Finding,
    NotThisProtocol,
    Probe,
    ProbeContext,
    Recv,
    RecvClosed,
    RecvTimeout,
    Send,
    Step,
    prefix_framer,
)
from scanner.ntlm import windows_name

__all__ = [
    "BUILTIN_ZONE_QUERY",
    "CHAOS_NAMES",
    "DNSProbe",
    "DNSReply",
    "EDNS_PAYLOAD",
    "MAX_UNMATCHED",
    "RR",
    "UDP_TRIES",
    "VERSION_RULES",
    "VersionRule",
    "build_query",
    "frame_dns_tcp",
    "frame_dns_udp",
    "identify",
    "match_version_string",
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


# --------------------------------------------------------------------------------- identify

@dataclass(frozen=True, slots=True)
class VersionRule:
    """One rule naming the product behind a CHAOS ``version.bind`` / ``version.server`` string.

    ``pattern`` must match the whole (stripped) string, so a product is never read from a word in
    the middle of an operator's message; its ``version`` group (when present) is the version, which
    ``refine`` may rewrite (BIND: the upstream release with ISC's patch level, without the distro's
    package revision). ``source`` says where the string's form is documented or was seen; the tests
    in ``tests/probes/test_dns_rules.py`` hold a real example for each rule.
    """

    id: str
    pattern: re.Pattern[str]
    product: str
    source: str
    confidence: int = 10
    refine: Callable[[re.Match[str]], str | None] | None = None


def _bind_version(m: re.Match[str]) -> str | None:
    """BIND's release from its version string: ``9.11.4-P2-RedHat-9.11.4-26.P2.el7`` -> ``9.11.4-P2``,
    ``9.18.49-1~deb12u3-Debian`` -> ``9.18.49``, ``9.8.4-rpz2+rl005.12-P1`` -> ``9.8.4-P1``,
    ``8.2.2-P5`` -> ``8.2.2-P5``, ``8.3.4-REL`` -> ``8.3.4``.

    ISC names releases x.y.z[a1|b1|rc1][-P<n>|-S<n>] (and 9.6/9.7 ``-ESV[-R<n>]``); what follows is the
    packager's (Debian/Ubuntu/Red Hat revision, the rpz/rl patch set), kept in ``version_string``.
    """
    version = m["version"]
    patch = re.match(r"(?:-rpz[\w.+]*)?-([PS]\d{1,3})(?=$|[-+\s.])", m["rest"] or "")
    return f"{version}-{patch[1]}" if patch else version


_BIND_SUFFIX = r"(?P<rest>(?:[-+~ ].{0,200})?)"
#: BIND 8 and 4.9 strings always carry a release suffix: -REL, -P<n> (patch) or -T<n> (test)
_BIND_OLD_SUFFIX = r"(?P<rest>-(?:REL|P\d{1,2}|T\d{1,2}[A-Z]?)\b.{0,200})"
#: the rules for CHAOS version strings, most specific first; strings no rule knows ("none",
#: "unknown", "[secured]", "Go away", a bare "1.0") give no product and stay in ``version_string``
VERSION_RULES: tuple[VersionRule, ...] = (
    # BIND answers version.bind with its version unless `version` is set (BIND 9 ARM, options
    # statement "version": "The default is the real version number of this server"); packagers
    # append their revision: Debian "9.18.49-1~deb12u3-Debian" (our lab), Red Hat
    # "9.11.4-P2-RedHat-9.11.4-26.P2.el7", Ubuntu "9.16.1-Ubuntu"
    VersionRule(
        "version-bind-bind9",
        re.compile(r"(?:ISC )?(?:BIND )?(?P<version>9\.\d{1,2}(?:\.\d{1,3}(?:(?:a|b|rc)\d{1,2})?(?:-ESV(?:-R\d{1,2})?)?"
                   r"|-ESV(?:-R\d{1,2})?))" + _BIND_SUFFIX, re.S),
        "ISC BIND",
        "BIND 9 ARM (options: version); lab BIND 9.18 on Debian 12",
        refine=_bind_version,
    ),
    # BIND 8 and 4.9 release names carry -REL (release) or -P<n> (patch): "8.2.2-P5", "8.4.7-REL"
    VersionRule(
        "version-bind-bind8",
        re.compile(r"(?:BIND )?(?P<version>8\.\d{1,2}\.\d{1,2})" + _BIND_OLD_SUFFIX, re.S),
        "ISC BIND",
        "ISC release names (BIND 8.2.2-P5, 8.4.7-REL)",
        refine=_bind_version,
    ),
    VersionRule(
        "version-bind-bind4",
        re.compile(r"(?:BIND )?(?P<version>4\.9\.\d{1,2})" + _BIND_OLD_SUFFIX, re.S),
        "ISC BIND",
        "ISC release names (BIND 4.9.11-REL)",
        refine=_bind_version,
    ),
    # Windows DNS answers only with EnableVersionQuery set: "Microsoft DNS 6.1.7601 (1DB15CD4)"
    VersionRule(
        "version-bind-microsoft-dns",
        re.compile(r"Microsoft DNS (?P<version>\d{1,2}\.\d{1,2}(?:\.\d{1,5})?)(?: \([0-9A-Fa-f]{1,8}\))?\s*"),
        "Microsoft DNS",
        "Windows DNS Server with EnableVersionQuery (string quoted in issue 13)",
    ),
    # dnsmasq's version.bind (its CHAOS "bind" names: version/hostname/cachesize...): "dnsmasq-2.90"
    VersionRule("version-bind-dnsmasq", re.compile(r"dnsmasq-(?P<version>\d{1,2}\.\d{1,3}[\w.\-]{0,32})"), "dnsmasq",
                "lab dnsmasq 2.90 (Debian 12)"),
    VersionRule("version-bind-unbound", re.compile(r"unbound (?P<version>\d{1,2}\.\d{1,3}\.\d{1,3}[\w.\-]{0,32})",
                                                   re.I), "Unbound", "lab Unbound 1.17 (Debian 12)"),
    VersionRule(
        "version-bind-powerdns-authoritative",
        re.compile(r"PowerDNS Authoritative Server (?P<version>\d[\w.\-]{0,32})(?: .{0,200})?", re.S),
        "PowerDNS Authoritative Server",
        "lab pdns-server 4.7 (Debian 12), default version-string=full",
    ),
    VersionRule(
        "version-bind-powerdns-recursor",
        re.compile(r"PowerDNS Recursor (?P<version>\d[\w.\-]{0,32})(?: .{0,200})?", re.S),
        "PowerDNS Recursor",
        "PowerDNS Recursor version-string default 'PowerDNS Recursor <version> (built ...)'",
    ),
    # version-string=powerdns: "Served by PowerDNS - https://www.powerdns.com/"; PowerDNS 2.x answered
    # "Served by POWERDNS 2.9.22 $Id: packethandler.cc ..." (PowerDNS/pdns issue 234)
    VersionRule(
        "version-bind-powerdns-served-by",
        re.compile(r"Served by PowerDNS(?: (?P<version>\d[\w.\-]{0,32}))?(?:\W.{0,300})?", re.I | re.S),
        "PowerDNS",
        "PowerDNS docs (version-string=powerdns); PowerDNS/pdns issue 234",
    ),
    VersionRule("version-bind-knot-dns", re.compile(r"Knot DNS (?P<version>\d[\w.\-]{0,32})"), "Knot DNS",
                "lab knot 3.2 (Debian 12)"),
    # NSD's default version string is its PACKAGE_STRING, "NSD 4.6.1" (nsd.conf(5): version)
    VersionRule("version-bind-nsd", re.compile(r"NSD (?P<version>\d[\w.\-]{0,32})"), "NSD",
                "NSD 4.6.1 run by hand for tests/probes/test_dns.py; nsd.conf(5) version"),
    # CoreDNS's chaos plugin: "VERSION ... Defaults to CoreDNS-<version>" (coredns.io/plugins/chaos)
    VersionRule("version-bind-coredns", re.compile(r"CoreDNS-(?P<version>\d[\w.\-]{0,32})"), "CoreDNS",
                "coredns.io/plugins/chaos"),
    # gdnsd 3 answers its name and major version: "gdnsd/3" (gdnsd 3.8.1 run on loopback)
    VersionRule("version-bind-gdnsd", re.compile(r"gdnsd/(?P<version>\d{1,2}(?:\.\d{1,3}){0,2})"), "gdnsd",
                "lab: gdnsd 3.8.1 (Debian 12 package) answers gdnsd/3"),
    # a PowerDNS Recursor built from a git snapshot names no release: "PowerDNS Recursor git-20140402-1151-
    # cc08b5a (jenkins@... built ...)"; the snapshot stays in version_string, no version is claimed
    VersionRule(
        "version-bind-powerdns-recursor-snapshot",
        re.compile(r"PowerDNS Recursor git-\d{8}[\w.\-]{0,48}(?: .{0,200})?", re.S),
        "PowerDNS Recursor",
        "public-dns.info resolver list, May 2014 (repo:longbai/dns-check nameservers.json, ordns.he.net)",
    ),
    # an operator's "BIND-9" (or "BIND 9"): the product and its major release only
    VersionRule("version-bind-bind-major", re.compile(r"(?:ISC )?BIND[- ](?P<version>[489])"), "ISC BIND",
                "public-dns.info resolver list, May 2014 (repo:longbai/dns-check nameservers.json, ns.cstnet.cn)"),
)


def match_version_string(text: str) -> tuple[VersionRule, str | None] | None:
    """The rule that names the product of a CHAOS version string, and the version it reads, or None."""
    text = text.strip()
    if len(text) > 512:
        return None
    for rule in VERSION_RULES:
        m = rule.pattern.fullmatch(text)
        if m:
            version = rule.refine(m) if rule.refine else m.groupdict().get("version")
            return rule, version
    return None


def _server_windows(version: str) -> str | None:
    """The Windows Server release of a Microsoft DNS version ``6.1.7601``: the DNS Server role exists
    only on server editions, so the client name :func:`scanner.ntlm.windows_name` pairs with it is
    dropped."""
    parts = version.split(".")
    if len(parts) != 3:
        return None
    name = windows_name(int(parts[0]), int(parts[1]), int(parts[2]))
    if not name:
        return None
    server = [n for n in name.split(" / ") if n.startswith("Windows Server") or n == "Windows 2000"]
    return server[0] if server else None


def _txt_value(rr: RR) -> str:
    """The text of a TXT record (its strings joined, quotes and escapes removed)."""
    parts = re.findall(r'"((?:[^"\\]|\\.)*)"', rr.text)
    if not parts:
        return rr.text
    raw = "".join(parts)
    return re.sub(r"\\(\d{3}|.)", lambda m: chr(int(m[1])) if m[1].isdigit() else m[1], raw)


def _printable(data: bytes) -> str:
    """NSID bytes as text when printable ASCII, else as hex."""
    if data and all(32 <= b < 127 for b in data):
        return data.decode("ascii")
    return data.hex()


def _upstream_version(version: str) -> str | None:
    """The upstream x.y.z part of a distro version string (``9.18.49-1~deb12u3-Debian``)."""
    m = re.match(r"(\d+(?:\.\d+)+)", version)
    return m[1] if m else None


def _by_question(replies: Sequence[DNSReply]) -> dict[tuple[str, str, str], DNSReply]:
    """Replies keyed by their question (the first reply per question wins)."""
    out: dict[tuple[str, str, str], DNSReply] = {}
    for r in replies:
        if r.question is not None and r.question not in out:
            out[r.question] = r
    return out


def _srv_targets(reply: DNSReply | None) -> list[dict[str, Any]]:
    """SRV answers of a reply as dicts (priority, weight, port, target)."""
    out: list[dict[str, Any]] = []
    if reply is None:
        return out
    for rr in reply.answer:
        if rr.rdtype != "SRV":
            continue
        parts = rr.text.split()
        if len(parts) == 4 and all(p.isdigit() for p in parts[:3]):
            out.append(
                {
                    "priority": int(parts[0]),
                    "weight": int(parts[1]),
                    "port": int(parts[2]),
                    "target": parts[3].rstrip(".").lower(),
                }
            )
    return out


#: SOA rdata of Unbound's built-in local zones (RFC 6303 reverse zones such as 127.in-addr.arpa
#: and 10.in-addr.arpa, RFC 6761 names such as invalid. and test.), seen live from Unbound 1.17:
#: ``localhost. nobody.invalid. 1 3600 1200 604800 10800``
_UNBOUND_BUILTIN_SOA = re.compile(r"^localhost\. nobody\.invalid\. ", re.I)
#: EDNS extended error codes (RFC 8914) the hidden-version rules look at
EDE_PROHIBITED = 18
EDE_NOT_AUTHORITATIVE = 20


def _hidden_version_product(
    byq: dict[tuple[str, str, str], DNSReply], replies: Sequence[DNSReply]
) -> tuple[str, int, list[str], str] | None:
    """Product, confidence, tells and rule id for servers whose version string is hidden, or None.

    Each rule is what that server did in the lab with its version hidden (Unbound 1.17
    ``hide-version``, PowerDNS Authoritative 4.7 ``version-string=anonymous``, Knot DNS 3.2
    ``version: ""``, NSD 4.6 ``hide-version``); confidences stay below a self-naming string's.
    """
    chaos = [r for n in CHAOS_NAMES if (r := byq.get((n + ".", "TXT", "CH"))) is not None]
    vb = byq.get(("version.bind.", "TXT", "CH"))
    # PowerDNS Authoritative: version.bind SERVFAIL, authoritative; other CHAOS names answered
    # (id.server) or REFUSED, all with AA
    others = [r for r in chaos if r is not vb]
    if (
        vb is not None
        and vb.rcode == "SERVFAIL"
        and vb.aa
        and others
        and all(r.aa and r.rcode in ("REFUSED", "NOERROR") for r in others)
    ):
        return (
            "PowerDNS Authoritative Server",
            6,
            ["version.bind CH TXT: SERVFAIL with AA, other CHAOS names REFUSED/answered with AA (PowerDNS)"],
            "behaviour-powerdns-version-servfail-aa",
        )
    # Unbound: its built-in local zones' SOA, in an authoritative reply
    builtin = next(
        (
            rr
            for r in replies
            if r.aa
            for rr in (*r.answer, *r.authority)
            if rr.rdtype == "SOA" and _UNBOUND_BUILTIN_SOA.match(rr.text)
        ),
        None,
    )
    if builtin is not None:
        tells = [f"built-in local zone SOA: {builtin.name} {builtin.text} (Unbound)"]
        if chaos and all(r.rcode == "REFUSED" and "RA" in r.flags for r in chaos):
            tells.append("CHAOS names REFUSED with RA set (Unbound hide-version/hide-identity)")
        return "Unbound", 5 + (len(tells) > 1), tells, "behaviour-unbound-builtin-zone-soa"
    # Knot DNS / NSD: REFUSED + EDE 20 for names outside their zones; refused CHAOS names carry
    # EDE 18 from NSD and no EDE from Knot
    not_auth = [
        r
        for r in replies
        if r.question is not None and r.question[2] == "IN" and r.rcode == "REFUSED" and EDE_NOT_AUTHORITATIVE in r.ede
    ]
    refused_chaos = [r for r in chaos if r.rcode == "REFUSED" and r.edns]
    if not_auth and refused_chaos and len(refused_chaos) == len(chaos):
        tell = "REFUSED with EDE 20 (Not Authoritative) outside its zones"
        if all(EDE_PROHIBITED in r.ede for r in refused_chaos):
            tells = [tell, "CHAOS names REFUSED with EDE 18 (Prohibited) (NSD hide-version)"]
            return "NSD", 5, tells, "behaviour-nsd-ede"
        if not any(r.ede for r in refused_chaos):
            tells = [tell, "CHAOS names REFUSED without EDE (Knot DNS, version hidden)"]
            return "Knot DNS", 5, tells, "behaviour-knot-ede"
    return None


#: NSID values (RFC 5001) whose documented form names the operator's service
_NSID_RULES: list[tuple[str, re.Pattern[str], str]] = [
    ("nsid-google-public-dns", re.compile(r"gpdns-[a-z]{3}"), "Google Public DNS"),
]


def identify(replies: Sequence[DNSReply], *, queries_had_edns: bool | None = True) -> Finding:
    """Decide the product from the replies a server gave (each carries its own question).

    Pure: used by the live dialogue and usable by a pcap replay. ``queries_had_edns`` says
    whether every query carried an OPT record (None when unknown, as in a capture), which makes
    "no OPT in the answer" meaningful.
    """
    f = Finding(service="dns", confidence=8)
    byq = _by_question(replies)
    details: dict[str, Any] = {}

    # --- CHAOS TXT names
    chaos: dict[str, Any] = {}
    strings: dict[str, str] = {}
    bind_chaos_ns = False
    chaos_answer_classes: set[str] = set()
    for cname in CHAOS_NAMES:
        r = byq.get((cname + ".", "TXT", "CH"))
        if r is None:
            continue
        txts = [_txt_value(rr) for rr in r.answer if rr.rdtype == "TXT"]
        chaos_answer_classes.update(rr.rdclass for rr in r.answer)
        entry: dict[str, Any] = {"rcode": r.rcode, "flags": list(r.flags), "opt": r.edns}
        if txts:
            entry["txt"] = txts
            strings[cname] = txts[0]
        chaos[cname] = entry
        if any(rr.rdtype == "NS" and rr.rdclass == "CH" for rr in r.authority):
            bind_chaos_ns = True
    if chaos:
        details["chaos"] = chaos
    if chaos_answer_classes:
        details["chaos_answer_classes"] = sorted(chaos_answer_classes)

    nsid = next((r.nsid for r in replies if r.nsid), None)
    if nsid:
        details["nsid"] = _printable(nsid)
        f.add("EDNS NSID", details["nsid"])
    details["recursion_available"] = any("RA" in r.flags for r in replies)
    details["edns"] = any(r.edns for r in replies)
    ede = sorted({c for r in replies for c in r.ede})
    if ede:
        details["ede"] = ede

    root: dict[str, str] = {}
    for rdtype in ("SOA", "NS"):
        r = byq.get((".", rdtype, "IN"))
        if r is not None:
            root[rdtype] = r.rcode
    if root:
        details["root"] = root

    # --- zones: owners of SOA records in authoritative replies
    zones: list[str] = []
    builtin_zones: list[str] = []  # Unbound's RFC 6303 / RFC 6761 local zones: not the operator's
    for r in replies:
        if not r.aa:
            continue
        for rr in (*r.answer, *r.authority):
            if rr.rdtype == "SOA" and rr.rdclass == "IN":
                z = rr.name.rstrip(".") or "."
                into = builtin_zones if _UNBOUND_BUILTIN_SOA.match(rr.text) else zones
                if z not in into:
                    into.append(z)
    if zones:
        details["zones"] = zones
    if builtin_zones:
        details["builtin_local_zones"] = builtin_zones

    # --- AD: _ldap._tcp.dc._msdcs.<domain> SRV names the DCs
    ad_domain: str | None = None
    dcs: list[str] = []
    srv: dict[str, list[dict[str, Any]]] = {}
    for (qname, qtype, _qclass), r in byq.items():
        if qtype != "SRV" or r.rcode != "NOERROR":
            continue
        targets = _srv_targets(r)
        if not targets:
            continue
        srv[qname.rstrip(".")] = targets
        if qname.startswith("_ldap._tcp.dc._msdcs."):
            ad_domain = qname[len("_ldap._tcp.dc._msdcs.") :].rstrip(".")
            for t in targets:
                if t["target"] not in dcs:
                    dcs.append(t["target"])
    if srv:
        details["srv"] = srv
    if ad_domain:
        details["ad_domain"] = ad_domain
        details["domain_controllers"] = dcs
        f.add("SRV _ldap._tcp.dc._msdcs", f"{ad_domain}: {', '.join(dcs)}")
        f.host_facts["ad_domain"] = ad_domain
        f.host_facts["domain_controllers"] = dcs
    if zones:
        f.host_facts["dns_zones"] = [z for z in zones if not z.endswith(".arpa")]

    # --- product from version strings
    for cname in ("version.bind", "version.server"):
        text = strings.get(cname)
        if not text:
            continue
        named = match_version_string(text)
        if named is None:
            continue
        rule, version = named
        f.product, f.version, f.rule = rule.product, version, f"portproof:dns/{rule.id}"
        # a bare BIND version names no product itself: BIND's documented default ties it, a notch lower
        f.confidence = 9 if re.fullmatch(r"\d+\.\d+\.\d+", text.strip()) else rule.confidence
        f.add(f"{cname} CH TXT", text)
        up = _upstream_version(version) if version else None
        if up and up != version:
            details["upstream_version"] = up
        if rule.product == "Microsoft DNS" and version:
            windows = _server_windows(version)
            if windows:
                details["windows"] = windows
            build = re.search(r"\(([0-9A-Fa-f]{1,8})\)", text)
            if build:
                details["build"] = build[1]
                # the hex word: its high 16 bits repeat the build (0x1DB1 = 7601), so the low 16 bits
                # read as the file revision: "6.1.7601 (1DB15CD4)" is dns.exe 6.1.7601.23764
                word = int(build[1], 16)
                parts = version.split(".")
                if len(parts) == 3 and word >> 16 == int(parts[2]):
                    details["file_version"] = f"{version}.{word & 0xFFFF}"
        break
    for cname in ("version.bind", "version.server"):
        if strings.get(cname):
            # the whole string, always: the product version above keeps only the release
            details["version_string"] = strings[cname]
            if not any(e.source == f"{cname} CH TXT" for e in f.evidence):
                f.add(f"{cname} CH TXT", strings[cname])
            break

    # --- product from an operator's NSID convention (Google Public DNS answers "gpdns-<IATA code>")
    if not f.product and details.get("nsid"):
        for rule_id, pattern, product in _NSID_RULES:
            if pattern.fullmatch(details["nsid"]):
                f.product, f.confidence, f.rule = product, 9, f"portproof:dns/{rule_id}"
                details["product_from"] = "EDNS NSID naming convention"
                break

    # --- product from behaviour
    if not f.product:
        vb = chaos.get("version.bind")
        samba_tells: list[str] = []
        if vb and vb["rcode"] == "NXDOMAIN" and "AA" not in vb["flags"]:
            samba_tells.append("version.bind CH TXT: NXDOMAIN, not authoritative")
        if root.get("SOA") == "FORMERR" and root.get("NS") == "FORMERR":
            samba_tells.append("root SOA and NS: FORMERR")
        answered = [r for r in replies if r.rcode != "FORMERR"]
        if queries_had_edns and answered and not any(r.edns for r in answered):
            samba_tells.append("EDNS queries answered without an OPT record")
        if len(samba_tells) >= 2:
            f.product, f.rule = "Samba internal DNS", "portproof:dns/behaviour-samba-internal-dns"
            f.confidence = 8 if (len(samba_tells) == 3 and ad_domain) else 7
            for tell in samba_tells:
                f.add("behaviour", tell)
        elif bind_chaos_ns:
            f.product, f.confidence, f.rule = "ISC BIND", 7, "portproof:dns/behaviour-bind-chaos-ns-authority"
            f.add("behaviour", "CHAOS answers carry a CH NS authority record (BIND)")
        elif hidden := _hidden_version_product(byq, replies):
            f.product, f.confidence, tells, rule_id = hidden
            f.rule = f"portproof:dns/{rule_id}"
            for tell in tells:
                f.add("behaviour", tell)
        elif ad_domain and not strings:
            # No lab server: Windows DNS hides its version unless EnableVersionQuery is set, and
            # it is the usual DNS of an AD domain. Kept low: an inference, not a self-naming.
            f.product, f.confidence = "Microsoft DNS", 4
            f.rule = "portproof:dns/behaviour-ad-srv-without-chaos"
            details["product_inferred_from"] = "AD SRV records, no CHAOS strings, no Samba tells"
            f.add("behaviour", "AD SRV records without version strings or Samba's behaviour")

    # --- identity strings
    for cname in ("hostname.bind", "id.server"):
        if strings.get(cname):
            details.setdefault("server_name", strings[cname])
            if len(f.evidence) < 8:
                f.add(f"{cname} CH TXT", strings[cname])
    extra = []
    if details.get("windows"):
        extra.append(details["windows"])
    if ad_domain:
        extra.append(f"AD domain {ad_domain}")
    if details.get("server_name"):
        extra.append(f"name {details['server_name']}")
    if extra:
        f.extrainfo = "; ".join(extra)
    if not f.evidence and replies:
        r0 = replies[0]
        q = " ".join(r0.question) if r0.question else "(no question)"
        f.add("reply", f"{q}: {r0.rcode} {' '.join(r0.flags)}")
    f.details = details
    return f


# ------------------------------------------------------------------------------------ probe


@dataclass
class _State:
    """What the dialogue collected so far."""

    replies: list[DNSReply] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)
    stopped: str | None = None


def _zone_candidates(ctx: ProbeContext, replies: Sequence[DNSReply]) -> list[str]:
    """Zones worth an SOA query: known AD domain, target name and its parents, names seen."""
    names: list[str] = []
    # facts other probes of the same host left (the LDAP probe: ad_domain, dns_host_name...)
    for key in ("ad_domain", "ad_forest", "ldap_domain", "dns_host_name"):
        value = ctx.host_facts.get(key)
        if isinstance(value, str) and value:
            names.append(value)
    if ctx.hostname and not re.fullmatch(r"[0-9.]+|[0-9a-fA-F:]+", ctx.hostname):
        names.append(ctx.hostname)
    for r in replies:
        if r.nsid and all(32 < b < 127 for b in r.nsid) and b"." in r.nsid:
            names.append(r.nsid.decode("ascii"))
        for rr in r.answer:
            if rr.rdtype == "TXT" and rr.rdclass == "CH" and rr.name in ("hostname.bind.", "id.server."):
                names.append(_txt_value(rr))
            elif rr.rdtype == "PTR":
                names.append(rr.text)
    out: list[str] = []
    for n in names:
        labels = [x for x in n.strip().rstrip(".").lower().split(".") if x]
        if not labels or len(n) > 253 or len(labels) > 127:
            continue  # (a hostile reply's name: a query for it could not even be encoded)
        if not all(re.fullmatch(r"[a-z0-9_-]{1,63}", x) for x in labels):
            continue
        # the name itself (a domain given as target), then its parents down to two labels
        for i in range(len(labels) - 1):
            cand = ".".join(labels[i:])
            if cand not in out:
                out.append(cand)
    return out


class DNSProbe(Probe):
    """DNS over UDP and TCP: CHAOS strings, NSID, root/zone SOA and NS, AD SRV records.

    Default ports: 53 (udp, tcp). Sends read-only queries with RD clear (see the module
    docstring for the list); collects the product and version (from version strings or
    behaviour), NSID, recursion available, authoritative zones, the AD domain and its DCs.
    """

    name = "dns"
    services = ("dns",)
    transports = ("udp", "tcp")
    ports = (53,)
    server_first = False
    rarity = 3
    summary = "DNS: version.bind/NSID/SOA/AD SRV; names BIND, Samba, dnsmasq, Unbound, PowerDNS, Knot, NSD, MS DNS"

    def _ask(
        self,
        ctx: ProbeContext,
        st: _State,
        name: str,
        rdtype: str,
        rdclass: str = "IN",
        *,
        nsid: bool = False,
    ) -> Generator[Step, Any, DNSReply | None]:
        """One query: send, read until a matching reply (bounded), resend on UDP timeouts.

        Returns the matching reply, or None when only unmatched/malformed replies came (also
        when the wait for a matching one then timed out). Lets RecvTimeout (after UDP_TRIES sends
        with no reply at all) and RecvClosed propagate.
        """
        udp = ctx.transport == "udp"
        tries = UDP_TRIES if udp else 1
        unmatched = 0
        # the version.bind reply is what nmap's service database matches under these probe names
        tag = None
        if (name, rdtype, rdclass) == ("version.bind", "TXT", "CH"):
            tag = "DNSVersionBindReq" if udp else "DNSVersionBindReqTCP"
        for attempt in range(tries):
            qid = ctx.rng.randrange(0x10000)
            wire = build_query(name, rdtype, rdclass, qid=qid, nsid=nsid)
            yield Send(wire if udp else tcp_wrap(wire))
            while unmatched <= MAX_UNMATCHED:
                try:
                    if udp:
                        msg = yield Recv(frame_dns_udp, max_size=TCP_MAX)
                    else:
                        msg = yield Recv(frame_dns_tcp, max_size=TCP_MAX)
                except RecvTimeout:
                    if attempt + 1 < tries:
                        break  # resend with a fresh id
                    if unmatched:
                        return None  # something answered, but never with a matching reply
                    raise
                except NotThisProtocol as exc:
                    # TCP: a bad length prefix leaves the stream unframeable: nothing more to read
                    st.rejected.append(f"{name} {rdtype}: {exc}")
                    return None
                try:
                    reply = parse_dns_reply(msg if udp else msg[2:])
                except NotThisProtocol as exc:
                    st.rejected.append(f"{name} {rdtype}: {exc}")
                    unmatched += 1
                    continue
                if reply_matches(reply, qid, name, rdtype, rdclass):
                    if tag is not None:
                        ctx.responses.setdefault(tag, as_database_reply(msg, udp))
                    return reply
                q = " ".join(reply.question) if reply.question else "(no question)"
                st.rejected.append(f"{name} {rdtype}: ignored reply id {reply.id} (sent {qid}), question {q}")
                unmatched += 1
            else:
                return None
        return None  # pragma: no cover  (the loop either returns or raises)

    def passive_dialogue(self, ctx: ProbeContext) -> Generator[Step, Any, Finding]:
        """Identify from recorded replies alone (a capture of another client's queries).

        Their ids and questions cannot match ours, so this reads every reply (at most
        ``MAX_PASSIVE`` messages, to the end of the stream) and identifies from what they hold.
        Used by :meth:`dialogue` when the context says it is a replay (``ctx.replay``).
        """
        st = _State()
        framer = frame_dns_udp if ctx.transport == "udp" else frame_dns_tcp
        for _ in range(MAX_PASSIVE):
            try:
                msg = yield Recv(framer, max_size=TCP_MAX)
            except (RecvClosed, RecvTimeout):
                break
            except NotThisProtocol as exc:
                st.rejected.append(str(exc))
                break
            try:
                st.replies.append(parse_dns_reply(msg if ctx.transport == "udp" else msg[2:]))
            except NotThisProtocol as exc:
                st.rejected.append(str(exc))
        if not st.replies:
            raise NotThisProtocol("no well-formed DNS response: " + "; ".join(st.rejected[:4]))
        f = identify(st.replies, queries_had_edns=None)
        if st.rejected:
            f.details["rejected"] = st.rejected[:16]
        f.details["queries_answered"] = len(st.replies)
        return ctx.found(f)

    def dialogue(self, ctx: ProbeContext) -> Generator[Step, Any, Finding]:
        """Ask the queries listed in the module docstring; return the identification."""
        if getattr(ctx, "replay", False):
            return (yield from self.passive_dialogue(ctx))
        st = _State()

        # 1. the query that decides "DNS or not": timeouts propagate (open|filtered / closed)
        first = yield from self._ask(ctx, st, ".", "SOA", nsid=True)
        if first is None:
            raise NotThisProtocol("no reply matched the query: " + "; ".join(st.rejected[: MAX_UNMATCHED + 1]))
        st.replies.append(first)
        self._store(ctx, st)

        plan: list[tuple[str, str, str]] = [(".", "NS", "IN")]
        plan += [(n, "TXT", "CH") for n in CHAOS_NAMES]
        try:
            plan.append((dns.reversename.from_address(ctx.address).to_text(), "PTR", "IN"))
        except (dns.exception.SyntaxError, ValueError):
            pass  # not an IP address: no reverse name
        yield from self._run(ctx, st, plan)
        if st.stopped is None and identify(st.replies, queries_had_edns=True).product is None:
            # hidden version strings: Unbound answers this special-use name from a built-in zone
            yield from self._run_one(ctx, st, BUILTIN_ZONE_QUERY, "SOA")

        # zones: SOA of candidates until one is authoritative here, then its NS
        zone: str | None = None
        if st.stopped is None:
            for cand in _zone_candidates(ctx, st.replies)[:MAX_ZONE_QUERIES]:
                r = yield from self._run_one(ctx, st, cand, "SOA")
                if r is not None and r.rcode == "NOERROR" and r.aa and any(rr.rdtype == "SOA" for rr in r.answer):
                    zone = cand
                    break
                if st.stopped:
                    break
        if zone and st.stopped is None:
            yield from self._run(ctx, st, [(zone, "NS", "IN")])
            dc = yield from self._run_one(ctx, st, f"_ldap._tcp.dc._msdcs.{zone}", "SRV")
            if dc is not None and _srv_targets(dc):
                yield from self._run(
                    ctx, st, [(f"_kerberos._tcp.{zone}", "SRV", "IN"), (f"_gc._tcp.{zone}", "SRV", "IN")]
                )
        return self._store(ctx, st)

    def _run(self, ctx: ProbeContext, st: _State, plan: Sequence[tuple[str, str, str]]) -> Generator[Step, Any, None]:
        """Ask each query of ``plan`` in turn (stops when the dialogue is told to stop)."""
        for name, rdtype, rdclass in plan:
            if st.stopped:
                return
            yield from self._run_one(ctx, st, name, rdtype, rdclass)

    def _run_one(
        self, ctx: ProbeContext, st: _State, name: str, rdtype: str, rdclass: str = "IN"
    ) -> Generator[Step, Any, DNSReply | None]:
        """Ask one optional query: unanswered ones are recorded, a closed stream stops all."""
        if st.stopped:
            return None
        try:
            r = yield from self._ask(ctx, st, name, rdtype, rdclass)
        except RecvTimeout:
            st.unanswered.append(f"{name} {rdclass} {rdtype}")
            if len(st.unanswered) >= MAX_UNANSWERED:
                st.stopped = f"{len(st.unanswered)} queries unanswered"
            return None
        except RecvClosed:
            st.stopped = f"connection closed before the reply to {name} {rdclass} {rdtype}"
            return None
        if r is None:
            st.unanswered.append(f"{name} {rdclass} {rdtype}")
            if ctx.transport == "tcp" or len(st.unanswered) >= MAX_UNANSWERED:
                st.stopped = f"no usable reply to {name} {rdclass} {rdtype}"
            return None
        st.replies.append(r)
        self._store(ctx, st)
        return r

    @staticmethod
    def _store(ctx: ProbeContext, st: _State) -> Finding:
        """Identify from the replies so far and keep it as the partial result."""
        f = identify(st.replies, queries_had_edns=True)
        if st.rejected:
            f.details["rejected"] = st.rejected[:16]
        if st.unanswered:
            f.details["unanswered"] = st.unanswered
        if st.stopped:
            f.details["stopped"] = st.stopped
        f.details["queries_answered"] = len(st.replies)
        return ctx.found(f)
