"""The pure link/IP/TCP/UDP decoders: every link type we claim, and hostile bytes."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scanner.replay.layers import (
    ETH_IPV4,
    ETH_IPV6,
    Undecodable,
    link_to_ip,
    parse_ip,
    parse_ipv6,
    parse_tcp,
    parse_udp,
)
from scanner.replay.pcapwriter import tcp_packet, udp_packet
from tests.replay._build import eth, null, sll, sll2

V4 = tcp_packet("10.0.0.1", "10.0.0.2", 40000, 25, 100, 0, 0x18, b"EHLO x\r\n")
V6 = udp_packet("2001:db8::1", "2001:db8::2", 5353, 53, b"q" * 20)


@pytest.mark.parametrize(
    ("linktype", "frame", "etype"),
    [
        (1, eth(V4), ETH_IPV4),
        (1, eth(V4, (80,)), ETH_IPV4),
        (1, eth(V6, (100, 200)), ETH_IPV6),  # QinQ
        (113, sll(V4), ETH_IPV4),
        (276, sll2(V6), ETH_IPV6),
        (0, null(V4), ETH_IPV4),
        (108, null(V6, big_endian=True), ETH_IPV6),
        (101, V4, ETH_IPV4),
        (12, V6, ETH_IPV6),
        (228, V4, ETH_IPV4),
        (229, V6, ETH_IPV6),
    ],
)
def test_link_types(linktype: int, frame: bytes, etype: int) -> None:
    got, off = link_to_ip(linktype, frame)
    assert got == etype
    ip = parse_ip(got, frame, off)
    if etype == ETH_IPV4:
        seg = parse_tcp(ip.payload)
        assert (seg.sport, seg.dport, seg.seq, seg.payload) == (40000, 25, 100, b"EHLO x\r\n")
        assert ip.src == bytes([10, 0, 0, 1])
    else:
        d = parse_udp(ip.payload)
        assert (d.sport, d.dport, d.payload) == (5353, 53, b"q" * 20)


def test_unknown_link_type_and_ethertype_are_named() -> None:
    with pytest.raises(Undecodable, match="link type 147"):
        link_to_ip(147, V4)
    arp = b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + b"\x00" * 28
    with pytest.raises(Undecodable, match="ethertype 0x0806"):
        link_to_ip(1, arp)


def test_ethernet_padding_is_not_payload() -> None:
    small = tcp_packet("10.0.0.1", "10.0.0.2", 1, 2, 0, 0, 0x10)  # 40 bytes, padded to 60 on the wire
    frame = eth(small) + b"\x00" * 6
    etype, off = link_to_ip(1, frame)
    assert parse_tcp(parse_ip(etype, frame, off).payload).payload == b""


def test_ipv6_extension_headers_are_walked() -> None:
    inner = udp_packet("2001:db8::1", "2001:db8::2", 1000, 53, b"dns")
    udp = inner[40:]
    hop = bytes([60, 0]) + b"\x01\x04\x00\x00\x00\x00"  # hop-by-hop -> destination options, PadN
    dst = bytes([17, 0]) + b"\x01\x04\x00\x00\x00\x00"  # destination options -> UDP
    exts = hop + dst
    hdr = struct.pack("!IHBB", 0x60000000, len(exts) + len(udp), 0, 64) + inner[8:40]
    ip = parse_ipv6(hdr + exts + udp)
    assert ip.proto == 17 and parse_udp(ip.payload).payload == b"dns"


def test_ipv6_fragment_header() -> None:
    inner = udp_packet("2001:db8::1", "2001:db8::2", 1000, 53, b"x" * 16)
    udp = inner[40:]
    frag = struct.pack("!BBHI", 17, 0, (0 << 3) | 1, 0xABCD)  # offset 0, more fragments
    hdr = struct.pack("!IHBB", 0x60000000, len(frag) + len(udp), 44, 64) + inner[8:40]
    ip = parse_ipv6(hdr + frag + udp)
    assert (ip.frag_id, ip.frag_offset, ip.more_fragments, ip.proto) == (0xABCD, 0, True, 17)


@settings(max_examples=400, deadline=None)
@given(st.integers(min_value=0, max_value=300), st.binary(max_size=120))
def test_hostile_bytes_only_raise_undecodable(linktype: int, data: bytes) -> None:
    try:
        etype, off = link_to_ip(linktype, data)
        ip = parse_ip(etype, data, off)
        if ip.proto == 6:
            parse_tcp(ip.payload)
        elif ip.proto == 17:
            parse_udp(ip.payload)
    except Undecodable:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=20, max_size=80))
def test_hostile_ip_after_valid_ethernet(data: bytes) -> None:
    frame = eth(b"\x45" + data)
    try:
        etype, off = link_to_ip(1, frame)
        parse_ip(etype, frame, off)
    except Undecodable:
        pass
