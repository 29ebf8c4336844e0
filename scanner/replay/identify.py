"""Offer reassembled flows to the probes: the same dialogues, framers and parsers as a live scan.

For each flushed flow this module decides which side is the server, then:

* **implicit TLS** (the server's first bytes are a TLS record): reads the ServerHello and, up to TLS
  1.2, the certificate; the service comes from the probes' ``tls_ports`` (or the ALPN), with a low
  confidence, because the payload is encrypted;
* **server-first** protocols: ``probe.match`` on the server's first bytes, then the dialogue driven
  over the server's byte stream (its ``Send`` steps are ignored: the capture holds what the real
  client sent);
* **client-first** protocols: candidates by the client's first bytes when they are obvious, then by
  port hints, then the others; each dialogue is driven over the server stream and its framers say
  whether the bytes are theirs;
* **STARTTLS**: the dialogue sees the text up to the first TLS ServerHello record; at its
  ``StartTLS`` step it gets the TLS facts read from the capture, and any later ``Recv`` is told the
  connection closed (the rest is encrypted);
* **Reconnect**: a dialogue that asks for a fresh connection continues over the server bytes of the
  next flow of the same endpoint when the caller has one (see ``replay_paths``), else the stream
  ends cleanly (every later ``Recv`` is told the connection closed);
* **UDP**: requests and responses are paired (DNS by id and question, CLDAP by message id, else in
  order) and the response datagrams are given to the UDP probes' dialogues, one per ``Recv``.
"""

from __future__ import annotations

import ipaddress
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from scanner.api import (
    Finding,
    Probe,
    ProbeContext,
    TLSFacts,
    Transport,
)
from scanner.breadth import DatabaseHandle
from scanner.replay.reassembly import TCPFlow, UDPFlow
from scanner.replay.tlsparse import (
    ServerTLS,
    cert_facts_from_der,
    find_server_hello,
    looks_like_client_hello,
    looks_like_tls_record,
    parse_server_tls,
)
from scanner.results import Attempt, EvidenceItem, ScanResult, Status, TLSInfo
from scanner.runner import Done, DoReconnect, DoStartTLS, NeedData, Runner, SendBytes, try_match

__all__ = ["DialogueOutcome", "FlowResult", "Identifier", "ServerStream", "drive_dialogue", "format_address"]

#: ports of common services no probe covers: used to tell the server side of a flow whose start was
#: not captured (ephemeral client ports are above 1023 almost always)
_WELL_KNOWN = frozenset(
    {
        21,
        22,
        23,
        25,
        53,
        80,
        88,
        102,
        110,
        119,
        123,
        135,
        137,
        138,
        139,
        143,
        161,
        389,
        443,
        445,
        464,
        465,
        563,
        587,
        636,
        691,
        993,
        995,
        1433,
        3268,
        3269,
        3306,
        3389,
        5432,
        8080,
        8443,
    }
)
#: bytes of the server's stream given to ``probe.match`` (the live engine reads a greeting of this order)
GREETING_BYTES = 4096
#: ALPN protocol ids (RFC 7301 registry) that name a service
_ALPN_SERVICE = {"http/1.1": "http", "http/1.0": "http", "h2": "http", "imap": "imap", "pop3": "pop3"}


def format_address(addr: bytes) -> str:
    """An address from the packet (4 or 16 bytes) as text."""
    try:
        return str(ipaddress.ip_address(addr))
    except ValueError:
        return addr.hex()


@dataclass(slots=True)
class DialogueOutcome:
    """How one probe's dialogue ended over recorded bytes."""

    finding: Finding | None
    status: Status
    error: str | None = None
    traceback: str | None = None
    #: the dialogue reached StartTLS
    starttls: bool = False
    #: ``Reconnect`` steps taken
    reconnects: int = 0
    #: the dialogue asked to reconnect and the capture held no later connection to give it
    reconnect_unserved: bool = False


@dataclass(frozen=True, slots=True)
class ServerStream:
    """The readable part of one connection's server bytes, with the TLS facts found after it."""

    #: the server's bytes up to its TLS handshake (a STARTTLS upgrade), or all of them
    text: bytes
    #: what ``StartTLS`` gets (None: the capture holds no TLS handshake)
    tls: TLSFacts | None = None
    tls_error: str = "no TLS handshake in the capture"


