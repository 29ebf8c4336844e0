"""IP fragment reassembly, TCP stream reassembly and the bounded flow table of a replay.

Everything here is bounded: bytes kept per flow direction (the probes only need the start of each
direction), segments kept per direction, live flows (least recently used flows are flushed), total
bytes held by all flows, and pending IP fragments. Flushed flows are handed to a callback, so a
capture of millions of packets is processed in constant memory.

Sequence numbers are compared modulo 2**32, relative to the stream's start: the SYN's sequence
number plus one when the SYN was captured, else the first data segment seen (a flow whose start was
not captured), lowered when an earlier segment arrives out of order.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from scanner.replay.layers import ACK, FIN, RST, SYN, TCPSegment

__all__ = [
    "Assembled",
    "FlowLimits",
    "FlowTable",
    "FragmentCache",
    "HalfStream",
    "TCPFlow",
    "UDPFlow",
]


@dataclass(frozen=True, slots=True)
class FlowLimits:
    """The memory bounds of a replay (defaults keep a 1 GB capture well under 300 MB)."""

    #: bytes kept per TCP flow direction, counted from the start of the stream
    per_direction: int = 16 * 1024
    #: segments kept per direction (bounds the cost of many tiny or overlapping segments)
    segments_per_direction: int = 2048
    #: live flows; the least recently used is flushed past this
    max_flows: int = 20000
    #: payload bytes held by all live flows together
    max_total_bytes: int = 96 * 1024 * 1024
    #: datagrams kept per UDP flow (in arrival order, both directions)
    datagrams_per_flow: int = 32
    #: pending fragmented IP datagrams
    max_fragment_datagrams: int = 512
    #: seconds (capture time) after which an incomplete fragmented datagram is dropped
    fragment_timeout: float = 60.0
    #: seconds (capture time) without a packet after which a flow is flushed (Zeek's TCP
    #: inactivity timeout): a conversation whose close was not captured is identified then, not
    #: at the end of the file
    idle_timeout: float = 300.0


_MOD = 1 << 32
_HALF = 1 << 31


def _rel(seq: int, base: int) -> int:
    """``seq - base`` as a signed 32-bit distance (sequence numbers wrap)."""
    return ((seq - base + _HALF) % _MOD) - _HALF


@dataclass(slots=True)
class Assembled:
    """One direction of a TCP flow after reassembly.

    ``data`` is the first contiguous run of bytes from the start of the stream; a missing segment
    ends it (a gap is never filled with zeros). ``gaps`` lists (offset, length) of the holes seen
    (at most 16), ``total`` the bytes known past the gaps too, ``truncated`` whether bytes past the
    per-direction cap were dropped, and ``from_start`` whether the stream's start was captured (SYN
    seen).
    """

    data: bytes
    gaps: list[tuple[int, int]]
    total: int
    truncated: bool
    from_start: bool
    fin: bool


class HalfStream:
    """One direction of a TCP flow: segments keyed by their offset from the stream start."""

    __slots__ = ("base", "fin", "packets", "segs", "stored", "syn", "truncated")

    def __init__(self) -> None:
        self.base: int | None = None
        self.syn = False
        self.fin = False
        self.truncated = False
        self.packets = 0
        self.stored = 0
        self.segs: dict[int, bytes] = {}

    def on_syn(self, seq: int) -> None:
        """A SYN fixes the stream start at ``seq + 1``; segments seen before it are re-keyed."""
        start = (seq + 1) % _MOD
        if self.syn:
            return
        self.syn = True
        if self.base is not None and self.base != start and self.segs:
            shift = _rel(self.base, start)
            self.segs = {rel + shift: p for rel, p in self.segs.items()}
        self.base = start

    def add(self, seq: int, payload: bytes, limits: FlowLimits) -> int:
        """Store a data segment; return how many bytes the stored total grew by."""
        if self.base is None:
            self.base = seq
        rel = _rel(seq, self.base)
        cap = limits.per_direction
        if rel >= cap:
            self.truncated = True
            return 0
        if rel < 0:
            if self.syn or rel < -cap:
                # before the SYN's start (a bogus or very old segment): drop it
                return 0
            # a stream without SYN: an earlier segment arrived late; lower the start
            self.segs = {r - rel: p for r, p in self.segs.items()}
            self.base = seq
            rel = 0
        if rel + len(payload) > cap:
            payload = payload[: cap - rel]
            self.truncated = True
        old = self.segs.get(rel)
        if old is not None:
            if len(old) >= len(payload):
                return 0  # a retransmission: the first copy wins
            payload = old + payload[len(old) :]
        elif len(self.segs) >= limits.segments_per_direction or self.stored >= 2 * cap:
            self.truncated = True
            return 0
        grown = len(payload) - (len(old) if old is not None else 0)
        self.segs[rel] = payload
        self.stored += grown
        return grown

    def assemble(self) -> Assembled:
        """Order the segments, drop retransmitted and overlapping bytes, record the gaps."""
        if not self.segs:
            return Assembled(b"", [], 0, self.truncated, self.syn, self.fin)
        items = sorted(self.segs.items())
        pos = 0 if self.syn else items[0][0]
        first = bytearray()
        in_first = True
        gaps: list[tuple[int, int]] = []
        total = 0
        for rel, payload in items:
            end = rel + len(payload)
            if end <= pos:
                continue  # wholly retransmitted or overlapped
            if rel > pos:
                if len(gaps) < 16:
                    gaps.append((pos, rel - pos))
                in_first = False
                pos = rel
            piece = payload[pos - rel :]
            if in_first:
                first += piece
            total += len(piece)
            pos = end
        return Assembled(bytes(first), gaps, total, self.truncated, self.syn, self.fin)


@dataclass(slots=True)
class TCPFlow:
    """A TCP connection between endpoints ``a`` and ``b`` (as (address bytes, port)).

    ``sides[0]`` holds what ``a`` sent, ``sides[1]`` what ``b`` sent. Which one is the server is
    decided later (:mod:`scanner.replay.identify`) from ``syn_from`` / ``synack_from`` when the
    handshake was captured, else from ports and greetings.
    """

    a: tuple[bytes, int]
    b: tuple[bytes, int]
    first_ts: float | None
    last_ts: float | None = None
    packets: int = 0
    sides: tuple[HalfStream, HalfStream] = field(default_factory=lambda: (HalfStream(), HalfStream()))
    #: index of the side that sent a SYN without ACK (the client), if captured
    syn_from: int | None = None
    #: index of the side that sent SYN+ACK (the server), if captured
    synack_from: int | None = None
    rst: bool = False
    #: payload is not kept (the endpoint is already identified): count packets only
    count_only: bool = False
    stored: int = 0
    #: one side reached its byte budget (told to ``on_full`` once)
    full: bool = False

    @property
    def closed(self) -> bool:
        """Both sides sent FIN, or one sent RST."""
        return self.rst or (self.sides[0].fin and self.sides[1].fin)


@dataclass(slots=True)
class UDPFlow:
    """The datagrams between two UDP endpoints, in arrival order: (side index, payload, ts)."""

    a: tuple[bytes, int]
    b: tuple[bytes, int]
    first_ts: float | None
    last_ts: float | None = None
    packets: int = 0
    datagrams: list[tuple[int, bytes]] = field(default_factory=list)
    dropped: int = 0
    count_only: bool = False
    stored: int = 0
    #: a datagram came back from the side that did not speak first (told to ``on_answer`` once)
    answered: bool = False


#: four-tuples remembered after a flow was flushed at its close
MAX_RECENTLY_CLOSED = 4096

Flow = TCPFlow | UDPFlow
FlowKey = tuple[int, bytes, int, bytes, int]


class FlowTable:
    """Live TCP and UDP flows, bounded; flushed flows go to ``on_flush``.

    ``count_only(addr, port, proto)`` is asked when a flow is created: when it says the endpoint is
    already identified, the flow only counts packets (no payload kept). ``on_answer(flow)`` is told
    once per UDP flow when the first datagram comes back from the other side: UDP flows have no
    close, and a replay that waited for the end of the file to identify them could not stop
    looking at an endpoint early. ``on_full(flow)`` is told once per TCP flow when one side
    reaches its byte budget (:attr:`FlowLimits.per_direction`), for the same reason: a long
    download may not end before the capture does.
    """

    def __init__(
        self,
        on_flush: Callable[[Flow], None],
        limits: FlowLimits | None = None,
        count_only: Callable[[tuple[bytes, int], tuple[bytes, int], int], bool] | None = None,
        on_answer: Callable[[UDPFlow], None] | None = None,
        on_full: Callable[[TCPFlow], None] | None = None,
    ) -> None:
        self.limits = limits or FlowLimits()
        self.on_flush = on_flush
        self.count_only = count_only
        self.on_answer = on_answer
        self.on_full = on_full
        self.flows: OrderedDict[FlowKey, Flow] = OrderedDict()
        self.total_bytes = 0
        #: flows flushed early because of the limits (not at their end or at the end of the file)
        self.evicted = 0
        #: flows flushed after :attr:`FlowLimits.idle_timeout` without a packet
        self.expired = 0
        #: TCP flows flushed because they closed (FIN both ways, or RST)
        self.closed_flushed = 0
        #: four-tuples of TCP flows flushed at their close, so the last ACKs (and retransmitted
        #: FIN/RST) that follow do not open a new, empty flow (bounded, oldest forgotten first)
        self.recently_closed: OrderedDict[FlowKey, None] = OrderedDict()

    def _flush(self, key: FlowKey) -> None:
        flow = self.flows.pop(key)
        self.total_bytes -= flow.stored
        self.on_flush(flow)

    def _expire(self, ts: float) -> None:
        """Flush the flows idle since before ``ts - idle_timeout`` (the least recently used come
        first, so this looks at one flow when none is idle)."""
        limit = ts - self.limits.idle_timeout
        flows = self.flows
        while flows:
            key = next(iter(flows))
            last = flows[key].last_ts
            if last is None or last >= limit:
                return
            self.expired += 1
            self._flush(key)

    def _enforce(self) -> None:
        lim = self.limits
        while self.flows and (len(self.flows) > lim.max_flows or self.total_bytes > lim.max_total_bytes):
            self.evicted += 1
            self._flush(next(iter(self.flows)))

    def add_tcp(self, ts: float | None, src: bytes, dst: bytes, seg: TCPSegment) -> None:
        """Account one TCP segment from ``src:sport`` to ``dst:dport``."""
        s, d = (src, seg.sport), (dst, seg.dport)
        if s <= d:
            key: FlowKey = (6, src, seg.sport, dst, seg.dport)
            side = 0
        else:
            key = (6, dst, seg.dport, src, seg.sport)
            side = 1
        flow = self.flows.get(key)
        flags = seg.flags
        pure_syn = flags & (SYN | ACK) == SYN
        if flow is not None and (not isinstance(flow, TCPFlow) or (pure_syn and _restarted(flow, side))):
            self._flush(key)  # a new connection on the same four-tuple
            flow = None
        if flow is None and key in self.recently_closed:
            if not seg.payload and not flags & SYN:
                return  # the tail of a connection already flushed at its close
            del self.recently_closed[key]
        if flow is None:
            a, b = (s, d) if side == 0 else (d, s)
            flow = TCPFlow(a, b, ts)
            if self.count_only is not None:
                flow.count_only = self.count_only(a, b, 6)
            self.flows[key] = flow
        else:
            self.flows.move_to_end(key)
        assert isinstance(flow, TCPFlow)
        flow.packets += 1
        if ts is not None:
            flow.last_ts = ts
        half = flow.sides[side]
        half.packets += 1
        if flags & SYN:
            if flags & ACK:
                flow.synack_from = side
            else:
                flow.syn_from = side
            half.on_syn(seg.seq)
        if flags & RST:
            flow.rst = True
        if seg.payload and not flow.count_only:
            grown = half.add(seg.seq, seg.payload, self.limits)
            flow.stored += grown
            self.total_bytes += grown
            if half.truncated and not flow.full:
                flow.full = True
                if self.on_full is not None:
                    self.on_full(flow)
        if flags & FIN:
            half.fin = True
        if flow.closed:
            # the connection is over: identify it now, not at the limits or the end of the file
            self.closed_flushed += 1
            self._flush(key)
            self.recently_closed[key] = None
            if len(self.recently_closed) > MAX_RECENTLY_CLOSED:
                self.recently_closed.popitem(last=False)
            return
        if ts is not None:
            self._expire(ts)
        self._enforce()

    def add_udp(self, ts: float | None, src: bytes, sport: int, dst: bytes, dport: int, payload: bytes) -> None:
        """Account one UDP datagram."""
        s, d = (src, sport), (dst, dport)
        if s <= d:
            key: FlowKey = (17, src, sport, dst, dport)
            side = 0
        else:
            key = (17, dst, dport, src, sport)
            side = 1
        flow = self.flows.get(key)
        if flow is None:
            a, b = (s, d) if side == 0 else (d, s)
            flow = UDPFlow(a, b, ts)
            if self.count_only is not None:
                flow.count_only = self.count_only(a, b, 17)
            self.flows[key] = flow
        else:
            self.flows.move_to_end(key)
        assert isinstance(flow, UDPFlow)
        flow.packets += 1
        if ts is not None:
            flow.last_ts = ts
        if flow.count_only:
            return
        if len(flow.datagrams) < self.limits.datagrams_per_flow:
            kept = payload[: self.limits.per_direction]
            flow.datagrams.append((side, kept))
            flow.stored += len(kept)
            self.total_bytes += len(kept)
            if not flow.answered and side != flow.datagrams[0][0] and self.on_answer is not None:
                flow.answered = True
                self.on_answer(flow)
        else:
            flow.dropped += 1
        if ts is not None:
            self._expire(ts)
        self._enforce()

    def flush_all(self) -> None:
        """Flush every live flow (end of the capture)."""
        while self.flows:
            self._flush(next(iter(self.flows)))


def _restarted(flow: TCPFlow, side: int) -> bool:
    """A pure SYN on a known four-tuple starts a new connection unless it is a retransmitted SYN."""
    if flow.closed:
        return True
    if flow.syn_from is None:
        return bool(flow.sides[0].segs or flow.sides[1].segs)
    return flow.syn_from != side or bool(flow.sides[0].segs or flow.sides[1].segs)


@dataclass(slots=True)
class _PendingDatagram:
    first_ts: float
    parts: dict[int, bytes] = field(default_factory=dict)
    total: int | None = None
    size: int = 0


class FragmentCache:
    """Reassemble fragmented IPv4/IPv6 datagrams, bounded in count, size and age."""

    MAX_DATAGRAM = 65535 + 40

    def __init__(self, limits: FlowLimits | None = None) -> None:
        self.limits = limits or FlowLimits()
        self.pending: OrderedDict[tuple[int, bytes, bytes, int, int], _PendingDatagram] = OrderedDict()
        #: fragmented datagrams given up (timeout, too many pending, overlapping or oversized)
        self.dropped = 0
        self.reassembled = 0

    def add(
        self,
        key: tuple[int, bytes, bytes, int, int],
        offset: int,
        more: bool,
        data: bytes,
        ts: float | None,
    ) -> bytes | None:
        """Add one fragment; return the whole payload once every piece is here, else None."""
        now = ts or 0.0
        lim = self.limits
        while self.pending:
            oldest_key, oldest = next(iter(self.pending.items()))
            if len(self.pending) >= lim.max_fragment_datagrams or now - oldest.first_ts > lim.fragment_timeout:
                del self.pending[oldest_key]
                self.dropped += 1
            else:
                break
        entry = self.pending.get(key)
        if entry is None:
            entry = self.pending[key] = _PendingDatagram(now)
        if offset + len(data) > self.MAX_DATAGRAM or len(entry.parts) >= 128:
            del self.pending[key]
            self.dropped += 1
            return None
        if offset not in entry.parts:
            entry.parts[offset] = data
            entry.size += len(data)
        if not more:
            entry.total = offset + len(data)
        if entry.total is None or entry.size < entry.total:
            return None
        out = bytearray()
        for off, part in sorted(entry.parts.items()):
            if off > len(out):
                return None  # still a hole (overlaps made size look complete)
            out += part[len(out) - off :]
        if len(out) < entry.total:
            return None
        del self.pending[key]
        self.reassembled += 1
        return bytes(out[: entry.total])
