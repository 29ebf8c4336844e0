"""Pcap replay: identify the services of a capture offline, with the probes of a live scan.

Entry point: :func:`replay_paths`. The layers underneath are in :mod:`.reader` (streaming records
with scapy's raw readers), :mod:`.layers` (pure link/IP/TCP/UDP decoders), :mod:`.reassembly` (IP
fragments, TCP streams, the bounded flow table), :mod:`.identify` (flows offered to the probes),
:mod:`.tlsparse` (ServerHello and certificate) and :mod:`.pcapwriter` (``--record``).
"""

from __future__ import annotations

import os
import time
import zlib
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scanner.api import MAX_RECONNECTS, Probe
from scanner.breadth import DatabaseHandle
from scanner.replay.identify import FlowResult, Identifier, ServerStream, format_address
from scanner.replay.keylog import KeyLog
from scanner.replay.layers import (
    ACK,
    FIN,
    RST,
    SYN,
    Damaged,
    Undecodable,
    flow_key,
    link_to_ip,
    parse_ip,
    parse_tcp,
    parse_udp,
)
from scanner.replay.reader import CaptureReader, ReadError
from scanner.replay.reassembly import (
    MAX_RECENTLY_CLOSED,
    FlowLimits,
    FlowTable,
    FragmentCache,
    TCPFlow,
    UDPFlow,
)
from scanner.results import ReplaySource, ScanResult

__all__ = [
    "CAPTURE_SUFFIXES",
    "FlowLimits",
    "ReadError",
    "ReplayProgress",
    "ReplayReport",
    "capture_files",
    "replay_paths",
]

#: file names picked up when a directory is given
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".pcap.gz", ".pcapng.gz", ".dmp")
#: endpoints reported per file at most (a port scan capture could list millions)
MAX_ENDPOINTS = 100_000
#: an endpoint identified at least this confidently needs no more flows examined
DONE_CONFIDENCE = 8
#: nor does one whose best result did not improve over this many flows in a row (a protocol no
#: probe names, a product the bytes never show): like nDPI and Zeek giving up on a flow, per endpoint
STALE_FLOWS = 16
#: flows kept per file waiting for a later connection to the same endpoint (a dialogue's Reconnect)
MAX_PENDING_RECONNECTS = 32


@dataclass
class ReplayReport:
    """Everything a replay found: the results, the problems with the files, the counters."""

    results: list[ScanResult] = field(default_factory=list)
    #: damaged or unreadable files: file, record number, message
    errors: list[ReadError] = field(default_factory=list)
    files: int = 0
    #: records (packets) read from all files
    packets: int = 0
    #: packets that reached TCP or UDP
    decoded: int = 0
    #: what could not be decoded: "link type 105", "ethertype 0x0806", "IP protocol 1", ...
    unknown: Counter[str] = field(default_factory=Counter)
    flows: int = 0
    #: flows flushed early because of the memory limits
    evicted_flows: int = 0
    fragments_reassembled: int = 0
    fragments_dropped: int = 0
    endpoints_dropped: int = 0

    #: processes the replay ran in
    jobs: int = 1

    @property
    def nothing_read(self) -> bool:
        """True when not one record could be read (the CLI then exits non-zero)."""
        return self.packets == 0 and bool(self.errors)

    def absorb(self, other: ReplayReport) -> None:
        """Add the counters and problems of ``other`` (a shard of a file, or a file replayed in
        another process) to this report; results are merged separately."""
        self.errors.extend(other.errors)
        self.files += other.files
        self.packets += other.packets
        self.decoded += other.decoded
        self.unknown.update(other.unknown)
        self.flows += other.flows
        self.evicted_flows += other.evicted_flows
        self.fragments_reassembled += other.fragments_reassembled
        self.fragments_dropped += other.fragments_dropped
        self.endpoints_dropped += other.endpoints_dropped


def capture_files(paths: Iterable[str]) -> list[str]:
    """Expand directories to the capture files inside (recursively, sorted); keep files as given."""
    out: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            found = [
                str(f) for f in sorted(Path(p).rglob("*")) if f.is_file() and f.name.lower().endswith(CAPTURE_SUFFIXES)
            ]
            out.extend(found)
        else:
            out.append(p)
    return out


