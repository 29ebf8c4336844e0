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
* **UDP**: requests and responses are paired by the probes' ``pair_key`` hooks (DNS by id and
  question, CLDAP by message id; else in order) and the response datagrams are given to the UDP
  probes' dialogues, one per ``Recv``;
* **passive hooks** (:class:`scanner.api.Probe`): ``client_hint`` orders the candidates (and tells
  the client side of a connection whose start was not captured); when no dialogue succeeded,
  every probe's ``identify_passive`` is offered both sides' bytes (the most confident finding wins),
  and the chosen probe's own ``identify_passive`` adds what its dialogue could not read (an NTLM
  CHALLENGE of another client's authentication ...); a conversation of which only the client's
  side was captured is named from the client's bytes, marked ``only_client_seen``, with a low
  confidence and no product. A hook that raises is a ``probe-bug`` attempt; replay goes on.

No protocol is known here: every protocol fact comes from the probes (built-in or plugins).
"""

from __future__ import annotations

import ipaddress
import random
import time
import traceback
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scanner.api import (
    CLIENT_HINT_BYTES,
    Finding,
    Probe,
    ProbeContext,
    TLSFacts,
    Transport,
)
from scanner.breadth import DatabaseHandle
from scanner.replay.keylog import KeyLog
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

if TYPE_CHECKING:
    from scanner.replay.tlsdecrypt import Decrypted

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
#: confidence at most of a result named from a client's bytes alone (the server was not seen)
CLIENT_ONLY_CONFIDENCE = 3
#: datagrams of one side given to ``identify_passive`` at most
MAX_PASSIVE_DATAGRAMS = 256


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
    after_tls: bytes | None = None,
) -> DialogueOutcome:
    """Drive ``probe.dialogue(ctx)`` over the server's recorded bytes (no I/O), through the one
    dialogue runner (:class:`scanner.runner.Runner`: same step budget, framing, partial-result
    rule and statuses as a live scan).

    TCP: ``server`` is the server's byte stream (up to any TLS upgrade); UDP: a list of datagrams,
    one per ``Recv``. ``Send`` steps are ignored (the capture holds what the real client sent). The
    end of the recorded bytes is a close. ``StartTLS`` gets ``tls`` (or :class:`TLSFailed`); every
    ``Recv`` after it is told the connection closed, since the rest of the capture is encrypted,
    unless ``after_tls`` holds the server's decrypted bytes after the handshake (the capture's TLS
    keys were known): the dialogue then goes on over them, as live.
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
                if after_tls is not None:
                    stream, after_tls = after_tls, None  # decrypted with the capture's TLS keys
                else:
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
    #: every TCP probe, server-first or not (passive hooks)
    tcp: list[Probe] = field(default_factory=list)
    server_first: list[Probe] = field(default_factory=list)
    client_first: list[Probe] = field(default_factory=list)
    udp: list[Probe] = field(default_factory=list)


def call_hook(probe: Probe, hook: str, *args: Any) -> tuple[Any, str | None]:
    """``probe.<hook>(*args)`` for a passive hook: (its answer, None), or (None, the traceback)
    when it raised: a bug in a probe's hook is reported as ``probe-bug`` and never stops replay."""
    try:
        return getattr(probe, hook)(*args), None
    except Exception:
        return None, traceback.format_exc()


def _hook_bug(probe: Probe, hook: str, tb: str | None, error: str | None = None) -> Attempt:
    return Attempt(probe=probe.name, status="probe-bug", error=error or f"{hook}() raised", traceback=tb)


def _alpn_ids(probe: Probe) -> tuple[str, ...]:
    """A probe's declared ALPN ids (only a tuple of strings counts: a plugin's typo is ignored)."""
    ids = getattr(probe, "alpn", ())
    return ids if isinstance(ids, tuple) and all(isinstance(i, str) for i in ids) else ()


def _check_passive(probe: Probe, found: object) -> str | None:
    """Why ``identify_passive``'s answer is unusable (None when it is a valid Finding)."""
    if not isinstance(found, Finding):
        return f"identify_passive() returned {type(found).__name__}, not a Finding or None"
    if found.service not in probe.services:
        return f"identify_passive() reported service {found.service!r}, not one of {probe.services}"
    if not isinstance(found.confidence, int) or not 0 <= found.confidence <= 10:
        return f"identify_passive() reported confidence {found.confidence!r}"
    return None