def drive_dialogue(
    probe: Probe,
    ctx: ProbeContext,
    server: bytes | Sequence[bytes],
    tls: TLSFacts | None = None,
    tls_error: str = "no TLS handshake in the capture",
    following: Sequence[ServerStream] = (),
) -> DialogueOutcome:
    """Drive ``probe.dialogue(ctx)`` over the server's recorded bytes (no I/O), through the one
    dialogue runner (:class:`scanner.runner.Runner`: same step budget, framing, partial-result
    rule and statuses as a live scan).

    TCP: ``server`` is the server's byte stream (up to any TLS upgrade); UDP: a list of datagrams,
    one per ``Recv``. ``Send`` steps are ignored (the capture holds what the real client sent). The
    end of the recorded bytes is a close. ``StartTLS`` gets ``tls`` (or :class:`TLSFailed`); every
    ``Recv`` after it is told the connection closed, since the rest of the capture is encrypted.
    ``Reconnect`` moves to the next stream of ``following`` (the later connections of the same
    server endpoint in the capture); when there is none, the stream ends cleanly: every later
    ``Recv`` is told the connection closed, and the outcome says so (``reconnect_unserved``).
    """
    udp = ctx.transport == "udp"
    datagrams = ([server] if isinstance(server, bytes) else list(server)) if udp else []
    stream = b"" if udp else (server if isinstance(server, bytes) else b"".join(server))
    later = list(following)
    implicit = ctx.tls if ctx.implicit_tls else None
    unserved = False
    runner = Runner(probe, ctx, unread_at_starttls="drop")
    while True:  # bounded: every request but NeedData advances the dialogue (MAX_STEPS), and
        # NeedData is answered by all the bytes at once, then by the close
        req = runner.next_request()
        if isinstance(req, Done):
            break
        if isinstance(req, SendBytes):
            runner.sent()
        elif isinstance(req, NeedData):
            if udp:
                if datagrams:
                    runner.receive_data(datagrams.pop(0))
                else:
                    runner.peer_closed("no more response datagrams in the capture")
            elif stream:
                runner.receive_data(stream)
                stream = b""
            else:
                runner.peer_closed("capture ends before a complete message")
        elif isinstance(req, DoStartTLS):
            if tls is None:
                runner.tls_failed(tls_error)
            else:
                runner.tls_started(tls)
                stream = b""
                runner.peer_closed("encrypted after STARTTLS: not readable from a capture")
        elif isinstance(req, DoReconnect):
            runner.reconnected(implicit)
            if later:
                nxt = later.pop(0)
                stream, tls, tls_error = nxt.text, nxt.tls, nxt.tls_error
            else:
                unserved = True
                stream = b""
                runner.peer_closed("the capture holds no later connection to this endpoint")
    out = runner.outcome
    return DialogueOutcome(out.finding, out.status, out.error, out.traceback, out.starttls, out.reconnects, unserved)


@dataclass(slots=True)
class FlowResult:
    """What one flow says about its server endpoint."""

    server: tuple[bytes, int]
    transport: Transport
    result: ScanResult | None
    packets: int
    first_ts: float | None
    last_ts: float | None
    #: the server side is known to be open (SYN-ACK or bytes from it)
    open: bool = True
    #: the chosen (or a tried) dialogue asked for a fresh connection the flow could not give:
    #: a later flow of the same endpoint may serve it (see :meth:`Identifier.identify_tcp`)
    reconnect_unserved: bool = False


@dataclass
class _Candidates:
    server_first: list[Probe] = field(default_factory=list)
    client_first: list[Probe] = field(default_factory=list)
    udp: list[Probe] = field(default_factory=list)


def _client_hint(data: bytes) -> str | None:
    """The service a client's first bytes make obvious (only the unmistakable cases)."""
    head = data[:16]
    if head[:4] in (b"GET ", b"POST", b"HEAD", b"PUT ", b"OPTI", b"PROP", b"DELE") or head[:7] == b"CONNECT":
        return "http"
    if head[:1] == b"\x30" and len(head) >= 2:
        return "ldap"  # a BER SEQUENCE: an LDAPMessage
    if head[:2] == b"\x05\x00" and len(head) >= 3 and head[2] in (11, 14):
        return "msrpc"  # DCE/RPC v5.0 bind / alter_context
    if head[:2] == b"\x03\x00" and len(head) >= 6 and head[5] == 0xE0:
        return "tsap"  # TPKT + COTP connection request
    if len(data) >= 14 and int.from_bytes(data[:2], "big") == len(data) - 2 and data[6:8] == b"\x00\x01":
        return "dns"  # a length-prefixed DNS query with one question
    return None


