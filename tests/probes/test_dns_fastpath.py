"""The DNS reply parser's fast path gives exactly what dnspython's parse gives.

``probes.dns.wire._fast_reply`` reads common replies without dnspython (the largest CPU cost of a
DNS port at scale); for anything it cannot render exactly it hands over to dnspython
(``_slow_reply``). These tests hold the two to the same result: on every recorded lab reply
(Samba, BIND, dnsmasq, Unbound, PowerDNS, Knot, NSD), on the public captures' replies, and on
mutated and hand-built messages (compression pointers, escapes, duplicates, EDNS options). A fast
result must equal the dnspython one; a message dnspython rejects must never get a fast result.
"""

from __future__ import annotations

import random

import dns.edns
import dns.flags
import dns.message
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probes.dns import wire
from probes.dns.wire import DNSReply, parse_dns_reply
from scanner.api import NotThisProtocol
from tests.probes.test_dns import ALL_LAB, BIND_TCP, PCAPS, SAMBA_TCP

LAB_UDP = [*ALL_LAB, *(m[2:] for m in BIND_TCP), *(m[2:] for m in SAMBA_TCP)]


def _slow(data: bytes) -> DNSReply | str:
    try:
        return wire._slow_reply(*wire._cap_records(data))
    except NotThisProtocol:
        return "rejected"


def _parse(data: bytes) -> DNSReply | str:
    try:
        return parse_dns_reply(data)
    except NotThisProtocol:
        return "rejected"


def _fast(data: bytes) -> DNSReply | None:
    """The fast path's reply, or None when it hands the message to dnspython."""
    capped, cut = wire._cap_records(data)
    if cut:
        return None
    try:
        return wire._fast_reply(capped)
    except wire._Slow:
        return None


def _same(data: bytes) -> bool:
    """True when the fast path took ``data`` (and then it must equal dnspython's parse)."""
    fast = _fast(data)
    if fast is None:
        return False
    assert fast == _slow(data), data.hex()
    return True


def test_fast_path_takes_the_lab_replies_and_matches_dnspython() -> None:
    taken = [m for m in LAB_UDP if _same(m)]
    # the common replies are the fast path's whole point: nearly all of the lab's go through it
    assert len(taken) >= 0.9 * len(LAB_UDP), (len(taken), len(LAB_UDP))
    for m in LAB_UDP:
        assert _parse(m) == _slow(m)


def test_fast_path_on_public_captures() -> None:
    from scapy.layers.inet import UDP
    from scapy.utils import rdpcap

    replies = []
    for path in sorted(PCAPS.glob("dns-*.pcap*")):
        for pkt in rdpcap(str(path)):
            if UDP in pkt and pkt[UDP].sport in (53, 5353, 8053):
                data = bytes(pkt[UDP].payload)
                if len(data) >= 12 and data[2] & 0x80:
                    replies.append(data)
    assert replies, f"no DNS replies in {PCAPS}"
    taken = sum(_same(r) for r in replies)
    assert taken > 0
    for r in replies:
        assert _parse(r) == _slow(r)


def _reply(*rrsets: tuple[str, dns.rrset.RRset], nsid: bytes | None = None, ede: int | None = None,
           question: tuple[str, str, str] = ("x.test.", "TXT", "IN")) -> bytes:
    q = dns.message.make_query(*question, use_edns=0 if nsid is not None or ede is not None else False,
                               options=[o for o in (dns.edns.NSIDOption(nsid) if nsid is not None else None,
                                                    dns.edns.EDEOption(ede) if ede is not None else None) if o])
    r = dns.message.make_response(q)
    if nsid is not None or ede is not None:
        r.use_edns(0, options=list(q.options))
    for section, rrset in rrsets:
        getattr(r, section).append(rrset)
    return r.to_wire()