@dataclass(slots=True)
class _Endpoint:
    best: ScanResult | None = None
    flows: int = 0
    packets: int = 0
    first: float | None = None
    last: float | None = None
    #: flows examined since the best result last improved
    stale: int = 0
    #: a flow not flushed yet was identified well enough from its start (the flow itself still
    #: gives its result, whole, when flushed)
    early: bool = False

    @property
    def done(self) -> bool:
        """Identified well enough (or about to be), or :data:`STALE_FLOWS` flows in a row taught
        nothing new."""
        if self.stale >= STALE_FLOWS or self.early:
            return True
        return self.best is not None and _good(self.best)


def _good(r: ScanResult) -> bool:
    """Identified confidently enough to stop examining the endpoint's flows."""
    return r.verdict == "identified" and r.confidence >= DONE_CONFIDENCE


def _rank(r: ScanResult) -> tuple[int, int, int, int]:
    return (r.verdict == "identified", r.confidence, r.tls is not None, len(r.evidence))


class _FileReplay:
    """The replay of one file: flow table, identification and per-endpoint aggregation.

    The fast path: an endpoint identified well enough (:attr:`_Endpoint.done`) enters :attr:`cut`,
    and every later packet to or from it costs one :func:`~scanner.replay.layers.flow_key` (the
    5-tuple straight from the raw bytes) and a dict lookup: it is counted for the endpoint and
    dropped before IP/TCP decoding, reassembly and identification. ``shard``/``shards``: this
    replay keeps only the flows whose :func:`shard_of` is ``shard`` (the other shards are replayed
    by other processes reading the same file); shard 0 also counts what belongs to no flow.
    """

    def __init__(
        self,
        path: str,
        identifier: Identifier,
        limits: FlowLimits,
        report: ReplayReport,
        shard: int = 0,
        shards: int = 1,
        progress: Callable[[int, int, int], None] | None = None,
    ) -> None:
        self.path = path
        self.identifier = identifier
        self.report = report
        self.shard = shard
        self.shards = shards
        self.progress = progress
        #: records read from the file (every shard reads them all)
        self.packets_read = 0
        self.endpoints: dict[tuple[bytes, int, str], _Endpoint] = {}
        #: endpoints no longer examined, by (address, port, IP protocol number): the fast path
        self.cut: dict[tuple[bytes, int, int], _Endpoint] = {}
        #: four-tuples (both directions) of cut endpoints seen on the fast path, with their state
        #: (:data:`_SEEN`, :data:`_ONLY_SYN`, :data:`_LIVE`; bounded: :data:`MAX_CUT_FLOWS`)
        self.cut_flows: dict[tuple[int, bytes, int, bytes, int], int] = {}
        #: four-tuples (as in the flow table) closed on the fast path, oldest forgotten first
        self.cut_closed: OrderedDict[tuple[int, bytes, int, bytes, int], None] = OrderedDict()
        self.table = FlowTable(self._flushed, limits, self._count_only, self._udp_answered, self._tcp_full)
        self.frags = FragmentCache(limits)
        #: per TCP server endpoint: a flow whose dialogue asked to reconnect, its server side and
        #: the server streams of the later connections collected for it so far
        self.pending: dict[tuple[bytes, int], tuple[TCPFlow, int, list[ServerStream]]] = {}

    def _count_only(self, a: tuple[bytes, int], b: tuple[bytes, int], proto: int) -> bool:
        t = "tcp" if proto == 6 else "udp"
        if proto == 6 and (a in self.pending or b in self.pending):
            return False  # a later connection is what a pending Reconnect waits for
        for ep in (a, b):
            e = self.endpoints.get((ep[0], ep[1], t))
            if e is not None and e.done:
                return True
        return False

    def _known_side(self, flow: TCPFlow | UDPFlow, t: str) -> int | None:
        if not flow.count_only:
            return None
        e = self.endpoints.get((flow.a[0], flow.a[1], t))
        return 0 if e is not None and e.done else 1

    def _endpoint(self, key: tuple[bytes, int, str]) -> _Endpoint | None:
        ep = self.endpoints.get(key)
        if ep is None:
            if len(self.endpoints) >= MAX_ENDPOINTS:
                self.report.endpoints_dropped += 1
                return None
            ep = self.endpoints[key] = _Endpoint()
        return ep

    def _flushed(self, flow: TCPFlow | UDPFlow) -> None:
        self.report.flows += 1
        if self.cut_flows:
            # the flow's later packets, if any, are a new flow
            proto = 6 if isinstance(flow, TCPFlow) else 17
            (a, ap), (b, bp) = flow.a, flow.b
            for four in ((proto, a, ap, b, bp), (proto, b, bp, a, ap)):
                if self.cut_flows.get(four) == _LIVE:
                    del self.cut_flows[four]
        fr: FlowResult | None
        if isinstance(flow, TCPFlow):
            fr = self.identifier.identify_tcp(flow, self._known_side(flow, "tcp"))
            if fr is not None and not flow.count_only:
                self._reconnects(flow, fr)
        else:
            fr = self.identifier.identify_udp(flow, self._known_side(flow, "udp"))
        if fr is None:
            return
        key = (fr.server[0], fr.server[1], fr.transport)
        ep = self._endpoint(key)
        if ep is None:
            return
        ep.flows += 1
        ep.packets += fr.packets
        if fr.first_ts is not None and (ep.first is None or fr.first_ts < ep.first):
            ep.first = fr.first_ts
        if fr.last_ts is not None and (ep.last is None or fr.last_ts > ep.last):
            ep.last = fr.last_ts
        if fr.result is not None:
            if not self._offer(key, fr.result):
                ep.stale += 1
                self._maybe_cut(key, ep)
        elif not flow.count_only:
            ep.stale += 1
            self._maybe_cut(key, ep)

    def _udp_answered(self, flow: UDPFlow) -> None:
        """A UDP flow got its first answer: identify it now too, so that its endpoint can be cut
        off long before the flow is flushed (the flushed flow is identified again, whole)."""
        if flow.count_only:
            return
        fr = self.identifier.identify_udp(flow)
        if fr is not None and fr.result is not None:
            self._early((fr.server[0], fr.server[1], "udp"), fr.result)

    def _early(self, key: tuple[bytes, int, str], result: ScanResult) -> None:
        """The start of a live flow identifies ``key`` well enough: cut the endpoint off (its
        live flows go on, and give their result when flushed; this one is not kept, so that it
        cannot outrank theirs)."""
        if _good(result):
            ep = self._endpoint(key)
            if ep is not None:
                ep.early = True
                self._maybe_cut(key, ep)

    def _tcp_full(self, flow: TCPFlow) -> None:
        """A side of a TCP flow reached its byte budget: identify the flow now too (it is
        identified again, whole, when flushed), so that its endpoint can be cut off."""
        if self.pending:
            return  # keep the Reconnect pairing exactly as at the flush
        fr = self.identifier.identify_tcp(flow)
        if fr is not None and fr.result is not None and not fr.reconnect_unserved:
            self._early((fr.server[0], fr.server[1], "tcp"), fr.result)

    def _offer(self, key: tuple[bytes, int, str], result: ScanResult) -> bool:
        """Keep ``result`` if it ranks above the endpoint's best; say whether it did."""
        ep = self.endpoints.get(key)
        if ep is not None and (ep.best is None or _rank(result) > _rank(ep.best)):
            ep.best = result
            ep.stale = 0
            self._maybe_cut(key, ep)
            return True
        return False

    def _maybe_cut(self, key: tuple[bytes, int, str], ep: _Endpoint) -> None:
        """Put a done endpoint on the fast path, unless a dialogue waits for its next connection."""
        if ep.done and not (key[2] == "tcp" and (key[0], key[1]) in self.pending):
            self.cut[(key[0], key[1], 6 if key[2] == "tcp" else 17)] = ep

    def _reconnects(self, flow: TCPFlow, fr: FlowResult) -> None:
        """Serve pending ``Reconnect`` steps with this flow; keep this flow if it asks for one.

        A dialogue that reconnects (tsap: MMS refused, S7 on a fresh connection) was replayed over
        its own flow first; when a later flow of the same server endpoint ends, the dialogue is
        replayed again with that flow's server bytes as the new connection (up to
        ``MAX_RECONNECTS`` later flows), and the better result is kept.
        """
        server = fr.server
        side = 0 if flow.a == server else 1
        pend = self.pending.get(server)
        key = (server[0], server[1], "tcp")
        if pend is not None:
            pflow, pside, streams = pend
            streams.append(self.identifier.server_stream(flow, side))
            again = self.identifier.identify_tcp(pflow, pside, streams)
            if again is not None and again.result is not None:
                self._offer(key, again.result)
            if again is None or not again.reconnect_unserved or len(streams) >= MAX_RECONNECTS:
                del self.pending[server]
                ep = self.endpoints.get(key)
                if ep is not None:
                    self._maybe_cut(key, ep)
        elif fr.reconnect_unserved and len(self.pending) < MAX_PENDING_RECONNECTS:
            ep = self.endpoints.get(key)
            if ep is not None and ep.done:
                return  # identified already: its next connections are not needed
            self.pending[server] = (flow, side, [])
            self.cut.pop((server[0], server[1], 6), None)

    def _cut_flow(self, ep: _Endpoint, k: tuple[int, bytes, int, bytes, int, int], state: int | None) -> bool:
        """A packet of a cut endpoint that is not plain data on a known four-tuple (a new
        four-tuple, a SYN, FIN or RST, the first packet after a SYN): count a new flow when one
        starts. ``state``: the four-tuple's in :attr:`cut_flows` (None: not there). False when the
        packet belongs to a flow of the table (begun before the endpoint was cut): that flow goes
        on whole, on the slow path."""
        proto, src, sport, dst, dport, flags = k
        syn = proto == 6 and flags & (SYN | ACK) == SYN
        fwd, rev = (proto, src, sport, dst, dport), (proto, dst, dport, src, sport)
        canon = fwd if (src, sport) <= (dst, dport) else rev
        if state is None:
            table = self.table
            if not syn and canon in table.flows:
                self.cut_flows[fwd] = self.cut_flows[rev] = _LIVE
                return False
            if not syn and canon in self.cut_closed:
                return True  # the tail of a connection closed on the fast path
            # a four-tuple seen for the first time is a new flow, unless it is the tail of one
            # flushed at its close
            new = syn or canon not in table.recently_closed
            if len(self.cut_flows) >= MAX_CUT_FLOWS:
                self.cut_flows.clear()  # bounded: a flow seen again later counts again
        else:
            # a client's SYN after other packets starts a new connection (not a retransmitted SYN)
            new = syn and state != _ONLY_SYN
        if flags & (FIN | RST) and not syn:
            # closing: forget the four-tuple (the live four-tuples alone stay in memory) and
            # remember it among the recently closed, so that its last ACKs start no new flow
            self.cut_flows.pop(fwd, None)
            self.cut_flows.pop(rev, None)
            self.cut_closed[canon] = None
            if len(self.cut_closed) > MAX_RECENTLY_CLOSED:
                self.cut_closed.popitem(last=False)
        else:
            # both directions, so that the hot loop needs no ordering of the endpoints
            self.cut_flows[fwd] = self.cut_flows[rev] = _ONLY_SYN if syn else _SEEN
        if new:
            ep.flows += 1
            self.report.flows += 1
        return True

    def run(self) -> None:
        """Read the file through the fast path and the flow table; the endpoints are in
        :attr:`endpoints` afterwards (:func:`file_results` turns them into results)."""
        # TLS keys in the file's Decryption Secrets Blocks join the identifier's key log
        reader = CaptureReader(self.path, on_secrets=self.identifier.tls_keys.add_text)
        report = self.report
        unknown = report.unknown
        table = self.table
        cut = self.cut
        shards, shard = self.shards, self.shard
        main = shard == 0  # counts the packets and problems that belong to no flow
        progress = self.progress
        packets = decoded = 0
        cut_flows = self.cut_flows
        for ts, linktype, data, _ in reader.records():
            packets += 1
            if progress is not None and not packets & 0x3FFF:
                progress(reader.position, packets, len(self.endpoints))
            if cut or shards > 1:
                k = flow_key(linktype, data)
                if k is not None:
                    proto, src, sport, dst, dport, flags = k
                    if shards > 1 and shard_of(src, sport, dst, dport, shards) != shard:
                        continue
                    ep = cut.get((dst, dport, proto)) or cut.get((src, sport, proto))
                    if ep is not None:
                        # the fast path: count the packet for its endpoint (and its flow if new)
                        state = cut_flows.get(k[:5])
                        if (state == _SEEN and not flags & (SYN | FIN | RST)) or (
                            state != _LIVE and self._cut_flow(ep, k, state)
                        ):
                            decoded += 1
                            ep.packets += 1
                            if ts is not None and (ep.last is None or ts > ep.last):
                                ep.last = ts
                            continue
            try:
                etype, off = link_to_ip(linktype, data)
                ip = parse_ip(etype, data, off)
                payload = ip.payload
                if ip.frag_id is not None:
                    whole = self.frags.add(
                        (ip.version, ip.src, ip.dst, ip.proto, ip.frag_id),
                        ip.frag_offset,
                        ip.more_fragments,
                        payload,
                        ts,
                    )
                    if whole is None:
                        continue
                    payload = whole
                if ip.proto == 6:
                    seg = parse_tcp(payload)
                    if shards > 1 and shard_of(ip.src, seg.sport, ip.dst, seg.dport, shards) != shard:
                        continue
                    table.add_tcp(ts, ip.src, ip.dst, seg)
                elif ip.proto == 17:
                    u = parse_udp(payload)
                    if shards > 1 and shard_of(ip.src, u.sport, ip.dst, u.dport, shards) != shard:
                        continue
                    table.add_udp(ts, ip.src, u.sport, ip.dst, u.dport, u.payload)
                else:
                    if main:
                        unknown[f"IP protocol {ip.proto}"] += 1
                    continue
                decoded += 1
            except Damaged as exc:
                if main:
                    unknown[str(exc)] += 1
                    reader.note(reader.count, f"damaged packet: {exc}")
            except Undecodable as exc:
                if main:
                    unknown[str(exc)] += 1
        table.flush_all()
        self.packets_read = packets
        if progress is not None:
            progress(reader.position, packets, len(self.endpoints))
        report.decoded += decoded
        report.evicted_flows += table.evicted
        if main:
            report.packets += packets
            report.errors.extend(reader.errors)
            report.fragments_reassembled += self.frags.reassembled
            report.fragments_dropped += self.frags.dropped