def _group_address(address: str) -> bool:
    """A multicast or broadcast address (IPv4 limited or a /24's .255, IPv6 multicast)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return ip.is_multicast or (ip.version == 4 and (ip.packed[3] == 255 or ip.is_unspecified))


def _client_only(finding: Finding) -> Finding:
    """Mark a finding made from the client's bytes alone: no product, a low confidence."""
    finding.product = finding.version = finding.rule = finding.extrainfo = None
    finding.confidence = min(finding.confidence, CLIENT_ONLY_CONFIDENCE)
    finding.details["only_client_seen"] = True
    return finding


def merge_passive(finding: Finding, extra: Finding) -> Finding:
    """Add to a dialogue's ``finding`` what the same probe's ``identify_passive`` read and the
    dialogue did not: details and host facts it lacks, evidence from new sources, the extrainfo
    when it has none, and the product only when the dialogue named none. Returns ``finding``."""
    for key, value in extra.details.items():
        finding.details.setdefault(key, value)
    for key, value in extra.host_facts.items():
        finding.host_facts.setdefault(key, value)
    sources = {e.source for e in finding.evidence}
    finding.evidence.extend(e for e in extra.evidence if e.source not in sources)
    if not finding.extrainfo and extra.extrainfo:
        finding.extrainfo = extra.extrainfo
    if finding.product is None and extra.product is not None:
        finding.product, finding.version, finding.rule = extra.product, extra.version, extra.rule
        finding.confidence = max(finding.confidence, extra.confidence)
    return finding


