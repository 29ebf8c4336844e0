"""The DNS probe's dialogue (UDP and TCP). Part of the :mod:`probes.dns` package."""

from __future__ import annotations

import re
from collections.abc import Generator, Hashable, Sequence
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

from probes.dns.classify import (
    _srv_targets,
    _txt_value,
    identify,
)
from probes.dns.passive import dns_client_hint, dns_pair_key, identify_dns_passive
from probes.dns.wire import (
    BUILTIN_ZONE_QUERY,
    CHAOS_NAMES,
    MAX_PASSIVE,
    MAX_UNANSWERED,
    MAX_UNMATCHED,
    MAX_ZONE_QUERIES,
    TCP_MAX,
    UDP_TRIES,
    DNSReply,
    as_database_reply,
    build_query,
    frame_dns_tcp,
    frame_dns_udp,
    parse_dns_reply,
    reply_matches,
    tcp_wrap,
)
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
)

__all__ = [
    "DNSProbe",
]


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

    # ---------------------------------------------------------------- passive hooks (replay)
    def client_hint(self, first_client_bytes: bytes) -> bool:
        """A length-prefixed DNS query, update or notify (see :func:`probes.dns.passive.dns_client_hint`)."""
        return dns_client_hint(first_client_bytes)

    def pair_key(self, datagram: bytes) -> Hashable | None:
        """Id and question: a response pairs with the query it answers."""
        return dns_pair_key(datagram)

    def identify_passive(self, server_messages: Sequence[bytes], client_messages: Sequence[bytes]) -> Finding | None:
        """DNS from any well-formed message framing: TKEY/GSS-TSIG negotiations, TSIG-signed
        answers, questions we never asked; client queries alone when the server was not captured
        (see :func:`probes.dns.passive.identify_dns_passive`)."""
        return identify_dns_passive(server_messages, client_messages)

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

        if ctx.fast:
            # --fast: the reply above proved DNS; version.bind names most products; the other
            # queries (identity, zones, AD records, hidden-version behaviour) only add details
            yield from self._run(ctx, st, [("version.bind", "TXT", "CH")])
            return self._store(ctx, st)

        plan: list[tuple[str, str, str]] = [(".", "NS", "IN")]
        plan += [(n, "TXT", "CH") for n in CHAOS_NAMES]
        try:
            plan.append((dns.reversename.from_address(ctx.address).to_text(), "PTR", "IN"))
        except (dns.exception.SyntaxError, ValueError):
            pass  # not an IP address: no reverse name
        yield from self._run(ctx, st, plan)
        # a checkpoint (the partial result, should the dialogue end abnormally later on) and the
        # decision below come from one identification
        so_far = self._store(ctx, st)
        if st.stopped is None and so_far.product is None:
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
        # no identification per reply (it was ~11% of a scan's CPU): the dialogue stores the
        # partial result at its checkpoints (first reply, after the identity queries, the end)
        st.replies.append(r)
        return r

    @staticmethod
    def _store(ctx: ProbeContext, st: _State) -> Finding:
        """Identify from the replies so far and keep it as the partial result.

        Called at the dialogue's checkpoints only, not per reply: a dialogue ended abnormally
        (ICMP port unreachable, a probe bug) reports the identification of the last checkpoint."""
        f = identify(st.replies, queries_had_edns=True)
        if st.rejected:
            f.details["rejected"] = st.rejected[:16]
        if st.unanswered:
            f.details["unanswered"] = st.unanswered
        if st.stopped:
            f.details["stopped"] = st.stopped
        f.details["queries_answered"] = len(st.replies)
        return ctx.found(f)
