"""TCP reassembly, IP fragment reassembly and the memory bounds of the flow table."""

from __future__ import annotations

import random

from scanner.replay.layers import ACK, FIN, PSH, RST, SYN, TCPSegment
from scanner.replay.reassembly import FlowLimits, FlowTable, FragmentCache, HalfStream, TCPFlow, UDPFlow

LIM = FlowLimits()
A, B = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])


def _segments(data: bytes, isn: int, size: int) -> list[tuple[int, bytes]]:
    return [((isn + i) % (1 << 32), data[i : i + size]) for i in range(0, len(data), size)]


def test_out_of_order_retransmitted_and_overlapping_segments() -> None:
    data = bytes(range(256)) * 20
    segs = _segments(data, 1000, 100)
    rng = random.Random(7)
    shuffled = segs[:]
    rng.shuffle(shuffled)
    half = HalfStream()
    half.on_syn(999)
    for seq, p in shuffled + segs[3:6]:  # retransmissions
        half.add(seq, p, LIM)
    half.add(1000 + 150, data[150:260], LIM)  # overlaps two segments
    asm = half.assemble()
    assert asm.data == data and asm.gaps == [] and asm.from_start


def test_first_copy_wins_on_conflicting_retransmission() -> None:
    half = HalfStream()
    half.on_syn(0)
    half.add(1, b"hello", LIM)
    half.add(1, b"HELLO world", LIM)  # longer: only the new tail is taken
    assert half.assemble().data == b"hello world"


def test_missing_segment_is_a_gap_not_zeros() -> None:
    half = HalfStream()
    half.on_syn(0)
    half.add(1, b"abc", LIM)
    half.add(10, b"xyz", LIM)
    asm = half.assemble()
    assert asm.data == b"abc"
    assert asm.gaps == [(3, 6)]
    assert asm.total == 6
    assert b"\x00" not in asm.data


def test_sequence_wraparound() -> None:
    data = b"0123456789" * 10
    half = HalfStream()
    half.on_syn((1 << 32) - 30)
    for seq, p in _segments(data, (1 << 32) - 29, 7):
        half.add(seq, p, LIM)
    assert half.assemble().data == data


def test_midstream_start_lowered_by_a_late_earlier_segment() -> None:
    half = HalfStream()  # no SYN captured
    half.add(5010, b"world", LIM)
    half.add(5000, b"hello ", LIM)
    half.add(5006, b"big ", LIM)
    asm = half.assemble()
    assert asm.data == b"hello big world"
    assert not asm.from_start


def test_syn_arriving_after_data_rekeys() -> None:
    half = HalfStream()
    half.add(101, b"late", LIM)
    half.add(105, b"r", LIM)
    half.on_syn(99)  # stream starts at 100: one byte is missing before "late"
    asm = half.assemble()
    assert asm.data == b"" and asm.gaps == [(0, 1)] and asm.total == 5


def test_per_direction_cap() -> None:
    lim = FlowLimits(per_direction=1000)
    half = HalfStream()
    half.on_syn(0)
    for seq, p in _segments(b"z" * 5000, 1, 300):
        half.add(seq, p, lim)
    asm = half.assemble()
    assert len(asm.data) == 1000 and asm.truncated
    assert half.stored <= 2 * lim.per_direction


def _seg(sport: int, dport: int, seq: int, flags: int, payload: bytes = b"", ack: int = 0) -> TCPSegment:
    return TCPSegment(sport, dport, seq, ack, flags, payload)


def test_flow_roles_half_close_and_port_reuse() -> None:
    flushed: list[TCPFlow | UDPFlow] = []
    table = FlowTable(flushed.append)
    table.add_tcp(1.0, A, B, _seg(40000, 25, 10, SYN))
    table.add_tcp(1.1, B, A, _seg(25, 40000, 500, SYN | ACK))
    table.add_tcp(1.2, B, A, _seg(25, 40000, 501, PSH | ACK, b"220 hi\r\n"))
    table.add_tcp(1.3, A, B, _seg(40000, 25, 11, FIN | ACK))  # client half-closes
    table.add_tcp(1.4, B, A, _seg(25, 40000, 509, PSH | ACK, b"221 bye\r\n"))  # server still talks
    table.add_tcp(2.0, A, B, _seg(40000, 25, 9000, SYN))  # new connection, same four-tuple
    assert len(flushed) == 1
    flow = flushed[0]
    assert isinstance(flow, TCPFlow)
    server = 0 if flow.a == (B, 25) else 1
    assert flow.synack_from == server and flow.syn_from == 1 - server
    assert flow.sides[server].assemble().data == b"220 hi\r\n221 bye\r\n"
    assert flow.packets == 5
    table.flush_all()
    assert len(flushed) == 2 and not table.flows


def test_flow_table_bounds_flows_and_bytes() -> None:
    lim = FlowLimits(max_flows=50, max_total_bytes=64 * 1024, per_direction=4096)
    flushed: list[TCPFlow | UDPFlow] = []
    table = FlowTable(flushed.append, lim)
    peak = 0
    for i in range(2000):
        sport = 1024 + i
        table.add_tcp(float(i), A, B, _seg(sport, 80, 1, PSH | ACK, b"G" * 1000))
        table.add_tcp(float(i), B, A, _seg(80, sport, 1, PSH | ACK, b"H" * 3000))
        assert len(table.flows) <= lim.max_flows
        assert table.total_bytes <= lim.max_total_bytes
        peak = max(peak, table.total_bytes)
    table.flush_all()
    assert len(flushed) == 2000 and table.total_bytes == 0
    assert table.evicted >= 2000 - lim.max_flows
    assert peak > 0


def test_rst_closes_and_count_only_keeps_no_payload() -> None:
    flushed: list[TCPFlow | UDPFlow] = []
    table = FlowTable(flushed.append, count_only=lambda a, b, proto: True)
    table.add_tcp(1.0, A, B, _seg(40000, 25, 1, PSH | ACK, b"x" * 500))
    table.add_tcp(1.0, A, B, _seg(40000, 25, 501, RST))
    table.flush_all()
    flow = flushed[0]
    assert isinstance(flow, TCPFlow) and flow.count_only and flow.rst and flow.stored == 0


def test_udp_datagrams_bounded() -> None:
    flushed: list[TCPFlow | UDPFlow] = []
    table = FlowTable(flushed.append, FlowLimits(datagrams_per_flow=4))
    for i in range(10):
        table.add_udp(float(i), A, 5000, B, 53, b"q%d" % i)
    table.flush_all()
    flow = flushed[0]
    assert isinstance(flow, UDPFlow) and len(flow.datagrams) == 4 and flow.dropped == 6 and flow.packets == 10


def test_ipv4_fragments_out_of_order() -> None:
    cache = FragmentCache()
    payload = bytes(range(200)) * 10
    key = (4, A, B, 17, 77)
    parts = [(i, payload[i : i + 400]) for i in range(0, len(payload), 400)]
    out = None
    for off, part in reversed(parts):
        out = cache.add(key, off, off + len(part) < len(payload), part, 1.0)
    assert out == payload and cache.reassembled == 1 and not cache.pending


def test_fragment_cache_is_bounded_and_times_out() -> None:
    cache = FragmentCache(FlowLimits(max_fragment_datagrams=8, fragment_timeout=5.0))
    for i in range(100):
        cache.add((4, A, B, 17, i), 0, True, b"x" * 8, float(i))
        assert len(cache.pending) <= 8
    assert cache.dropped >= 92
    assert cache.add((4, A, B, 17, 1), 0, True, b"x" * 70000, 200.0) is None  # oversized
