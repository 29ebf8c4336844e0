"""Pure decoders for the layers under the application: link, IPv4/IPv6, TCP, UDP.

Written by hand rather than with scapy's dissectors: a replay decodes millions of packets and
needs only a handful of header fields, and scapy's full dissection costs about 100 times more per
packet. Every function works on ``bytes`` and an offset, checks every length against the buffer
and raises :class:`Undecodable` (with a short, countable reason) instead of any other exception;
its subclass :class:`Damaged` marks a packet shorter or other than its own headers claim.

Byte layouts are described where they are decoded.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "ETH_IPV4",
    "ETH_IPV6",
    "Damaged",
    "IPPacket",
    "TCPSegment",
    "UDPDatagram",
    "Undecodable",
    "flow_key",
    "link_to_ip",
    "parse_ip",
    "parse_ipv4",
    "parse_ipv6",
    "parse_tcp",
    "parse_udp",
]

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
_VLAN_TAGS = (0x8100, 0x88A8, 0x9100, 0x9200)
#: most VLAN tags we peel off one frame (QinQ is 2; more is a loop or garbage)
MAX_VLAN_TAGS = 4

# pcap LINKTYPE_* values (https://www.tcpdump.org/linktypes.html)
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW_12 = 12  # DLT_RAW on some BSDs
LINKTYPE_RAW_14 = 14  # DLT_RAW on OpenBSD
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_TCP = struct.Struct("!HHIIBB")
_UDP = struct.Struct("!HHH")


class Undecodable(Exception):
    """The packet cannot be decoded further; ``str(exc)`` is a short reason used as a counter key."""


class Damaged(Undecodable):
    """An :class:`Undecodable` packet that contradicts its own headers (shorter than they claim,
    a version nibble other than the link layer said): damage, worth reporting with the record
    number, unlike a link type or protocol the replay simply does not decode."""


def _ip_version_ethertype(data: bytes, off: int) -> int:
    """The ethertype of a bare IP packet (raw link types), from its version nibble."""
    if off >= len(data):
        raise Damaged("empty raw-IP frame")
    version = data[off] >> 4
    if version == 4:
        return ETH_IPV4
    if version == 6:
        return ETH_IPV6
    raise Damaged(f"raw-IP version {version}")


def link_to_ip(linktype: int, data: bytes) -> tuple[int, int]:
    """Peel the link layer: return ``(ethertype, offset of the network header)``.

    Raises :class:`Undecodable` for link types and ethertypes other than IPv4/IPv6 (counted by the
    caller as "unknown link type N" / "ethertype 0x...").
    """
    n = len(data)
    if linktype == LINKTYPE_ETHERNET:
        # dst(6) src(6) ethertype(2), then any number of 802.1Q/802.1ad tags: TCI(2) ethertype(2)
        if n < 14:
            raise Damaged("short ethernet frame")
        (etype,) = _U16.unpack_from(data, 12)
        off = 14
        tags = 0
        while etype in _VLAN_TAGS:
            tags += 1
            if tags > MAX_VLAN_TAGS or off + 4 > n:
                raise Damaged("bad VLAN tag stack")
            (etype,) = _U16.unpack_from(data, off + 2)
            off += 4
        if etype < 0x0600:
            # an 802.3 length field: LLC/SNAP follows, never IP in the captures we care about
            raise Undecodable("802.3 LLC frame")
    elif linktype == LINKTYPE_LINUX_SLL:
        # packet type(2) ARPHRD(2) addr len(2) addr(8) protocol(2)
        if n < 16:
            raise Damaged("short SLL header")
        (etype,) = _U16.unpack_from(data, 14)
        off = 16
    elif linktype == LINKTYPE_LINUX_SLL2:
        # protocol(2) reserved(2) ifindex(4) ARPHRD(2) packet type(1) addr len(1) addr(8)
        if n < 20:
            raise Damaged("short SLL2 header")
        (etype,) = _U16.unpack_from(data, 0)
        off = 20
    elif linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        # a 4-byte address family, host order for NULL, network order for LOOP; the values differ
        # between systems (AF_INET6 is 10, 24, 28 or 30), so only AF_INET=2 is checked and the
        # IP version nibble decides
        if n < 4:
            raise Damaged("short loopback header")
        off = 4
        etype = _ip_version_ethertype(data, off)
    elif linktype in (LINKTYPE_RAW, LINKTYPE_RAW_12, LINKTYPE_RAW_14):
        off = 0
        etype = _ip_version_ethertype(data, 0)
    elif linktype == LINKTYPE_IPV4:
        off, etype = 0, ETH_IPV4
    elif linktype == LINKTYPE_IPV6:
        off, etype = 0, ETH_IPV6
    else:
        raise Undecodable(f"link type {linktype}")
    if etype not in (ETH_IPV4, ETH_IPV6):
        raise Undecodable(f"ethertype 0x{etype:04x}")
    return etype, off


@dataclass(slots=True)
class IPPacket:
    """An IP packet (v4 or v6) reduced to what the replay needs.

    ``frag_id`` is None for a whole datagram; for a fragment it is the identification, with
    ``frag_offset`` in bytes and ``more_fragments`` set on all but the last fragment.
    """

    version: int
    src: bytes
    dst: bytes
    proto: int
    payload: bytes
    frag_id: int | None = None
    frag_offset: int = 0
    more_fragments: bool = False


def parse_ipv4(data: bytes, off: int = 0) -> IPPacket:
    """Decode an IPv4 header at ``off`` (RFC 791)."""
    if len(data) < off + 20:
        raise Damaged("short IPv4 header")
    vihl = data[off]
    if vihl >> 4 != 4:
        raise Damaged("IPv4 version mismatch")
    ihl = (vihl & 0x0F) * 4
    if ihl < 20 or len(data) < off + ihl:
        raise Damaged("bad IPv4 header length")
    # version/ihl(1) tos(1) total length(2) id(2) flags+fragment offset(2) ttl(1) proto(1) sum(2)
    (total,) = _U16.unpack_from(data, off + 2)
    (ident,) = _U16.unpack_from(data, off + 4)
    (frag,) = _U16.unpack_from(data, off + 6)
    proto = data[off + 9]
    end = off + total
    if total < ihl:
        # TSO/offloaded captures write 0 here; take what was captured
        if total != 0:
            raise Damaged("bad IPv4 total length")
        end = len(data)
    payload = data[off + ihl : min(end, len(data))]
    mf = bool(frag & 0x2000)
    foff = (frag & 0x1FFF) * 8
    pkt = IPPacket(4, data[off + 12 : off + 16], data[off + 16 : off + 20], proto, payload)
    if mf or foff:
        pkt.frag_id, pkt.frag_offset, pkt.more_fragments = ident, foff, mf
    return pkt


# extension headers walked over: hop-by-hop, routing, destination options, mobility, HIP, shim6
_IPV6_EXT = {0, 43, 60, 135, 139, 140}
_IPV6_FRAGMENT = 44
_IPV6_AH = 51
_IPV6_NONE = 59
MAX_IPV6_EXT = 16


def parse_ipv6(data: bytes, off: int = 0) -> IPPacket:
    """Decode an IPv6 header at ``off`` and walk its extension headers (RFC 8200)."""
    if len(data) < off + 40:
        raise Damaged("short IPv6 header")
    if data[off] >> 4 != 6:
        raise Damaged("IPv6 version mismatch")
    # vtcfl(4) payload length(2) next header(1) hop limit(1) src(16) dst(16)
    (plen,) = _U16.unpack_from(data, off + 4)
    nxt = data[off + 6]
    src = data[off + 8 : off + 24]
    dst = data[off + 24 : off + 40]
    end = off + 40 + plen if plen else len(data)  # 0: jumbogram or offloaded
    end = min(end, len(data))
    pos = off + 40
    frag: tuple[int, int, bool] | None = None
    for _ in range(MAX_IPV6_EXT):
        if nxt in _IPV6_EXT:
            if pos + 2 > end:
                raise Damaged("short IPv6 extension header")
            nxt, hlen = data[pos], (data[pos + 1] + 1) * 8
            pos += hlen
        elif nxt == _IPV6_AH:
            if pos + 2 > end:
                raise Damaged("short IPv6 AH header")
            nxt, hlen = data[pos], (data[pos + 1] + 2) * 4
            pos += hlen
        elif nxt == _IPV6_FRAGMENT:
            # next(1) reserved(1) offset+flags(2) identification(4)
            if pos + 8 > end:
                raise Damaged("short IPv6 fragment header")
            (offflags,) = _U16.unpack_from(data, pos + 2)
            (ident,) = _U32.unpack_from(data, pos + 4)
            nxt = data[pos]
            frag = (ident, offflags & 0xFFF8, bool(offflags & 1))
            pos += 8
            if frag[1] or frag[2]:
                break  # the rest is fragment data; headers after it are in the first fragment
        elif nxt == _IPV6_NONE:
            raise Undecodable("IPv6 no next header")
        else:
            break
    else:
        raise Damaged("too many IPv6 extension headers")
    if pos > end:
        raise Damaged("IPv6 extension headers past the end")
    pkt = IPPacket(6, src, dst, nxt, data[pos:end])
    if frag is not None and (frag[1] or frag[2]):
        pkt.frag_id, pkt.frag_offset, pkt.more_fragments = frag
    return pkt


def parse_ip(etype: int, data: bytes, off: int) -> IPPacket:
    """Decode the IPv4 or IPv6 packet found by :func:`link_to_ip`."""
    return parse_ipv4(data, off) if etype == ETH_IPV4 else parse_ipv6(data, off)


# TCP flag bits
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


@dataclass(slots=True)
class TCPSegment:
    """The TCP header fields the reassembly needs, and the segment's payload."""

    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    payload: bytes