@pytest.mark.parametrize(
    "data",
    [
        # TXT with quotes, backslashes and bytes outside printable ASCII (\DDD escapes)
        _reply(("answer", dns.rrset.from_text("x.test.", 60, "IN", "TXT", '"a \\"b\\" \\\\ \\001 \\255" "two"'))),
        # names dnspython escapes: fast path declines, both agree
        _reply(("answer", dns.rrset.from_text("x.test.", 60, "IN", "NS", "a\\.b.test.", "ns\\@x.test."))),
        # an RRset of several records with different TTLs (the RRset keeps the smallest)
        _reply(("answer", dns.rrset.from_text("x.test.", 300, "IN", "A", "10.0.0.1", "10.0.0.2")),
               ("additional", dns.rrset.from_text("ns.x.test.", 5, "IN", "AAAA", "::ffff:1.2.3.4", "2001:db8::1")),
               question=("x.test.", "A", "IN")),
        _reply(("answer", dns.rrset.from_text("_ldap._tcp.x.test.", 60, "IN", "SRV", "0 100 389 dc1.x.test.")),
               ("authority", dns.rrset.from_text("x.test.", 60, "IN", "SOA", "ns.x.test. h.x.test. 1 2 3 4 5")),
               nsid=b"node-1", question=("_ldap._tcp.x.test.", "SRV", "IN")),
        _reply(("answer", dns.rrset.from_text("version.bind.", 0, "CH", "TXT", '"9.18"')), nsid=b"",
               question=("version.bind.", "TXT", "CH")),
        _reply(ede=18, question=(".", "SOA", "IN")),
        _reply(("answer", dns.rrset.from_text("x.test.", 60, "IN", "MX", "10 mx.x.test."))),  # not fast
        _reply(("answer", dns.rrset.from_text("x.test.", 60, "CH", "A", "ch.test. 1"))),  # CH A: not fast
    ],
)
def test_fast_path_on_built_replies(data: bytes) -> None:
    _same(data)
    assert _parse(data) == _slow(data)


def test_duplicate_records_and_case_variants_go_to_dnspython() -> None:
    base = bytearray(_reply(("answer", dns.rrset.from_text("x.test.", 60, "IN", "A", "10.0.0.1")),
                            question=("x.test.", "A", "IN")))
    rr = bytes(base[-16:])  # c00c 0001 0001 ttl rdlen 10.0.0.1: the one answer
    base[6:8] = (2).to_bytes(2, "big")
    twice = bytes(base) + rr  # the same record twice: dnspython keeps one
    assert _fast(twice) is None
    assert _parse(twice) == _slow(twice)
    assert len(parse_dns_reply(twice).answer) == 1


def test_pointer_rules_match_dnspython() -> None:
    msg = bytearray(LAB_UDP[7])
    # a pointer to itself, forwards, and into the header: dnspython rejects each; so no fast result
    for target in (len(msg) - 2, 0x3FFF, 5):
        bad = bytes(msg[:12]) + bytes(msg[12:]).replace(b"\xc0\x0c", bytes([0xC0 | target >> 8, target & 0xFF]), 1)
        if _fast(bad) is not None:
            assert _fast(bad) == _slow(bad)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(LAB_UDP), st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=4),
       st.integers(0, 3))
def test_fuzz_fast_path_equals_dnspython(msg: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    buf = bytearray(msg)
    for pos, val in flips:
        buf[pos % len(buf)] = val
    if cut:
        del buf[len(buf) - cut:]
    data = bytes(buf)
    if len(data) < 12 or not data[2] & 0x80:
        return
    _same(data)


def test_many_random_mutations_agree() -> None:
    """A wider sweep than hypothesis runs by default (seeded: reproducible)."""
    rng = random.Random(17)
    fast = 0
    for _ in range(20000):
        buf = bytearray(rng.choice(LAB_UDP))
        for _ in range(rng.randint(1, 3)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        data = bytes(buf)
        if len(data) >= 12 and data[2] & 0x80:
            fast += _same(data)
    assert fast > 1000  # the sweep did exercise the fast path


@pytest.mark.parametrize("nsid", [False, True])
@pytest.mark.parametrize("edns", [False, True])
@pytest.mark.parametrize("rd", [False, True])
@pytest.mark.parametrize(
    ("name", "rdtype", "rdclass"),
    [
        (".", "SOA", "IN"), (".", "NS", "IN"), ("version.bind", "TXT", "CH"), ("id.server", "TXT", "CH"),
        ("4.3.2.1.in-addr.arpa.", "PTR", "IN"), ("invalid.", "SOA", "IN"), ("Lab.Example.TEST", "SOA", "IN"),
        ("_ldap._tcp.dc._msdcs.lab.example.test", "SRV", "IN"), ("x.test", "TYPE65280", "CLASS42"),
        ("a" * 63 + ".test", "A", "IN"), (".".join(["abcdefg"] * 31), "AAAA", "IN"),
    ],
)
def test_plain_query_bytes_equal_dnspython(name: str, rdtype: str, rdclass: str, edns: bool, nsid: bool,
                                           rd: bool) -> None:
    plain = wire._plain_query(name, rdtype, rdclass, edns, nsid, rd)
    assert plain is not None
    assert plain == wire._dnspython_query(name, rdtype, rdclass, edns, nsid, rd)


@pytest.mark.parametrize("name", ["a\\.b.test", "caf\u00e9.test", "a b.test", "a" * 64 + ".test",
                                  ".".join(["abcdefg"] * 32), "a..b"])
def test_unusual_names_are_left_to_dnspython(name: str) -> None:
    assert wire._plain_query(name, "A", "IN", True, False, False) is None