class Identifier:
    """Identify flushed flows with a set of probes."""

    def __init__(self, probes: Sequence[Probe], seed: int = 0, service_db: DatabaseHandle | None = None) -> None:
        self.seed = seed
        #: the service database behind the probes (scanner.breadth); None: our rules only
        self.service_db = service_db
        self.probes = sorted(probes, key=lambda p: (p.rarity, p.name))
        self.cands = _Candidates(
            server_first=[p for p in self.probes if p.server_first and "tcp" in p.transports],
            client_first=[p for p in self.probes if not p.server_first and "tcp" in p.transports],
            udp=[p for p in self.probes if "udp" in p.transports],
        )
        self.tcp_ports: set[int] = set(_WELL_KNOWN)
        self.udp_ports: set[int] = {53, 88, 123, 137, 138, 161, 389, 464, 500, 514}
        for p in self.probes:
            if "tcp" in p.transports:
                self.tcp_ports.update(p.ports)
                self.tcp_ports.update(p.tls_ports)
            if "udp" in p.transports:
                self.udp_ports.update(p.ports)

    # ----------------------------------------------------------------- roles
    def _greets(self, data: bytes) -> bool:
        if not data:
            return False
        head = data[:GREETING_BYTES]
        # only which side greets is decided here: a raising matcher is reported with its
        # traceback when the flow's server bytes are offered to it (_tcp_result)
        return any(try_match(p, head)[0] for p in self.cands.server_first)

    def tcp_server_side(self, flow: TCPFlow, first: tuple[bytes, bytes]) -> tuple[int, str]:
        """Which side (0 = ``flow.a``) is the server, and what decided it."""
        if flow.synack_from is not None:
            return flow.synack_from, "SYN-ACK"
        if flow.syn_from is not None:
            return 1 - flow.syn_from, "SYN"
        pa, pb = flow.a[1], flow.b[1]
        ha, hb = pa in self.tcp_ports, pb in self.tcp_ports
        if ha != hb:
            return (0 if ha else 1), "port"
        ga, gb = self._greets(first[0]), self._greets(first[1])
        if ga != gb:
            return (0 if ga else 1), "greeting"
        ca, cb = looks_like_client_hello(first[0]), looks_like_client_hello(first[1])
        if ca != cb:
            return (1 if ca else 0), "TLS ClientHello"
        if pa != pb:
            return (0 if pa < pb else 1), "lower port"
        return 0, "guess"

    # ----------------------------------------------------------------- TCP
    def server_stream(self, flow: TCPFlow, server_side: int) -> ServerStream:
        """The readable server bytes of ``flow`` (up to a TLS upgrade), with the TLS facts after them."""
        return split_server_bytes(flow.sides[server_side].assemble().data)

    def identify_tcp(
        self, flow: TCPFlow, server_side: int | None = None, following: Sequence[ServerStream] = ()
    ) -> FlowResult | None:
        """Identify the server endpoint of a TCP flow (None when it never showed it was open).

        ``following``: the server streams of later connections to the same endpoint, for a
        dialogue that asks to ``Reconnect``.
        """
        asm = [flow.sides[0].assemble(), flow.sides[1].assemble()]
        if server_side is None:
            server_side, how = self.tcp_server_side(flow, (asm[0].data, asm[1].data))
        else:
            how = "already identified endpoint"
        srv, cli = asm[server_side], asm[1 - server_side]
        server = flow.a if server_side == 0 else flow.b
        opened = flow.synack_from == server_side or bool(srv.data or srv.total)
        if not opened:
            return None
        fr = FlowResult(server, "tcp", None, flow.packets, flow.first_ts, flow.last_ts)
        if flow.count_only:
            return fr
        addr = format_address(server[0])
        port = server[1]
        replay: dict[str, Any] = {"server_decided_by": how}
        if not srv.from_start:
            replay["midstream"] = True
        if srv.gaps:
            replay["gaps"] = [list(g) for g in srv.gaps]
        if srv.truncated:
            replay["truncated"] = True
        res, unserved = self._tcp_result(addr, port, srv.data, cli.data, replay, following)
        res.details.setdefault("replay", replay)
        fr.result = res
        fr.reconnect_unserved = unserved
        return fr

    def _ctx(self, addr: str, port: int, transport: Transport, implicit: TLSFacts | None = None) -> ProbeContext:
        # the live engine seeds each port's generator with f"{seed}:{address}:{port}" (seed 0 by
        # default): the same seed here makes a dialogue ask with the very ids it used in the
        # recorded scan, so id-checking probes accept the recorded replies
        return ProbeContext(
            address=addr,
            port=port,
            transport=transport,
            tls=implicit,
            implicit_tls=implicit is not None,
            rng=random.Random(f"{self.seed}:{addr}:{port}"),
            # the replies answer another client's requests: their transaction ids will not match ours
            replay=True,
        )

    def _tcp_result(
        self, addr: str, port: int, srv: bytes, cli: bytes, replay: dict[str, Any], following: Sequence[ServerStream]
    ) -> tuple[ScanResult, bool]:
        """The flow's result, and whether a dialogue's ``Reconnect`` went unserved."""
        base = ScanResult(target=addr, address=addr, port=port, transport="tcp", state="open")
        if not srv:
            base.reason = "the server sent no bytes in the capture"
            return base, False
        if looks_like_tls_record(srv, any_type=True) and (
            looks_like_tls_record(srv) or not cli or looks_like_tls_record(cli, any_type=True)
        ):
            return self._implicit_tls(base, srv, port), False
        # STARTTLS: the text part ends where the server's TLS handshake starts
        tls_at = find_server_hello(srv) if b"\x16\x03" in srv[:65536] else -1
        text = srv[:tls_at] if tls_at > 0 else srv
        server_tls = parse_server_tls(srv[tls_at:]) if tls_at > 0 else None
        facts = _facts(server_tls) if server_tls and server_tls.ok else None
        tls_error = (server_tls.note if server_tls else None) or "no TLS handshake in the capture"
        attempts: list[Attempt] = []
        unserved = False

        ordered: list[Probe] = []
        greeting = text[:GREETING_BYTES]
        hinted = [p for p in self.cands.server_first if port in p.ports or port in p.tls_ports]
        for p in hinted + [p for p in self.cands.server_first if p not in hinted]:
            matched, tb = try_match(p, greeting)
            if tb is not None:
                attempts.append(Attempt(probe=p.name, status="probe-bug", error="match() raised", traceback=tb))
            elif matched:
                ordered.append(p)
        hint = _client_hint(cli)
        by_bytes = [p for p in self.cands.client_first if hint in p.services]
        by_port = [p for p in self.cands.client_first if p not in by_bytes and (port in p.ports or port in p.tls_ports)]
        rest = [p for p in self.cands.client_first if p not in by_bytes and p not in by_port]
        ordered += by_bytes + by_port + rest

        best: tuple[Probe, DialogueOutcome] | None = None
        best_ctx: ProbeContext | None = None
        for p in ordered:
            t0 = time.perf_counter()
            ctx = self._ctx(addr, port, "tcp")
            out = drive_dialogue(p, ctx, text, facts, tls_error, following)
            unserved = unserved or out.reconnect_unserved
            if out.reconnects:
                replay[f"{p.name}_reconnects"] = out.reconnects
            attempts.append(
                Attempt(
                    probe=p.name,
                    status=out.status,
                    elapsed_ms=round((time.perf_counter() - t0) * 1000, 3),
                    error=out.error,
                    traceback=out.traceback,
                )
            )
            if out.finding is not None and (best is None or out.finding.confidence > best[1].finding.confidence):  # type: ignore[union-attr]
                best, best_ctx = (p, out), ctx
                if out.status == "success":
                    break
        base.attempts = attempts
        if best is None:
            base.details = {"banner": srv[:256].decode("latin-1")}
            base.reason = "no probe recognised the server's bytes"
            if server_tls is not None and server_tls.ok:
                base.tls = _tls_info(server_tls, "starttls")
            named = self._refine(None, greeting, {})
            if named is not None:
                _apply(base, "servicedb", named)
                base.details.setdefault("banner", srv[:256].decode("latin-1"))
                base.reason = f"no probe of ours recognised the bytes; the service database names them ({named.rule})"
            return base, unserved
        probe, out = best
        finding = self._refine(
            out.finding, greeting if probe.server_first else b"", best_ctx.responses if best_ctx else {}
        )
        _apply(base, probe.name, finding)  # type: ignore[arg-type]
        if server_tls is not None and server_tls.ok and (out.starttls or tls_at > 0):
            base.tls = _tls_info(server_tls, "starttls")
            if server_tls.note:
                replay["tls_note"] = server_tls.note
        if out.status != "success":
            base.reason = f"{probe.name} dialogue ended early ({out.status}: {out.error}); partial result"
        else:
            base.reason = f"{probe.name} dialogue confirmed the service from the captured bytes"
        if out.reconnects:
            base.reason += f" ({out.reconnects} reconnect(s): later connections of the capture)"
        return base, unserved

    def _refine(self, finding: Finding | None, greeting: bytes, responses: dict[str, bytes]) -> Finding | None:
        """The service database behind the probes, as in a live scan (scanner.breadth.refine)."""
        if self.service_db is None:
            return finding
        return self.service_db.refine(finding, greeting=greeting, responses=responses)

    def _implicit_tls(self, base: ScanResult, srv: bytes, port: int) -> ScanResult:
        st = parse_server_tls(srv)
        base.tls = _tls_info(st, "implicit")
        service = _ALPN_SERVICE.get(st.alpn or "")
        probe = None
        if service is not None:
            probe = next((p for p in self.probes if service in p.services), None)
            why = f"ALPN {st.alpn!r}"
        if probe is None:
            probe = next((p for p in self.probes if port in p.tls_ports), None)
            why = f"port {port} is a TLS port of the {probe.name} probe" if probe else ""
        note = st.note or ""
        if not st.ok and srv[:1] in (b"\x14", b"\x17"):
            note = "the capture starts after the TLS handshake (no ServerHello to read)"
            base.tls.error = note
        if probe is None:
            base.reason = f"TLS on port {port}, no probe hints this port; the payload is encrypted. {note}".strip()
            base.details = {"banner": srv[:64].hex()}
            return base
        base.service = probe.services[0] if service is None else service
        base.probe = probe.name
        base.verdict = "identified"
        base.confidence = 3
        base.evidence = [EvidenceItem("replay", f"implicit TLS; service inferred from {why}")]
        base.reason = f"implicit TLS: the payload is encrypted, service inferred from {why}. {note}".strip()
        return base

    # ----------------------------------------------------------------- UDP
    def udp_server_side(self, flow: UDPFlow) -> int:
        """Which side of a UDP flow is the server (0 = ``flow.a``)."""
        pa, pb = flow.a[1], flow.b[1]
        ha, hb = pa in self.udp_ports, pb in self.udp_ports
        if ha != hb:
            return 0 if ha else 1
        if flow.datagrams:
            return 1 - flow.datagrams[0][0]  # whoever spoke first is the client
        return 0 if pa < pb else 1

    def identify_udp(self, flow: UDPFlow, server_side: int | None = None) -> FlowResult | None:
        """Identify the server endpoint of a UDP flow (None when the server never answered)."""
        if server_side is None:
            server_side = self.udp_server_side(flow)
        server = flow.a if server_side == 0 else flow.b
        fr = FlowResult(server, "udp", None, flow.packets, flow.first_ts, flow.last_ts)
        if flow.count_only:
            return fr
        responses, replay = pair_datagrams(flow.datagrams, server_side)
        if not responses:
            return None
        addr = format_address(server[0])
        port = server[1]
        base = ScanResult(target=addr, address=addr, port=port, transport="udp", state="open")
        hinted = [p for p in self.cands.udp if port in p.ports]
        attempts: list[Attempt] = []
        best: tuple[Probe, DialogueOutcome] | None = None
        best_ctx: ProbeContext | None = None
        for p in hinted + [p for p in self.cands.udp if p not in hinted]:
            ctx = self._ctx(addr, port, "udp")
            out = drive_dialogue(p, ctx, responses)
            attempts.append(Attempt(probe=p.name, status=out.status, error=out.error, traceback=out.traceback))
            if out.finding is not None and (best is None or out.finding.confidence > best[1].finding.confidence):  # type: ignore[union-attr]
                best, best_ctx = (p, out), ctx
                if out.status == "success":
                    break
        base.attempts = attempts
        if best is None:
            base.details = {"banner": responses[0][:256].decode("latin-1"), "replay": replay}
            base.reason = "no probe recognised the server's datagrams"
        else:
            finding = self._refine(best[1].finding, b"", best_ctx.responses if best_ctx else {})
            _apply(base, best[0].name, finding)  # type: ignore[arg-type]
            base.details.setdefault("replay", replay)
            base.reason = f"{best[0].name} dialogue over {len(responses)} response datagram(s) from the capture"
        fr.result = base
        return fr