class Identifier:
    """Identify flushed flows with a set of probes."""

    def __init__(
        self,
        probes: Sequence[Probe],
        seed: int = 0,
        service_db: DatabaseHandle | None = None,
        tls_keys: KeyLog | None = None,
    ) -> None:
        self.seed = seed
        #: TLS session secrets (``--tls-keylog``, the captures' DSBs): TLS flows are decrypted
        self.tls_keys = tls_keys if tls_keys is not None else KeyLog()
        #: the service database behind the probes (scanner.breadth); None: our rules only
        self.service_db = service_db
        self.probes = sorted(probes, key=lambda p: (p.rarity, p.name))
        self.cands = _Candidates(
            tcp=[p for p in self.probes if "tcp" in p.transports],
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
        ka, kb = bool(self.client_hinted(first[0])), bool(self.client_hinted(first[1]))
        if ka != kb:
            return (1 if ka else 0), "client hint"
        if pa != pb:
            return (0 if pa < pb else 1), "lower port"
        return 0, "guess"

    # ----------------------------------------------------------------- passive hooks
    def client_hinted(self, cli: bytes, attempts: list[Attempt] | None = None) -> list[Probe]:
        """The TCP probes whose ``client_hint`` claims the client's first bytes (in probe order);
        a hook that raises is recorded in ``attempts`` as a probe bug."""
        head = cli[:CLIENT_HINT_BYTES]
        if not head:
            return []
        out: list[Probe] = []
        for p in self.cands.tcp:
            said, tb = call_hook(p, "client_hint", head)
            if tb is not None:
                if attempts is not None:
                    attempts.append(_hook_bug(p, "client_hint", tb))
            elif said is True:
                out.append(p)
        return out

    def pair_key(self, datagram: bytes, bugs: list[Attempt] | None = None) -> Hashable | None:
        """The first ``pair_key`` a UDP probe gives ``datagram`` (tagged with the probe's name)."""
        for p in self.cands.udp:
            key, tb = call_hook(p, "pair_key", datagram)
            if tb is None and key is not None:
                try:
                    hash(key)
                except TypeError:
                    tb = traceback.format_exc()
                else:
                    return (p.name, key)
            if tb is not None and bugs is not None and not any(b.probe == p.name for b in bugs):
                bugs.append(_hook_bug(p, "pair_key", tb))
        return None

    def passive(
        self,
        candidates: Sequence[Probe],
        server: Sequence[bytes],
        client: Sequence[bytes],
        attempts: list[Attempt],
    ) -> tuple[Probe, Finding] | None:
        """The most confident ``identify_passive`` finding of ``candidates`` (the first wins a tie)."""
        best: tuple[Probe, Finding] | None = None
        for p in candidates:
            found, tb = call_hook(p, "identify_passive", server, client)
            if tb is not None:
                attempts.append(_hook_bug(p, "identify_passive", tb))
                continue
            if found is None:
                continue
            problem = _check_passive(p, found)
            if problem is not None:
                attempts.append(_hook_bug(p, "identify_passive", None, problem))
                continue
            if best is None or found.confidence > best[1].confidence:
                best = (p, found)
        return best

    def enrich(self, probe: Probe, finding: Finding, server: Sequence[bytes], client: Sequence[bytes],
               attempts: list[Attempt]) -> Finding:
        """The dialogue's ``finding``, with what ``probe.identify_passive`` adds (see :func:`merge_passive`)."""
        extra = self.passive([probe], server, client, attempts)
        return merge_passive(finding, extra[1]) if extra is not None else finding

    def _passive_result(
        self, base: ScanResult, chosen: tuple[Probe, Finding], what: str, client_only: bool, greeting: bytes = b""
    ) -> None:
        """Fill ``base`` from a passive finding (the service database refines it as a dialogue's,
        from the server's greeting; never one made from the client's bytes alone)."""
        probe, finding = chosen
        if client_only:
            _client_only(finding)
        else:
            finding = self._refine(finding, greeting if probe.server_first else b"", {}) or finding
        _apply(base, probe.name, finding)
        base.evidence.append(EvidenceItem("replay", f"identify_passive of {probe.name} over {what}"))
        if client_only:
            base.reason = (
                "only the client's bytes are in the capture (the server's side was not captured, or it sent "
                f"nothing): {probe.name} named the service from them; no product"
            )
        else:
            base.reason = f"{probe.name} identified the conversation passively from {what} (no dialogue fitted)"

    def _ranked(self, probes: Sequence[Probe], hinted: Sequence[Probe], port: int) -> list[Probe]:
        """``probes`` ordered: those the client's bytes hint, then those hinting ``port``, then the rest."""
        first = [p for p in hinted if p in probes]
        by_port = [p for p in probes if p not in first and (port in p.ports or port in p.tls_ports)]
        return first + by_port + [p for p in probes if p not in first and p not in by_port]

    def _client_side_only(self, base: ScanResult, cli: Sequence[bytes], port: int, transport: Transport) -> bool:
        """Name ``base`` from the client's bytes alone (the server's side is not in the capture).

        Not for a multicast or broadcast destination (mDNS, SSDP, NetBIOS name queries ...): no
        one server stands behind it, and its silence in the capture is normal."""
        if _group_address(base.address):
            return False
        attempts: list[Attempt] = []
        probes = self.cands.tcp if transport == "tcp" else self.cands.udp
        hinted = self.client_hinted(cli[0], attempts) if transport == "tcp" and cli else []
        chosen = self.passive(self._ranked(probes, hinted, port), [], cli, attempts)
        base.attempts = attempts
        if chosen is None:
            return False
        self._passive_result(base, chosen, "the client's bytes", client_only=True)
        return True

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
        if not opened and (flow.count_only or not cli.data):
            return None
        fr = FlowResult(server, "tcp", None, flow.packets, flow.first_ts, flow.last_ts, open=opened)
        if flow.count_only:
            return fr
        addr = format_address(server[0])
        port = server[1]
        if not opened:
            # only the client's side is in the capture: name the service from its bytes, if a probe can
            base = ScanResult(target=addr, address=addr, port=port, transport="tcp", state="unknown")
            if not self._client_side_only(base, [cli.data], port, "tcp"):
                return None
            base.details.setdefault("replay", {"server_decided_by": how})
            fr.result = base
            return fr
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
            if not (cli and self._client_side_only(base, [cli], port, "tcp")):
                base.reason = "the server sent no bytes in the capture"
            return base, False
        implicit: TLSFacts | None = None
        implicit_tls: ServerTLS | None = None
        if looks_like_tls_record(srv, any_type=True) and (
            looks_like_tls_record(srv) or not cli or looks_like_tls_record(cli, any_type=True)
        ):
            dec = self._decrypt(cli, srv, replay)
            if dec is None:
                return self._implicit_tls(base, srv, port), False
            # implicit TLS with the keys: the probes read the plaintext, as after a live handshake
            implicit_tls = parse_server_tls(srv)
            if dec.certificate_der and not implicit_tls.certificates:
                implicit_tls.certificates = [dec.certificate_der]
                implicit_tls.note = None
            implicit = _facts(implicit_tls)
            srv, cli = dec.server, dec.client
            if not srv:
                base.tls = _tls_info(implicit_tls, "implicit")
                base.reason = "implicit TLS, decrypted: the server sent no application data"
                return base, False
        # STARTTLS: the text part ends where the server's TLS handshake starts
        tls_at = find_server_hello(srv) if implicit is None and b"\x16\x03" in srv[:65536] else -1
        text = srv[:tls_at] if tls_at > 0 else srv
        server_tls = parse_server_tls(srv[tls_at:]) if tls_at > 0 else implicit_tls
        after_tls: bytes | None = None
        if tls_at > 0:
            dec = self._decrypt(cli[_client_hello_at(cli) :], srv[tls_at:], replay)
            if dec is not None:
                after_tls = dec.server
                if dec.certificate_der and server_tls is not None and not server_tls.certificates:
                    server_tls.certificates = [dec.certificate_der]
                    server_tls.note = None
        facts = _facts(server_tls) if server_tls and server_tls.ok else None
        tls_error = (server_tls.note if server_tls else None) or "no TLS handshake in the capture"
        tls_mode = "implicit" if implicit is not None else "starttls"
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
        hinted = self.client_hinted(cli, attempts)
        by_bytes = [p for p in hinted if not p.server_first]
        by_port = [p for p in self.cands.client_first if p not in by_bytes and (port in p.ports or port in p.tls_ports)]
        rest = [p for p in self.cands.client_first if p not in by_bytes and p not in by_port]
        ordered += by_bytes + by_port + rest

        best: tuple[Probe, DialogueOutcome] | None = None
        best_ctx: ProbeContext | None = None
        for p in ordered:
            t0 = time.perf_counter()
            ctx = self._ctx(addr, port, "tcp", implicit)
            out = drive_dialogue(p, ctx, text, facts, tls_error, following, after_tls)
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
        if best is None or best[1].status != "success":
            # no dialogue fitted the conversation (or only in part): the probes' passive hooks
            chosen = self.passive(self._ranked(self.cands.tcp, hinted, port), [text], [cli], attempts)
            if chosen is not None and (best is None or chosen[1].confidence > best[1].finding.confidence):  # type: ignore[union-attr]
                self._passive_result(base, chosen, "both sides' bytes", client_only=False, greeting=greeting)
                if server_tls is not None and server_tls.ok:
                    base.tls = _tls_info(server_tls, tls_mode)
                return base, unserved
        if best is None:
            base.details = {"banner": srv[:256].decode("latin-1")}
            base.reason = "no probe recognised the server's bytes"
            if server_tls is not None and server_tls.ok:
                base.tls = _tls_info(server_tls, tls_mode)
            named = self._refine(None, greeting, {})
            if named is not None:
                _apply(base, "servicedb", named)
                base.details.setdefault("banner", srv[:256].decode("latin-1"))
                base.reason = f"no probe of ours recognised the bytes; the service database names them ({named.rule})"
            return base, unserved
        probe, out = best
        enriched = self.enrich(probe, out.finding, [text], [cli], attempts)  # type: ignore[arg-type]
        finding = self._refine(
            enriched, greeting if probe.server_first else b"", best_ctx.responses if best_ctx else {}
        )
        _apply(base, probe.name, finding)  # type: ignore[arg-type]
        if server_tls is not None and server_tls.ok and (out.starttls or tls_at > 0 or implicit is not None):
            base.tls = _tls_info(server_tls, tls_mode)
            if server_tls.note:
                replay["tls_note"] = server_tls.note
        if out.status != "success":
            base.reason = f"{probe.name} dialogue ended early ({out.status}: {out.error}); partial result"
        else:
            base.reason = f"{probe.name} dialogue confirmed the service from the captured bytes"
        if out.reconnects:
            base.reason += f" ({out.reconnects} reconnect(s): later connections of the capture)"
        return base, unserved

    def _decrypt(self, cli: bytes, srv: bytes, replay: dict[str, Any]) -> Decrypted | None:
        """The plaintext of a TLS connection when the key log has its secrets (else None)."""
        if not self.tls_keys:
            return None
        from scanner.replay.tlsdecrypt import decrypt_connection

        dec = decrypt_connection(cli, srv, self.tls_keys)
        if dec is None:
            return None
        if dec.notes:
            replay["tls_decrypt_notes"] = dec.notes
        if not dec.client and not dec.server and dec.notes:
            return None  # wrong secrets: as without keys
        replay["tls_decrypted"] = {"client_records": dec.records[0], "server_records": dec.records[1]}
        return dec

    def _refine(self, finding: Finding | None, greeting: bytes, responses: dict[str, bytes]) -> Finding | None:
        """The service database behind the probes, as in a live scan (scanner.breadth.refine)."""
        if self.service_db is None:
            return finding
        return self.service_db.refine(finding, greeting=greeting, responses=responses)

    def _implicit_tls(self, base: ScanResult, srv: bytes, port: int) -> ScanResult:
        st = parse_server_tls(srv)
        base.tls = _tls_info(st, "implicit")
        service = None
        probe = next((p for p in self.probes if st.alpn and st.alpn in _alpn_ids(p)), None)
        if probe is not None:
            service = probe.services[0]
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
        attempts: list[Attempt] = []
        responses, replay = pair_datagrams(flow.datagrams, server_side, self, attempts)
        requests = [d for side, d in flow.datagrams if side != server_side][:MAX_PASSIVE_DATAGRAMS]
        addr = format_address(server[0])
        port = server[1]
        if not responses:
            # only the client's datagrams: name the service from them, if a probe can
            base = ScanResult(target=addr, address=addr, port=port, transport="udp", state="unknown")
            if not requests or not self._client_side_only(base, requests, port, "udp"):
                return None
            base.attempts[:0] = attempts
            base.details.setdefault("replay", replay)
            fr.open = False
            fr.result = base
            return fr
        base = ScanResult(target=addr, address=addr, port=port, transport="udp", state="open")
        hinted = [p for p in self.cands.udp if port in p.ports]
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
        passive: tuple[Probe, Finding] | None = None
        if best is None or best[1].status != "success":
            ranked = hinted + [p for p in self.cands.udp if p not in hinted]
            passive = self.passive(ranked, responses[:MAX_PASSIVE_DATAGRAMS], requests, attempts)
            if passive is not None and best is not None and passive[1].confidence <= best[1].finding.confidence:  # type: ignore[union-attr]
                passive = None
        if passive is not None:
            self._passive_result(base, passive, f"{len(responses)} response datagram(s)", client_only=False)
            base.details.setdefault("replay", replay)
        elif best is None:
            base.details = {"banner": responses[0][:256].decode("latin-1"), "replay": replay}
            base.reason = "no probe recognised the server's datagrams"
        else:
            enriched = self.enrich(best[0], best[1].finding, responses[:MAX_PASSIVE_DATAGRAMS], requests, attempts)  # type: ignore[arg-type]
            finding = self._refine(enriched, b"", best_ctx.responses if best_ctx else {})
            _apply(base, best[0].name, finding)  # type: ignore[arg-type]
            base.details.setdefault("replay", replay)
            base.reason = f"{best[0].name} dialogue over {len(responses)} response datagram(s) from the capture"
        fr.result = base
        return fr


def _client_hello_at(cli: bytes) -> int:
    """Where the client's TLS ClientHello record starts in its stream (after a STARTTLS command)."""
    pos = cli.find(b"\x16\x03", 0, 65536)
    for _ in range(64):
        if pos < 0 or (len(cli) > pos + 5 and cli[pos + 5] == 1):
            break
        pos = cli.find(b"\x16\x03", pos + 1, 65536)
    return pos if pos >= 0 else len(cli)


def split_server_bytes(srv: bytes) -> ServerStream:
    """Cut a server stream where its STARTTLS handshake starts; read the TLS facts after it."""
    tls_at = find_server_hello(srv) if b"\x16\x03" in srv[:65536] else -1
    if tls_at <= 0:
        return ServerStream(srv)
    st = parse_server_tls(srv[tls_at:])
    return ServerStream(srv[:tls_at], _facts(st) if st.ok else None, st.note or "no TLS handshake in the capture")


def pair_datagrams(
    datagrams: Sequence[tuple[int, bytes]],
    server_side: int,
    keys: Identifier | Sequence[Probe] | None = None,
    bugs: list[Attempt] | None = None,
) -> tuple[list[bytes], dict[str, Any]]:
    """Pair requests with responses; return the responses (paired ones first) and counts.

    A datagram's key is the first ``pair_key`` the UDP probes give it (DNS: id and question;
    CLDAP: the LDAP message id); datagrams no probe keys pair in order. An unpaired response is
    still offered (the request may be outside the capture). ``keys``: the identifier (or the
    probes) whose hooks key the datagrams; None: the registry's probes. A hook that raises is
    recorded in ``bugs``.
    """
    ident = keys if isinstance(keys, Identifier) else Identifier(keys if keys is not None else _registry_probes())
    pending: dict[Hashable, int] = {}
    unkeyed_requests = 0
    paired: list[bytes] = []
    unpaired: list[bytes] = []
    for side, data in datagrams:
        key = ident.pair_key(data, bugs)
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


def _registry_probes() -> list[Probe]:
    """The registered probes (built-ins and plugins), loaded once."""
    global _REGISTRY_PROBES
    if _REGISTRY_PROBES is None:
        from scanner.registry import load_probes  # the registry imports the probes: load them late

        _REGISTRY_PROBES = load_probes()
    return _REGISTRY_PROBES


_REGISTRY_PROBES: list[Probe] | None = None


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