def parse_tcp(data: bytes) -> TCPSegment:
    """Decode a TCP header (RFC 9293) and return the segment."""
    if len(data) < 20:
        raise Damaged("short TCP header")
    # sport(2) dport(2) seq(4) ack(4) data offset(4 bits)+reserved(4 bits) flags(1) ...
    sport, dport, seq, ack, doff, flags = _TCP.unpack_from(data, 0)
    hlen = (doff >> 4) * 4
    if hlen < 20 or hlen > len(data):
        raise Damaged("bad TCP data offset")
    return TCPSegment(sport, dport, seq, ack, flags, data[hlen:])


@dataclass(slots=True)
class UDPDatagram:
    """A UDP datagram's ports and payload."""

    sport: int
    dport: int
    payload: bytes


def parse_udp(data: bytes) -> UDPDatagram:
    """Decode a UDP header (RFC 768); the length field bounds the payload when it is sane."""
    if len(data) < 8:
        raise Damaged("short UDP header")
    sport, dport, length = _UDP.unpack_from(data, 0)
    end = length if 8 <= length <= len(data) else len(data)
    return UDPDatagram(sport, dport, data[8:end])


_PORTS = struct.Struct("!HH").unpack_from
# dst(6) src(6) ethertype(2) | version/ihl(1) tos(1) length(2) id(2) flags+offset(2) ttl(1)
# proto(1) checksum(2) src(4) dst(4)
_ETH_IPV4 = struct.Struct("!12xHB5xHxB2x4s4s").unpack_from
# sport(2) dport(2) seq(4) ack(4) data offset(1) flags(1)
_TCP_PORTS_FLAGS = struct.Struct("!HH9xB").unpack_from
_RAW_LINKS = frozenset({LINKTYPE_RAW, LINKTYPE_RAW_12, LINKTYPE_RAW_14, LINKTYPE_IPV4, LINKTYPE_IPV6})