#: four-tuples (each direction) of flows of cut endpoints not seen closing, remembered to count
#: their flows (about 50 MB at most: flows without FIN or RST, UDP)
MAX_CUT_FLOWS = 1 << 18
#: states of a four-tuple of a cut endpoint: packets seen; only a client's SYN seen; a flow of the
#: table (begun before the cut: its packets take the slow path until it is flushed)
_SEEN, _ONLY_SYN, _LIVE = 0, 1, 2


def shard_of(src: bytes, sport: int, dst: bytes, dport: int, shards: int) -> int:
    """Which of ``shards`` processes replays a flow: a stable hash of its likely server endpoint.

    The server is taken to be the endpoint with the lower port (the address breaks a tie), so all
    the flows of a server endpoint land in the same shard and its identification, cut-off and
    Reconnect handling stay whole there. ``zlib.crc32`` rather than ``hash``: string hashing is
    salted per process.
    """
    if dport < sport or (dport == sport and dst < src):
        src, sport = dst, dport
    return (zlib.crc32(src) + sport) % shards


def merge_endpoints(
    parts: Sequence[dict[tuple[bytes, int, str], _Endpoint]],
) -> dict[tuple[bytes, int, str], _Endpoint]:
    """Merge the endpoints of the shards of one file: counts add up, the best result wins (the
    lower shard's on a tie, so the merge does not depend on which process finished first)."""
    out: dict[tuple[bytes, int, str], _Endpoint] = {}
    for part in parts:
        for key, ep in part.items():
            have = out.get(key)
            if have is None:
                out[key] = ep
                continue
            have.flows += ep.flows
            have.packets += ep.packets
            if ep.first is not None and (have.first is None or ep.first < have.first):
                have.first = ep.first
            if ep.last is not None and (have.last is None or ep.last > have.last):
                have.last = ep.last
            if ep.best is not None and (have.best is None or _rank(ep.best) > _rank(have.best)):
                have.best = ep.best
    return out