def split_server_bytes(srv: bytes) -> ServerStream:
    """Cut a server stream where its STARTTLS handshake starts; read the TLS facts after it."""
    tls_at = find_server_hello(srv) if b"\x16\x03" in srv[:65536] else -1
    if tls_at <= 0:
        return ServerStream(srv)
    st = parse_server_tls(srv[tls_at:])
    return ServerStream(srv[:tls_at], _facts(st) if st.ok else None, st.note or "no TLS handshake in the capture")


def _dns_key(d: bytes) -> tuple[Any, ...] | None:
    """(id, question) of a DNS message: the pairing key (None if it is not DNS-shaped)."""
    if len(d) < 17 or int.from_bytes(d[4:6], "big") != 1:
        return None
    pos, labels = 12, []
    for _ in range(128):
        if pos >= len(d):
            return None
        n = d[pos]
        if n == 0:
            pos += 1
            break
        if n > 63:
            return None
        labels.append(d[pos + 1 : pos + 1 + n].lower())
        pos += 1 + n
    else:
        return None
    if pos + 4 > len(d):
        return None
    return ("dns", d[:2], tuple(labels), d[pos : pos + 4])


def _ber_message_id(d: bytes) -> tuple[Any, ...] | None:
    """The messageID of an LDAPMessage (CLDAP): the pairing key (None if not BER-shaped)."""
    if len(d) < 5 or d[0] != 0x30:
        return None
    pos = 1
    first = d[pos]
    pos += 1 + (first & 0x7F if first & 0x80 else 0)
    if pos + 2 > len(d) or d[pos] != 0x02 or not 1 <= d[pos + 1] <= 4:
        return None
    return ("ldap", d[pos + 2 : pos + 2 + d[pos + 1]])