def flow_key(linktype: int, data: bytes) -> tuple[int, bytes, int, bytes, int, int] | None:
    """The replay's fast path: ``(IP protocol, src, sport, dst, dport, TCP flags)`` of a plain packet.

    Decodes only what is needed to find the packet's flow: an unfragmented IPv4 or IPv6 (no
    extension header) TCP or UDP packet, on Ethernet without VLAN tags, Linux SLL/SLL2, loopback or
    raw IP. Anything else, and any packet shorter than those headers, gives None: the caller decodes
    it fully (:func:`link_to_ip` and the rest), which also reports damage. The flags are 0 for UDP.
    """
    n = len(data)
    if linktype == LINKTYPE_ETHERNET and n >= 54:
        # the common case in one go: Ethernet, IPv4 without options, not a fragment
        etype, vihl, frag, proto, src, dst = _ETH_IPV4(data)
        if etype == ETH_IPV4 and vihl == 0x45 and not frag & 0x3FFF:
            if proto == 6:
                sport, dport, flags = _TCP_PORTS_FLAGS(data, 34)
                return 6, src, sport, dst, dport, flags
            if proto == 17:
                sport, dport = _PORTS(data, 34)
                return 17, src, sport, dst, dport, 0
            return None
    if linktype == LINKTYPE_ETHERNET:
        off = 14
        et = data[12:14]  # ethertype after dst(6) src(6)
        if et == b"\x08\x00":
            version = 4
        elif et == b"\x86\xdd":
            version = 6
        else:
            return None
    elif linktype in _RAW_LINKS:
        off = 0
        version = data[0] >> 4 if n else 0
    elif linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        off = 4  # address family(4), then the IP version nibble decides
        version = data[4] >> 4 if n > 4 else 0
    elif linktype == LINKTYPE_LINUX_SLL:
        off = 16  # ... protocol(2) at 14
        et = data[14:16]
        version = 4 if et == b"\x08\x00" else 6 if et == b"\x86\xdd" else 0
    elif linktype == LINKTYPE_LINUX_SLL2:
        off = 20  # protocol(2) first
        et = data[0:2]
        version = 4 if et == b"\x08\x00" else 6 if et == b"\x86\xdd" else 0
    else:
        return None
    if version == 4:
        # version/ihl(1) tos(1) len(2) id(2) flags+fragment offset(2) ttl(1) proto(1) sum(2) src(4) dst(4)
        if n < off + 20:
            return None
        vihl = data[off]
        ihl = (vihl & 0x0F) * 4
        # MF (0x20 of byte 6) or any fragment offset bit: a fragment, reassembled on the slow path
        if vihl >> 4 != 4 or ihl < 20 or data[off + 6] & 0x3F or data[off + 7]:
            return None
        proto = data[off + 9]
        src = data[off + 12 : off + 16]
        dst = data[off + 16 : off + 20]
        l4 = off + ihl
    elif version == 6:
        # vtcfl(4) payload length(2) next header(1) hop limit(1) src(16) dst(16)
        if n < off + 40 or data[off] >> 4 != 6:
            return None
        proto = data[off + 6]
        src = data[off + 8 : off + 24]
        dst = data[off + 24 : off + 40]
        l4 = off + 40
    else:
        return None
    if proto == 6:
        # sport(2) dport(2) seq(4) ack(4) offset(1) flags(1)
        if n < l4 + 20:
            return None
        sport, dport = _PORTS(data, l4)
        return 6, src, sport, dst, dport, data[l4 + 13]
    if proto == 17:
        if n < l4 + 8:
            return None
        sport, dport = _PORTS(data, l4)
        return 17, src, sport, dst, dport, 0
    return None
