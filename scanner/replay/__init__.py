"""Pcap replay: identify the services of a capture offline, with the probes of a live scan.

Entry point: :func:`replay_paths`. The layers underneath are in :mod:`.reader` (streaming records
with scapy's raw readers), :mod:`.layers` (pure link/IP/TCP/UDP decoders), :mod:`.reassembly` (IP
fragments, TCP streams, the bounded flow table), :mod:`.identify` (flows offered to the probes),
:mod:`.tlsparse` (ServerHello and certificate) and :mod:`.pcapwriter` (``--record``).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scanner.api import MAX_RECONNECTS, Probe
from scanner.breadth import DatabaseHandle
from scanner.replay.identify import FlowResult, Identifier, ServerStream, format_address
from scanner.replay.layers import Damaged, Undecodable, link_to_ip, parse_ip, parse_tcp, parse_udp
from scanner.replay.reader import CaptureReader, ReadError
from scanner.replay.reassembly import FlowLimits, FlowTable, FragmentCache, TCPFlow, UDPFlow
from scanner.results import ReplaySource, ScanResult

__all__ = ["CAPTURE_SUFFIXES", "FlowLimits", "ReadError", "ReplayReport", "capture_files", "replay_paths"]

#: file names picked up when a directory is given
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".pcap.gz", ".pcapng.gz", ".dmp")
#: endpoints reported per file at most (a port scan capture could list millions)
MAX_ENDPOINTS = 100_000
#: an endpoint identified at least this confidently needs no more flows examined
DONE_CONFIDENCE = 8
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

    @property
    def nothing_read(self) -> bool:
        """True when not one record could be read (the CLI then exits non-zero)."""
        return self.packets == 0 and bool(self.errors)


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

    @property
    def done(self) -> bool:
        return self.best is not None and self.best.verdict == "identified" and self.best.confidence >= DONE_CONFIDENCE


def _rank(r: ScanResult) -> tuple[int, int, int, int]:
    return (r.verdict == "identified", r.confidence, r.tls is not None, len(r.evidence))


class _FileReplay:
    """The replay of one file: flow table, identification and per-endpoint aggregation."""

    def __init__(self, path: str, identifier: Identifier, limits: FlowLimits, report: ReplayReport) -> None:
        self.path = path
        self.identifier = identifier
        self.report = report
        self.endpoints: dict[tuple[bytes, int, str], _Endpoint] = {}
        self.table = FlowTable(self._flushed, limits, self._count_only)
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

    def _flushed(self, flow: TCPFlow | UDPFlow) -> None:
        self.report.flows += 1
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
        ep = self.endpoints.get(key)
        if ep is None:
            if len(self.endpoints) >= MAX_ENDPOINTS:
                self.report.endpoints_dropped += 1
                return
            ep = self.endpoints[key] = _Endpoint()
        ep.flows += 1
        ep.packets += fr.packets
        if fr.first_ts is not None and (ep.first is None or fr.first_ts < ep.first):
            ep.first = fr.first_ts
        if fr.last_ts is not None and (ep.last is None or fr.last_ts > ep.last):
            ep.last = fr.last_ts
        if fr.result is not None:
            self._offer(key, fr.result)

    def _offer(self, key: tuple[bytes, int, str], result: ScanResult) -> None:
        ep = self.endpoints.get(key)
        if ep is not None and (ep.best is None or _rank(result) > _rank(ep.best)):
            ep.best = result

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
        if pend is not None:
            pflow, pside, streams = pend
            streams.append(self.identifier.server_stream(flow, side))
            again = self.identifier.identify_tcp(pflow, pside, streams)
            if again is not None and again.result is not None:
                self._offer((server[0], server[1], "tcp"), again.result)
            if again is None or not again.reconnect_unserved or len(streams) >= MAX_RECONNECTS:
                del self.pending[server]
        elif fr.reconnect_unserved and len(self.pending) < MAX_PENDING_RECONNECTS:
            self.pending[server] = (flow, side, [])

    def run(self) -> list[ScanResult]:
        reader = CaptureReader(self.path)
        report = self.report
        unknown = report.unknown
        table = self.table
        for rec in reader:
            report.packets += 1
            try:
                etype, off = link_to_ip(rec.linktype, rec.data)
                ip = parse_ip(etype, rec.data, off)
                payload = ip.payload
                if ip.frag_id is not None:
                    whole = self.frags.add(
                        (ip.version, ip.src, ip.dst, ip.proto, ip.frag_id),
                        ip.frag_offset,
                        ip.more_fragments,
                        payload,
                        rec.ts,
                    )
                    if whole is None:
                        continue
                    payload = whole
                if ip.proto == 6:
                    table.add_tcp(rec.ts, ip.src, ip.dst, parse_tcp(payload))
                elif ip.proto == 17:
                    u = parse_udp(payload)
                    table.add_udp(rec.ts, ip.src, u.sport, ip.dst, u.dport, u.payload)
                else:
                    unknown[f"IP protocol {ip.proto}"] += 1
                    continue
                report.decoded += 1
            except Damaged as exc:
                unknown[str(exc)] += 1
                reader.note(rec.index, f"damaged packet: {exc}")
            except Undecodable as exc:
                unknown[str(exc)] += 1
        table.flush_all()
        report.errors.extend(reader.errors)
        report.evicted_flows += table.evicted
        report.fragments_reassembled += self.frags.reassembled
        report.fragments_dropped += self.frags.dropped
        results: list[ScanResult] = []
        for (addr, port, transport), ep in self.endpoints.items():
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
                file=self.path, flows=ep.flows, packets=ep.packets, first_seen=ep.first, last_seen=ep.last
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


def replay_paths(
    paths: list[str],
    probes: Sequence[Probe],
    on_result: Callable[[ScanResult], None] | None = None,
    limits: FlowLimits | None = None,
    service_db: DatabaseHandle | None = None,
) -> ReplayReport:
    """Replay capture files (directories are searched for captures) through ``probes``.

    Returns one :class:`~scanner.results.ScanResult` per server endpoint per file, with
    ``source`` saying where it was seen. A damaged file yields the results found before the damage
    and a :class:`ReadError` naming the file and the record; reading goes on with the next file.
    ``on_result`` is called for each result as soon as its file is done. ``service_db``: the service
    database behind the probes (default: the installed one, as in a live scan).
    """
    report = ReplayReport()
    identifier = Identifier(probes, service_db=service_db if service_db is not None else DatabaseHandle())
    lim = limits or FlowLimits()
    for path in capture_files(paths):
        report.files += 1
        results = _FileReplay(path, identifier, lim, report).run()
        for res in results:
            report.results.append(res)
            if on_result is not None:
                on_result(res)
    return report