def file_results(path: str, endpoints: dict[tuple[bytes, int, str], _Endpoint]) -> list[ScanResult]:
    """The results of one file, one per endpoint, sorted by address, port and transport."""
    results: list[ScanResult] = []
    for (addr, port, transport), ep in endpoints.items():
        res = ep.best
        if res is None:
            a = format_address(addr)
            res = ScanResult(
                target=a,
                address=a,
                port=port,
                transport=transport,  # type: ignore[arg-type]
                state="open",
                reason="open in the capture; no payload kept for identification",
            )
        res.source = ReplaySource(
            file=path, flows=ep.flows, packets=ep.packets, first_seen=ep.first, last_seen=ep.last
        )
        results.append(res)
    results.sort(key=lambda r: (_addr_key(r.address), r.port, r.transport))
    return results


def _addr_key(a: str) -> tuple[int, int]:
    import ipaddress

    try:
        ip = ipaddress.ip_address(a)
        return (ip.version, int(ip))
    except ValueError:
        return (9, 0)


@dataclass(frozen=True, slots=True)
class ReplayProgress:
    """How far a replay is: bytes of the files read, packets read, endpoints found so far."""

    done_bytes: int
    total_bytes: int
    packets: int
    endpoints: int


def replay_paths(
    paths: list[str],
    probes: Sequence[Probe],
    on_result: Callable[[ScanResult], None] | None = None,
    limits: FlowLimits | None = None,
    service_db: DatabaseHandle | None = None,
    tls_keys: KeyLog | None = None,
    jobs: int = 1,
    progress: Callable[[ReplayProgress], None] | None = None,
    split_bytes: int | None = None,
) -> ReplayReport:
    """Replay capture files (directories are searched for captures) through ``probes``.

    Returns one :class:`~scanner.results.ScanResult` per server endpoint per file, with
    ``source`` saying where it was seen. A damaged file yields the results found before the damage
    and a :class:`ReadError` naming the file and the record; reading goes on with the next file.
    ``on_result`` is called for each result as soon as its file is done. ``service_db``: the service
    database behind the probes (default: the installed one, as in a live scan). ``tls_keys``: TLS
    session secrets (``--tls-keylog``), added to those of the files' Decryption Secrets Blocks.

    ``jobs``: processes (0: one per core). With more than one, the files are replayed in parallel
    (:mod:`scanner.replay.parallel`), and so are the flows of files of at least ``split_bytes``
    (default: none), hashed by endpoint; the results come in the same order as with one.
    ``progress`` is called about twice a second.
    """
    files = capture_files(paths)
    if jobs != 1 and files:
        from scanner.replay import parallel

        got = parallel.replay_files(
            files, probes, on_result, limits or FlowLimits(), service_db, tls_keys, jobs, progress, split_bytes
        )
        if got is not None:
            return got
    report = ReplayReport()
    identifier = Identifier(
        probes, service_db=service_db if service_db is not None else DatabaseHandle(), tls_keys=tls_keys
    )
    lim = limits or FlowLimits()
    tracker = _Tracker(files, progress)
    for i, path in enumerate(files):
        report.files += 1
        fr = _FileReplay(path, identifier, lim, report, progress=tracker.callback(i))
        fr.run()
        tracker.done(i, len(fr.endpoints))
        for res in file_results(path, fr.endpoints):
            report.results.append(res)
            if on_result is not None:
                on_result(res)
    return report