def _pair_key(d: bytes) -> tuple[Any, ...] | None:
    return _dns_key(d) or _ber_message_id(d)


def pair_datagrams(datagrams: Sequence[tuple[int, bytes]], server_side: int) -> tuple[list[bytes], dict[str, Any]]:
    """Pair requests with responses; return the responses (paired ones first) and counts.

    DNS pairs by id and question, CLDAP by LDAP message id; datagrams of other shapes pair in
    order. An unpaired response is still offered (the request may be outside the capture).
    """
    pending: dict[tuple[Any, ...], int] = {}
    unkeyed_requests = 0
    paired: list[bytes] = []
    unpaired: list[bytes] = []
    for side, data in datagrams:
        key = _pair_key(data)
        if side != server_side:
            if key is not None:
                pending[key] = pending.get(key, 0) + 1
            else:
                unkeyed_requests += 1
        elif key is not None and pending.get(key):
            pending[key] -= 1
            paired.append(data)
        elif key is None and unkeyed_requests:
            unkeyed_requests -= 1
            paired.append(data)
        else:
            unpaired.append(data)
    info = {
        "paired": len(paired),
        "unpaired_responses": len(unpaired),
        "unanswered_requests": sum(pending.values()) + unkeyed_requests,
    }
    return paired + unpaired, info


def _facts(st: ServerTLS) -> TLSFacts:
    return TLSFacts(
        version=st.version or "?",
        cipher=st.cipher or "?",
        certificate_der=st.certificates[0] if st.certificates else None,
        alpn=st.alpn,
    )


def _tls_info(st: ServerTLS, mode: str) -> TLSInfo:
    cert = None
    error = None
    if st.certificates:
        cert = cert_facts_from_der(st.certificates[0])
        if cert is None:
            error = "certificate not parsed"
    elif not st.ok:
        error = st.note
    return TLSInfo(
        mode=mode,  # type: ignore[arg-type]
        version=st.version,
        cipher=st.cipher,
        alpn=st.alpn,
        certificate=cert,
        error=error,
    )


def _apply(res: ScanResult, probe: str, f: Finding) -> None:
    res.service = f.service
    res.product = f.product
    res.version = f.version
    res.confidence = f.confidence
    res.evidence = [EvidenceItem(e.source, e.value) for e in f.evidence]
    res.details = dict(f.details)
    res.extrainfo = f.extrainfo
    res.rule = f.rule
    res.probe = probe
    res.verdict = "identified"