class _Tracker:
    """Turns per-file progress (position, packets, endpoints) into :class:`ReplayProgress` calls,
    at most :data:`PROGRESS_EVERY` seconds apart."""

    def __init__(self, files: Sequence[str], progress: Callable[[ReplayProgress], None] | None) -> None:
        self.progress = progress
        self.sizes = [_size(f) for f in files]
        self.total = sum(self.sizes)
        self.pos = [0] * len(files)
        self.packets = [0] * len(files)
        self.endpoints = [0] * len(files)
        self.last = 0.0

    def callback(self, i: int) -> Callable[[int, int, int], None] | None:
        if self.progress is None:
            return None

        def update(pos: int, packets: int, endpoints: int) -> None:
            self.update(i, pos, packets, endpoints)

        return update

    def update(self, i: int, pos: int, packets: int, endpoints: int, force: bool = False) -> None:
        """File ``i`` is at byte ``pos`` after ``packets`` packets with ``endpoints`` endpoints."""
        self.pos[i] = min(pos, self.sizes[i])
        self.packets[i] = packets
        self.endpoints[i] = endpoints
        now = time.monotonic()
        if self.progress is not None and (force or now - self.last >= PROGRESS_EVERY):
            self.last = now
            self.progress(ReplayProgress(sum(self.pos), self.total, sum(self.packets), sum(self.endpoints)))

    def done(self, i: int, endpoints: int) -> None:
        """File ``i`` is read."""
        self.update(i, self.sizes[i], self.packets[i], endpoints, force=True)


#: seconds between two progress calls
PROGRESS_EVERY = 0.5


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
