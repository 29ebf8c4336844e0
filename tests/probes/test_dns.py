"""Unit tests of the dns probe: framing, parsing, identification, transcripts, hostile input.

Fixtures: replies recorded from the lab's real servers (Samba 4.17.12 internal DNS on 127.0.0.1,
BIND 9.18.49 on 127.0.0.2, dnsmasq 2.90 on 127.0.0.3) by driving this probe's own dialogue with
seed 0 (so ``run_dialogue`` with the same seed, address and host facts replays them exactly), and
DNS replies read from the public captures in ``tests/data/pcaps-public`` (shipped with the tests).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probes.dns import (
    CHAOS_NAMES,
    MAX_UNMATCHED,
    UDP_TRIES,
    DNSProbe,
    DNSReply,
    build_query,
    frame_dns_tcp,
    frame_dns_udp,
    identify,
    parse_dns_reply,
    reply_matches,
    tcp_wrap,
)
from scanner.api import NotThisProtocol, ProbeContext, RecvTimeout, StepError
from scanner.runner import Done, NeedData, Runner, SendBytes
from scanner.testing import SILENT, feed_bytewise, run_dialogue

PCAPS = Path(__file__).resolve().parents[1] / "data" / "pcaps-public"  # shipped with the tests (MANIFEST.tsv)
AD = {"ad_domain": "lab.example.test"}

# ----------------------------------------------------------------------------- lab fixtures
# Samba internal DNS : 12 replies, recorded from 127.0.0.1 udp/53 (seed 0)
SAMBA_UDP = [
    bytes.fromhex("c53e80010001000000000001000006000100002904d000000000000400030000"),
    bytes.fromhex("d75580010001000000000001000002000100002904d0000000000000"),
    bytes.fromhex("14ba800300010000000000000776657273696f6e0462696e640000100003"),
    bytes.fromhex("84908003000100000000000008686f73746e616d650462696e640000100003"),
    bytes.fromhex("f8cb80030001000000000000026964067365727665720000100003"),
    bytes.fromhex("cf53800300010000000000000776657273696f6e067365727665720000100003"),
    bytes.fromhex("9b4b800300010000000000000131013001300331323707696e2d61646472046172706100000c0001"),
    bytes.fromhex(
        "f40484000001000100010000036c6162076578616d706c6504746573740000060001c00c0006000100000e1000270364"
        "6331c00c0a686f73746d6173746572c00c0000000200000384000002580001518000000e10c00c0006000100000e1000"
        "18c02ec0340000000200000384000002580001518000000e10"
    ),
    bytes.fromhex(
        "b75284000001000100010000036c6162076578616d706c6504746573740000020001c00c000200010000038400060364"
        "6331c00cc00c0006000100000e100023c02e0a686f73746d6173746572c00c0000000200000384000002580001518000"
        "000e10"
    ),
    bytes.fromhex(
        "6fd784000001000100010000055f6c646170045f746370026463065f6d73646373036c6162076578616d706c65047465"
        "73740000210001c00c0021000100000384000c00000064018503646331c021c01a0006000100000e100023c0490a686f"
        "73746d6173746572c0210000000100000384000002580001518000000e10"
    ),
    bytes.fromhex(
        "474e84000001000100010000095f6b65726265726f73045f746370036c6162076578616d706c65047465737400002100"
        "01c00c0021000100000384000c00000064005803646331c01bc01b0006000100000e100023c0430a686f73746d617374"
        "6572c01b0000000200000384000002580001518000000e10"
    ),
    bytes.fromhex(
        "904d84000001000100010000035f6763045f746370036c6162076578616d706c6504746573740000210001c00c002100"
        "0100000384000c000000640cc403646331c015c0150006000100000e100023c03d0a686f73746d6173746572c0150000"
        "000200000384000002580001518000000e10"
    ),
]
# Samba internal DNS : 12 replies, recorded from 127.0.0.1 tcp/53 (seed 0)
SAMBA_TCP = [
    bytes.fromhex("0020c53e80010001000000000001000006000100002904d000000000000400030000"),
    bytes.fromhex("001cd75580010001000000000001000002000100002904d0000000000000"),
    bytes.fromhex("001e14ba800300010000000000000776657273696f6e0462696e640000100003"),
    bytes.fromhex("001f84908003000100000000000008686f73746e616d650462696e640000100003"),
    bytes.fromhex("001bf8cb80030001000000000000026964067365727665720000100003"),
    bytes.fromhex("0020cf53800300010000000000000776657273696f6e067365727665720000100003"),
    bytes.fromhex("00289b4b800300010000000000000131013001300331323707696e2d61646472046172706100000c0001"),
    bytes.fromhex(
        "0079f40484000001000100010000036c6162076578616d706c6504746573740000060001c00c0006000100000e100027"
        "03646331c00c0a686f73746d6173746572c00c0000000200000384000002580001518000000e10c00c0006000100000e"
        "100018c02ec0340000000200000384000002580001518000000e10"
    ),
    bytes.fromhex(
        "0063b75284000001000100010000036c6162076578616d706c6504746573740000020001c00c00020001000003840006"
        "03646331c00cc00c0006000100000e100023c02e0a686f73746d6173746572c00c000000020000038400000258000151"
        "8000000e10"
    ),
    bytes.fromhex(
        "007e6fd784000001000100010000055f6c646170045f746370026463065f6d73646373036c6162076578616d706c6504"
        "746573740000210001c00c0021000100000384000c00000064018503646331c021c01a0006000100000e100023c0490a"
        "686f73746d6173746572c0210000000100000384000002580001518000000e10"
    ),
    bytes.fromhex(
        "0078474e84000001000100010000095f6b65726265726f73045f746370036c6162076578616d706c6504746573740000"
        "210001c00c0021000100000384000c00000064005803646331c01bc01b0006000100000e100023c0430a686f73746d61"
        "73746572c01b0000000200000384000002580001518000000e10"
    ),
    bytes.fromhex(
        "0072904d84000001000100010000035f6763045f746370036c6162076578616d706c6504746573740000210001c00c00"
        "21000100000384000c000000640cc403646331c015c0150006000100000e100023c03d0a686f73746d6173746572c015"
        "0000000200000384000002580001518000000e10"
    ),
]
# ISC BIND 9.18.49-1~deb12u3-Debian: 11 replies, recorded from 127.0.0.2 udp/53 (seed 0)
BIND_UDP = [
    bytes.fromhex("c53e80050001000000000001000006000100002904d000000000000600030002766d"),
    bytes.fromhex("d75580050001000000000001000002000100002904d0000000000000"),
    bytes.fromhex(
        "14ba840000010001000100010776657273696f6e0462696e640000100003c00c0010000300000000001918392e31382e"
        "34392d317e646562313275332d44656269616ec00c00020003000000000002c00c00002904d0000000000000"
    ),
    bytes.fromhex(
        "84908400000100010001000108686f73746e616d650462696e640000100003c00c00100003000000000015146e73312e"
        "6c61622e6578616d706c652e74657374c00c00020003000000000002c00c00002904d0000000000000"
    ),
    bytes.fromhex(
        "f8cb84000001000100010001026964067365727665720000100003c00c0010000300000000000302766dc00c00020003"
        "000000000002c00c00002904d0000000000000"
    ),
    bytes.fromhex("cf53800500010000000000010776657273696f6e06736572766572000010000300002904d0000000000000"),
    bytes.fromhex(
        "9b4b800500010000000000010132013001300331323707696e2d61646472046172706100000c000100002904d0000000000000"
    ),
    bytes.fromhex(
        "f40484000001000000010001036e7331036c6162076578616d706c6504746573740000060001c010000600010000012c"
        "0023c00c0a686f73746d6173746572c0100000000100000e1000000258000151800000012c00002904d0000000000000"
    ),
    bytes.fromhex(
        "b75284000001000100010002036c6162076578616d706c6504746573740000060001c00c000600010000012c0027036e"
        "7331c00c0a686f73746d6173746572c00c0000000100000e1000000258000151800000012cc00c000200010000012c00"
        "02c02ec02e000100010000012c00047f00000100002904d0000000000000"
    ),
    bytes.fromhex(
        "6fd784000001000100000002036c6162076578616d706c6504746573740000020001c00c000200010000012c0006036e"
        "7331c00cc02e000100010000012c00047f00000100002904d0000000000000"
    ),
    bytes.fromhex(
        "474e84030001000000010001055f6c646170045f746370026463065f6d73646373036c6162076578616d706c65047465"
        "73740000210001036c6162076578616d706c65047465737400000600010000012c0027036e7331c0370a686f73746d61"
        "73746572c0370000000100000e1000000258000151800000012c00002904d0000000000000"
    ),
]
# ISC BIND 9.18.49-1~deb12u3-Debian: 11 replies, recorded from 127.0.0.2 tcp/53 (seed 0)
BIND_TCP = [
    bytes.fromhex("0022c53e80050001000000000001000006000100002904d000000000000600030002766d"),
    bytes.fromhex("001cd75580050001000000000001000002000100002904d0000000000000"),
    bytes.fromhex(
        "005c14ba840000010001000100010776657273696f6e0462696e640000100003c00c0010000300000000001918392e31"
        "382e34392d317e646562313275332d44656269616ec00c00020003000000000002c00c00002904d0000000000000"
    ),
    bytes.fromhex(
        "005984908400000100010001000108686f73746e616d650462696e640000100003c00c00100003000000000015146e73"
        "312e6c61622e6578616d706c652e74657374c00c00020003000000000002c00c00002904d0000000000000"
    ),
    bytes.fromhex(
        "0043f8cb84000001000100010001026964067365727665720000100003c00c0010000300000000000302766dc00c0002"
        "0003000000000002c00c00002904d0000000000000"
    ),
    bytes.fromhex("002bcf53800500010000000000010776657273696f6e06736572766572000010000300002904d0000000000000"),
    bytes.fromhex(
        "00339b4b800500010000000000010132013001300331323707696e2d61646472046172706100000c000100002904d0000000000000"
    ),
    bytes.fromhex(
        "0060f40484000001000000010001036e7331036c6162076578616d706c6504746573740000060001c010000600010000"
        "012c0023c00c0a686f73746d6173746572c0100000000100000e1000000258000151800000012c00002904d000000000"
        "0000"
    ),
    bytes.fromhex(
        "007eb75284000001000100010002036c6162076578616d706c6504746573740000060001c00c000600010000012c0027"
        "036e7331c00c0a686f73746d6173746572c00c0000000100000e1000000258000151800000012cc00c00020001000001"
        "2c0002c02ec02e000100010000012c00047f00000100002904d0000000000000"
    ),
    bytes.fromhex(
        "004f6fd784000001000100000002036c6162076578616d706c6504746573740000020001c00c000200010000012c0006"
        "036e7331c00cc02e000100010000012c00047f00000100002904d0000000000000"
    ),
    bytes.fromhex(
        "0085474e84030001000000010001055f6c646170045f746370026463065f6d73646373036c6162076578616d706c6504"
        "746573740000210001036c6162076578616d706c65047465737400000600010000012c0027036e7331c0370a686f7374"
        "6d6173746572c0370000000100000e1000000258000151800000012c00002904d0000000000000"
    ),
]
# dnsmasq 2.90: 10 replies, recorded from 127.0.0.3 udp/53 (seed 0)
DNSMASQ_UDP = [
    bytes.fromhex("c53e80850001000000000001000006000100002904d0000000000006000f0002000e"),
    bytes.fromhex("d75580850001000000000001000002000100002904d0000000000006000f0002000e"),
    bytes.fromhex(
        "14ba848000010001000000010776657273696f6e0462696e640000100003c00c0010000300000000000d0c646e736d61"
        "73712d322e393000002904d0000000000000"
    ),
    bytes.fromhex("84908084000100000000000108686f73746e616d650462696e64000010000300002904d0000000000000"),
    bytes.fromhex("f8cb8084000100000000000102696406736572766572000010000300002904d0000000000000"),
    bytes.fromhex("cf53808400010000000000010776657273696f6e06736572766572000010000300002904d0000000000000"),
    bytes.fromhex(
        "9b4b848000010001000000010133013001300331323707696e2d61646472046172706100000c0001c00c000c00010000"
        "00000017036e733304646e7333076578616d706c6504746573740000002904d0000000000000"
    ),
    bytes.fromhex(
        "f40480800001000000000001036e733304646e7333076578616d706c650474657374000006000100002904d0000000000000"
    ),
    bytes.fromhex("b7528080000100000000000104646e7333076578616d706c650474657374000006000100002904d0000000000000"),
    bytes.fromhex("6fd780850001000000000001076578616d706c650474657374000006000100002904d0000000000006000f0002000e"),
]


# ------------------------------------------------------------ servers with the version hidden
# Replies to this probe's first seven queries (root SOA+NSID, root NS, version.bind, hostname.bind,
# id.server, version.server CH TXT, PTR of the server's 127.0.0.x address), recorded with fixed ids
# from real servers started by hand with their version hidden (configs as in tests/lab/extra.d, plus):
#   Unbound 1.17.1 (127.0.0.6): hide-version: yes, hide-identity: yes
#   PowerDNS Authoritative 4.7.3 (127.0.0.7): version-string=anonymous, server-id=disabled
#   Knot DNS 3.2.6 (127.0.0.8): version "", identity "", nsid ""
#   NSD 4.6.1 (127.0.0.8, not a lab server): hide-version: yes, hide-identity: yes

UNBOUND_HIDDEN = [
    bytes.fromhex("100084850001000000000001000006000100002904d0000000000000"),
    bytes.fromhex("100184850001000000000001000002000100002904d0000000000000"),
    bytes.fromhex("1002808500010000000000010776657273696f6e0462696e64000010000300002904d0000000000000"),
    bytes.fromhex("10038085000100000000000108686f73746e616d650462696e64000010000300002904d0000000000000"),
    bytes.fromhex("10048085000100000000000102696406736572766572000010000300002904d0000000000000"),
    bytes.fromhex("1005808500010000000000010776657273696f6e06736572766572000010000300002904d0000000000000"),
    bytes.fromhex(
        "1006848300010000000100010136013001300331323707696e2d61646472046172706100000c0001c012000600010000"
        "2a30002f096c6f63616c686f737400066e6f626f647907696e76616c6964000000000100000e10000004b000093a8000"
        "002a3000002904d0000000000000"
    ),
]
PDNS_HIDDEN = [
    bytes.fromhex("100080050001000000000001000006000100002904d0000000000000"),
    bytes.fromhex("100180050001000000000001000002000100002904d0000000000000"),
    bytes.fromhex("1002840200010000000000010776657273696f6e0462696e64000010000300002904d0000000000000"),
    bytes.fromhex("10038405000100000000000108686f73746e616d650462696e64000010000300002904d0000000000000"),
    bytes.fromhex("10048405000100000000000102696406736572766572000010000300002904d0000000000000"),
    bytes.fromhex("1005840500010000000000010776657273696f6e06736572766572000010000300002904d0000000000000"),
    bytes.fromhex(
        "1006800500010000000000010137013001300331323707696e2d61646472046172706100000c000100002904d0000000000000"
    ),
]
KNOT_HIDDEN = [
    bytes.fromhex("100080050001000000000001000006000100002904d0000000000006000f00020014"),
    bytes.fromhex("100180050001000000000001000002000100002904d0000000000006000f00020014"),
    bytes.fromhex("1002800500010000000000010776657273696f6e0462696e64000010000300002904d0000000000000"),
    bytes.fromhex("10038005000100000000000108686f73746e616d650462696e64000010000300002904d0000000000000"),
    bytes.fromhex("10048005000100000000000102696406736572766572000010000300002904d0000000000000"),
    bytes.fromhex("1005800500010000000000010776657273696f6e06736572766572000010000300002904d0000000000000"),
    bytes.fromhex(
        "1006800500010000000000010138013001300331323707696e2d61646472046172706100000c000100002904d0000000"
        "000006000f00020014"
    ),
]
NSD_HIDDEN = [
    bytes.fromhex("100080050001000000000001000006000100002904d0000000000006000f00020014"),
    bytes.fromhex("100180050001000000000001000002000100002904d0000000000006000f00020014"),
    bytes.fromhex("1002800500010000000000010776657273696f6e0462696e64000010000300002904d0000000000006000f00020012"),
    bytes.fromhex("10038005000100000000000108686f73746e616d650462696e64000010000300002904d0000000000006000f00020012"),
    bytes.fromhex("10048005000100000000000102696406736572766572000010000300002904d0000000000006000f00020012"),
    bytes.fromhex("1005800500010000000000010776657273696f6e06736572766572000010000300002904d0000000000006000f00020012"),
    bytes.fromhex(
        "1006800500010000000000010138013001300331323707696e2d61646472046172706100000c000100002904d0000000"
        "000006000f00020014"
    ),
]
# Unbound 1.17.1 (127.0.0.6, the lab config): invalid. IN SOA, answered from its built-in zone
UNBOUND_INVALID_SOA = bytes.fromhex(
    "20008480000100010000000107696e76616c69640000060001c00c0006000100002a300028096c6f63616c686f7374"
    "00066e6f626f6479c00c0000000100000e10000004b000093a8000002a3000002904d0000000000000"
)


# ------------------------------------------------------------------------------- helpers


def _response(
    qname: str,
    rdtype: str,
    rdclass: str = "IN",
    *,
    qid: int = 0x1234,
    txt: str | None = None,
    rcode: int = dns.rcode.NOERROR,
    aa: bool = True,
) -> bytes:
    """A real DNS response built with dnspython (for rules no lab server covers)."""
    query = dns.message.make_query(qname, rdtype, rdclass, id=qid)
    resp = dns.message.make_response(query)
    resp.set_rcode(rcode)
    if aa:
        resp.flags |= dns.flags.AA
    if txt is not None:
        rrset = dns.rrset.from_text(dns.name.from_text(qname), 0, rdclass, "TXT", f'"{txt}"')
        resp.answer.append(rrset)
    return resp.to_wire()


def _with_id(wire: bytes, qid: int) -> bytes:
    return qid.to_bytes(2, "big") + wire[2:]


def _tcp_messages(stream_parts: list[bytes]) -> list[bytes]:
    return [m[2:] for m in stream_parts]


# ---------------------------------------------------------------------------- build/frame


def test_build_query_is_a_real_query_with_nsid_and_rd_clear() -> None:
    wire = build_query(".", "SOA", qid=0xBEEF, nsid=True)
    msg = dns.message.from_wire(wire)
    assert msg.id == 0xBEEF
    assert not msg.flags & dns.flags.QR and not msg.flags & dns.flags.RD
    assert msg.edns == 0 and msg.payload == 1232
    assert [o.otype for o in msg.options] == [dns.edns.NSID]
    chaos = dns.message.from_wire(build_query("version.bind", "TXT", "CH", qid=1))
    assert chaos.question[0].rdclass == dns.rdataclass.CH
    assert chaos.question[0].rdtype == dns.rdatatype.TXT
    plain = dns.message.from_wire(build_query("a.example", "A", qid=2, edns=False))
    assert plain.edns == -1


def test_tcp_framing_bytewise_on_lab_streams() -> None:
    for stream in (BIND_TCP, SAMBA_TCP):
        for msg in stream:
            assert feed_bytewise(frame_dns_tcp, msg) == len(msg)
        joined = b"".join(stream)
        n = frame_dns_tcp(joined)
        assert n == len(stream[0])
        # a partial second message after the first does not change the first frame
        assert frame_dns_tcp(stream[0] + stream[1][:5]) == len(stream[0])


def test_tcp_framing_rejects_and_waits() -> None:
    assert frame_dns_tcp(b"") is None
    assert frame_dns_tcp(b"\x00") is None
    assert frame_dns_tcp(b"\x00\x20\x12\x34\x81") is None  # 32 bytes announced, 3 here
    with pytest.raises(NotThisProtocol):
        frame_dns_tcp(b"\x00\x05abcde")  # shorter than a header
    with pytest.raises(NotThisProtocol):
        frame_dns_tcp(b"HTTP/1.1 400 Bad Request\r\n")  # QR clear where the flags are
    assert tcp_wrap(b"x" * 12)[:2] == b"\x00\x0c"


def test_udp_framer_takes_the_whole_datagram() -> None:
    assert frame_dns_udp(SAMBA_UDP[0]) == len(SAMBA_UDP[0])
    assert frame_dns_udp(b"") is None


# ---------------------------------------------------------------------------------- parse


def test_parse_bind_version_and_nsid() -> None:
    replies = [parse_dns_reply(m) for m in BIND_UDP]
    first = replies[0]
    assert first.question == (".", "SOA", "IN")
    assert first.rcode == "REFUSED" and first.edns and first.nsid == b"vm"
    vb = next(r for r in replies if r.question == ("version.bind.", "TXT", "CH"))
    assert vb.aa and vb.answer[0].text == '"9.18.49-1~deb12u3-Debian"'
    assert vb.authority[0].rdtype == "NS" and vb.authority[0].rdclass == "CH"


def test_parse_samba_quirks() -> None:
    replies = [parse_dns_reply(m) for m in SAMBA_UDP]
    # the root SOA query comes back as FORMERR, OPT and NSID option echoed
    assert replies[0].rcode == "FORMERR" and replies[0].edns
    vb = next(r for r in replies if r.question == ("version.bind.", "TXT", "CH"))
    assert vb.rcode == "NXDOMAIN" and not vb.aa and not vb.edns
    srv = next(r for r in replies if r.question and r.question[0].startswith("_ldap._tcp.dc._msdcs"))
    assert srv.answer[0].text == "0 100 389 dc1.lab.example.test."


def test_parse_tcp_stream_messages_equal_udp_ones() -> None:
    tcp = [parse_dns_reply(m) for m in _tcp_messages(BIND_TCP)]
    udp = [parse_dns_reply(m) for m in BIND_UDP]
    assert [r.question for r in tcp] == [r.question for r in udp]
    assert [r.rcode for r in tcp] == [r.rcode for r in udp]


@pytest.mark.parametrize(
    "wire, why",
    [
        (b"", "shorter"),
        (b"\x12\x34\x01\x00" + b"\x00" * 8, "QR"),  # a query
        # one question whose name is a compression pointer to itself (offset 12): a loop
        (b"\x12\x34\x81\x80\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01", "malformed"),
        # header says one answer, none follows: truncated
        (b"\x12\x34\x81\x80\x00\x00\x00\x01\x00\x00\x00\x00", "malformed"),
        # a valid reply plus trailing junk
        (_response("a.example", "A") + b"junk", "malformed"),
    ],
)
def test_parse_rejects_hostile_messages(wire: bytes, why: str) -> None:
    with pytest.raises(NotThisProtocol, match=why):
        parse_dns_reply(wire)


def test_reply_matches_checks_id_question_and_qr() -> None:
    r = parse_dns_reply(_response("version.bind", "TXT", "CH", qid=7, txt="x"))
    assert reply_matches(r, 7, "version.bind", "TXT", "CH")
    assert reply_matches(r, 7, "VERSION.BIND.", "TXT", "CH")
    assert not reply_matches(r, 8, "version.bind", "TXT", "CH")
    assert not reply_matches(r, 7, "version.bind", "TXT", "IN")
    assert not reply_matches(r, 7, "hostname.bind", "TXT", "CH")
    # an empty question is only accepted with an error rcode
    empty = dns.message.Message(id=9)
    empty.flags |= dns.flags.QR
    empty.set_rcode(dns.rcode.NOTIMP)
    assert reply_matches(parse_dns_reply(empty.to_wire()), 9, "x.example", "A")
    empty.set_rcode(dns.rcode.NOERROR)
    assert not reply_matches(parse_dns_reply(empty.to_wire()), 9, "x.example", "A")


# -------------------------------------------------------------------------------- identify


@pytest.mark.parametrize(
    "text, product, version",
    [
        # the formats these servers publish in version.bind (no lab server for them)
        ("unbound 1.17.1", "Unbound", "1.17.1"),
        ("PowerDNS Recursor 4.8.2", "PowerDNS Recursor", "4.8.2"),
        ("PowerDNS Authoritative Server 4.7.3 (built ...)", "PowerDNS Authoritative Server", "4.7.3"),
        ("Knot DNS 3.2.6", "Knot DNS", "3.2.6"),
        ("NSD 4.6.1", "NSD", "4.6.1"),
        ("Microsoft DNS 6.1.7601 (1DB15D39)", "Microsoft DNS", "6.1.7601"),
        ("dnsmasq-2.90", "dnsmasq", "2.90"),
        ("9.16.1-Ubuntu", "ISC BIND", "9.16.1"),
    ],
)
def test_identify_version_strings(text: str, product: str, version: str) -> None:
    r = parse_dns_reply(_response("version.bind", "TXT", "CH", txt=text))
    f = identify([r])
    assert (f.product, f.version, f.confidence) == (product, version, 10)
    assert any(e.value == text for e in f.evidence)


def test_identify_unknown_string_is_kept_not_guessed() -> None:
    r = parse_dns_reply(_response("version.bind", "TXT", "CH", txt="none of your business"))
    f = identify([r])
    assert f.service == "dns" and f.product is None
    assert f.details["version_string"] == "none of your business"


def test_identify_hidden_bind_by_chaos_ns_authority() -> None:
    # BIND with `version "hidden";`: the string lies, the CH NS authority record does not
    replies = [parse_dns_reply(m) for m in BIND_UDP]
    vb_wire = next(m for m in BIND_UDP if parse_dns_reply(m).question == ("version.bind.", "TXT", "CH"))
    msg = dns.message.from_wire(vb_wire)
    msg.answer = [dns.rrset.from_text("version.bind.", 0, "CH", "TXT", '"hidden"')]
    hidden = parse_dns_reply(msg.to_wire())
    others = [r for r in replies if r.question != ("version.bind.", "TXT", "CH")]
    others = [r for r in others if r.question not in {(n + ".", "TXT", "CH") for n in CHAOS_NAMES}]
    f = identify([*others, hidden])
    assert f.product == "ISC BIND" and f.version is None and f.confidence == 7


@pytest.mark.parametrize(
    "table, product, confidence",
    [
        ("UNBOUND_HIDDEN", "Unbound", 6),
        ("PDNS_HIDDEN", "PowerDNS Authoritative Server", 6),
        ("KNOT_HIDDEN", "Knot DNS", 5),
        ("NSD_HIDDEN", "NSD", 5),
    ],
)
def test_identify_hidden_versions_by_behaviour(table: str, product: str, confidence: int) -> None:
    replies = [parse_dns_reply(m) for m in globals()[table]]
    f = identify(replies)
    assert (f.product, f.version, f.confidence) == (product, None, confidence)
    assert f.evidence and all(e.source == "behaviour" for e in f.evidence)
    assert "version_string" not in f.details
    assert "zones" not in f.details  # a built-in zone (Unbound's 127.in-addr.arpa) is not the operator's
    # the same replies through the passive (capture) path
    assert identify(replies, queries_had_edns=None).product == product


@pytest.mark.parametrize(
    "table, decisive",
    [
        ("UNBOUND_HIDDEN", ("6.0.0.127.in-addr.arpa.", "PTR", "IN")),  # its built-in zone's SOA
        ("PDNS_HIDDEN", ("version.bind.", "TXT", "CH")),  # SERVFAIL with AA
        ("KNOT_HIDDEN", (".", "SOA", "IN")),  # REFUSED + EDE 20 (and root NS below)
        ("NSD_HIDDEN", (".", "SOA", "IN")),
    ],
)
def test_hidden_version_rules_need_their_decisive_reply(table: str, decisive: tuple[str, str, str]) -> None:
    replies = [parse_dns_reply(m) for m in globals()[table]]
    kept = [r for r in replies if r.question != decisive and r.question != (".", "NS", "IN")]
    if table in ("KNOT_HIDDEN", "NSD_HIDDEN"):
        kept = [r for r in kept if 20 not in r.ede]
    assert identify(kept).product is None


def test_hidden_rules_do_not_claim_the_lab_servers_that_name_themselves() -> None:
    # controls: the rules run only without a product; BIND/dnsmasq/Samba keep their verdicts
    for table, product in (("BIND_UDP", "ISC BIND"), ("DNSMASQ_UDP", "dnsmasq"), ("SAMBA_UDP", "Samba internal DNS")):
        f = identify([parse_dns_reply(m) for m in globals()[table]])
        assert f.product == product
    # Knot's tells with NSD's CHAOS EDE 18 become NSD, not Knot
    knot_ip = [parse_dns_reply(m) for m in KNOT_HIDDEN if parse_dns_reply(m).question[2] == "IN"]  # type: ignore[index]
    nsd_ch = [parse_dns_reply(m) for m in NSD_HIDDEN if parse_dns_reply(m).question[2] == "CH"]  # type: ignore[index]
    assert identify([*knot_ip, *nsd_ch]).product == "NSD"


def test_powerdns_served_by_string_names_product_without_version() -> None:
    text = "Served by PowerDNS - https://www.powerdns.com/"
    f = identify([parse_dns_reply(_response("version.bind", "TXT", "CH", txt=text))])
    assert (f.product, f.version, f.confidence) == ("PowerDNS", None, 10)
    assert "upstream_version" not in f.details


def test_transcript_hidden_unbound_asks_the_special_use_name() -> None:
    # a target outside Unbound's built-in reverse zones: its PTR is REFUSED, so nothing names the
    # product after the CHAOS queries; the probe then asks invalid. SOA, answered from a built-in zone
    recorded = {parse_dns_reply(m).question: m for m in UNBOUND_HIDDEN[:6]}
    recorded[("invalid.", "SOA", "IN")] = UNBOUND_INVALID_SOA

    def answer(q: dns.message.Message) -> bytes:
        key = (
            q.question[0].name.to_text().lower(),
            dns.rdatatype.to_text(q.question[0].rdtype),
            dns.rdataclass.to_text(q.question[0].rdclass),
        )
        if key in recorded:
            return _with_id(recorded[key], q.id)
        resp = dns.message.make_response(q)  # Unbound's local-zone "." refuse: REFUSED, AA, RA
        resp.set_rcode(dns.rcode.REFUSED)
        resp.flags |= dns.flags.AA | dns.flags.RA
        return resp.to_wire()

    asked: list[str] = []

    def logging_answer(q: dns.message.Message) -> bytes:
        asked.append(q.question[0].to_text())
        return answer(q)

    for transport in ("udp", "tcp"):
        asked.clear()
        ctx = ProbeContext(address="198.18.0.1", port=53, transport=transport, rng=random.Random(7))
        f = _serve(ctx, logging_answer)
        assert (f.product, f.version, f.confidence) == ("Unbound", None, 6)
        assert "invalid. IN SOA" in asked
        assert f.details["builtin_local_zones"] == ["invalid"]
        assert "zones" not in f.details and "dns_zones" not in f.host_facts


def test_named_servers_are_not_asked_the_special_use_name() -> None:
    for stream, address in (("BIND_UDP", "127.0.0.2"), ("DNSMASQ_UDP", "127.0.0.3")):
        run = run_dialogue(DNSProbe(), globals()[stream], port=53, transport="udp", address=address)
        assert run.ok, run.error
        assert all(dns.message.from_wire(s).question[0].name.to_text() != "invalid." for s in run.sent)


# ------------------------------------------------------------------------------ transcripts


def test_transcript_samba_udp_with_ad_domain() -> None:
    run = run_dialogue(DNSProbe(), SAMBA_UDP, port=53, transport="udp", address="127.0.0.1", host_facts=AD)
    assert run.ok, run.error
    f = run.finding
    assert f is not None and f.product == "Samba internal DNS" and f.confidence == 8
    assert f.details["ad_domain"] == "lab.example.test"
    assert f.details["domain_controllers"] == ["dc1.lab.example.test"]
    assert f.host_facts["domain_controllers"] == ["dc1.lab.example.test"]
    assert f.details["srv"]["_kerberos._tcp.lab.example.test"][0]["port"] == 88
    assert f.details["srv"]["_gc._tcp.lab.example.test"][0]["port"] == 3268
    assert f.details["recursion_available"] is False
    assert "rejected" not in f.details
    # what went out: root SOA with NSID first, nothing with RD set
    first = dns.message.from_wire(run.sent[0])
    assert first.question[0].to_text() == ". IN SOA" and first.options
    assert all(not dns.message.from_wire(s).flags & dns.flags.RD for s in run.sent)


def test_transcript_samba_tcp_same_answer() -> None:
    run = run_dialogue(DNSProbe(), SAMBA_TCP, port=53, transport="tcp", address="127.0.0.1", host_facts=AD)
    assert run.ok, run.error
    assert run.finding is not None and run.finding.product == "Samba internal DNS"
    assert run.finding.details["ad_domain"] == "lab.example.test"
    assert all(s[:2] == len(s[2:]).to_bytes(2, "big") for s in run.sent)


def test_transcript_samba_without_ad_domain_still_samba() -> None:
    # without the LDAP fact, Samba's zone cannot be discovered from DNS alone: fewer queries,
    # the same behavioural verdict, and no AD domain invented
    n = 1 + 1 + len(CHAOS_NAMES) + 1
    run = run_dialogue(DNSProbe(), SAMBA_UDP[:n], port=53, transport="udp", address="127.0.0.1")
    assert run.ok, run.error
    assert run.finding is not None and run.finding.product == "Samba internal DNS"
    assert run.finding.confidence == 7 and "ad_domain" not in run.finding.details


@pytest.mark.parametrize("transport, stream", [("udp", "BIND_UDP"), ("tcp", "BIND_TCP")])
def test_transcript_bind(transport: Any, stream: str) -> None:
    run = run_dialogue(DNSProbe(), globals()[stream], port=53, transport=transport, address="127.0.0.2")
    assert run.ok, run.error
    f = run.finding
    assert f is not None and (f.product, f.version) == ("ISC BIND", "9.18.49")
    assert f.details["version_string"] == "9.18.49-1~deb12u3-Debian"
    assert f.details["nsid"] == "vm" and f.details["server_name"] == "ns1.lab.example.test"
    assert f.details["zones"] == ["lab.example.test"]  # found through hostname.bind
    assert "ad_domain" not in f.details  # its zone has no _msdcs records


def test_transcript_dnsmasq() -> None:
    run = run_dialogue(DNSProbe(), DNSMASQ_UDP, port=53, transport="udp", address="127.0.0.3")
    assert run.ok, run.error
    f = run.finding
    assert f is not None and (f.product, f.version) == ("dnsmasq", "2.90")
    assert f.details["recursion_available"] is True  # dnsmasq sets RA even with no upstream
    assert f.details["chaos"]["hostname.bind"]["rcode"] == "NOTIMP"


# --------------------------------------------------------------------- spoofed / malformed


def test_spoofed_and_malformed_datagrams_are_ignored() -> None:
    real = BIND_UDP[0]
    qid = int.from_bytes(real[:2], "big")
    spoof_id = _with_id(real, qid ^ 0xFFFF)
    other_question = _with_id(_response("evil.example", "SOA", txt=None), qid)
    loop = real[:2] + b"\x81\x80\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x06\x00\x01"
    stream = [spoof_id, other_question, b"\x00" * 3, loop, *BIND_UDP]
    run = run_dialogue(DNSProbe(), stream, port=53, transport="udp", address="127.0.0.2")
    assert run.ok, run.error
    assert run.finding is not None and run.finding.product == "ISC BIND"
    rejected = run.finding.details["rejected"]
    assert len(rejected) == 4
    assert "ignored reply id" in rejected[0] and "evil.example" in rejected[1]
    assert "shorter than a DNS header" in rejected[2] and "malformed" in rejected[3]


def test_only_mismatched_replies_mean_not_this_protocol() -> None:
    real = BIND_UDP[0]
    qid = int.from_bytes(real[:2], "big")
    stream = [_with_id(real, (qid + i) & 0xFFFF) for i in range(1, MAX_UNMATCHED + 3)]
    run = run_dialogue(DNSProbe(), stream, port=53, transport="udp", address="127.0.0.2")
    assert isinstance(run.error, NotThisProtocol)
    assert "no reply matched" in str(run.error)


def test_tcp_garbage_is_not_this_protocol() -> None:
    run = run_dialogue(DNSProbe(), b"HTTP/1.1 400 Bad Request\r\n\r\n", port=53, transport="tcp")
    assert isinstance(run.error, NotThisProtocol)


def test_udp_timeout_resends_with_a_new_id_then_gives_up() -> None:
    # a silent server: every wait times out (SILENT), through the same runner a live scan uses
    run = run_dialogue(DNSProbe(), [SILENT] * (UDP_TRIES + 5), port=53, transport="udp", address="127.0.0.2")
    assert run.status == "io-timeout" and isinstance(run.error, RecvTimeout)
    # bounded: exactly UDP_TRIES sends of the same question, each with its own id
    assert len(run.sent) == UDP_TRIES
    a, b = dns.message.from_wire(run.sent[0]), dns.message.from_wire(run.sent[1])
    assert a.question == b.question and a.id != b.id


def test_later_timeouts_keep_partial_result_and_stop_bounded() -> None:
    # the server answers the first query, then goes silent: two unanswered queries end it
    first = run_dialogue(DNSProbe(), [SILENT], port=53, transport="udp", address="127.0.0.2").sent[0]
    qid = int.from_bytes(first[:2], "big")  # the seeded id: the same in the run below
    run = run_dialogue(DNSProbe(), [_with_id(BIND_UDP[0], qid), *[SILENT] * 50], port=53, transport="udp",
                       address="127.0.0.2")
    assert run.ok and run.finding is not None
    assert run.finding.service == "dns" and run.finding.details["stopped"].startswith("2 queries unanswered")
    assert len(run.sent) == 1 + 2 * UDP_TRIES


def test_tcp_close_mid_dialogue_keeps_what_was_learned() -> None:
    run = run_dialogue(DNSProbe(), BIND_TCP[:3], port=53, transport="tcp", address="127.0.0.2")
    assert run.ok, run.error
    assert run.finding is not None and run.finding.details["stopped"].startswith("connection closed")
    assert run.finding.details["chaos"]["version.bind"]["txt"] == ["9.18.49-1~deb12u3-Debian"]


# ------------------------------------------------------------------------------------ fuzz

ALL_LAB = [*SAMBA_UDP, *BIND_UDP, *DNSMASQ_UDP, *UNBOUND_HIDDEN, *PDNS_HIDDEN, *KNOT_HIDDEN, *NSD_HIDDEN]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_fuzz_parser_random_bytes(data: bytes) -> None:
    try:
        r = parse_dns_reply(data)
    except NotThisProtocol:
        return
    identify([r])


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(ALL_LAB), st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=6))
def test_fuzz_parser_mutated_lab_replies(msg: bytes, flips: list[tuple[int, int]]) -> None:
    buf = bytearray(msg)
    for pos, val in flips:
        if buf:
            buf[pos % len(buf)] = val
    try:
        r = parse_dns_reply(bytes(buf))
    except NotThisProtocol:
        return
    f = identify([r], queries_had_edns=None)
    assert f.service == "dns"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_fuzz_tcp_framer(data: bytes) -> None:
    try:
        n = frame_dns_tcp(data)
    except NotThisProtocol:
        return
    assert n is None or 14 <= n <= len(data)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(BIND_UDP) - 1), st.integers(0, 300), st.integers(0, 255)), max_size=8))
def test_fuzz_dialogue_with_mutated_datagrams(muts: list[tuple[int, int, int]]) -> None:
    datagrams = [bytearray(m) for m in BIND_UDP]
    for idx, pos, val in muts:
        d = datagrams[idx]
        d[pos % len(d)] = val
    run = run_dialogue(DNSProbe(), [bytes(d) for d in datagrams], port=53, transport="udp", address="127.0.0.2")
    # a clean result or a clean "not this protocol"/step error, never another exception
    assert run.ok or isinstance(run.error, NotThisProtocol | StepError)
    if run.finding is not None:
        assert run.finding.service == "dns"


# ---------------------------------------------------------------------- public captures


def _pcap(name: str) -> Path:
    path = PCAPS / name
    if not path.exists():
        pytest.fail(f"public capture {path} is missing (the test data ships with the tests)")
    return path


def _udp_replies(name: str, port: int) -> list[DNSReply]:
    from scapy.layers.inet import UDP
    from scapy.utils import rdpcap

    out = []
    for pkt in rdpcap(str(_pcap(name))):
        if UDP in pkt and pkt[UDP].sport == port:
            out.append(parse_dns_reply(bytes(pkt[UDP].payload)))
    return out


def test_pcap_google_nsid_ipv4_ipv6() -> None:
    replies = _udp_replies("dns-google-nsid-gpdns-ipv6-ipv4.pcapng", 53)
    assert len(replies) == 7
    nsids = {r.nsid for r in replies}
    assert {b"gpdns-mil", b"r3.mil1", b"r9.mil1"} <= nsids
    f = identify(replies, queries_had_edns=None)
    assert f.details["nsid"] == "gpdns-mil" and f.details["recursion_available"] is True
    # no version string, but Google Public DNS's documented NSID form "gpdns-<IATA code>" names it
    assert f.product == "Google Public DNS" and f.version is None
    assert f.details["product_from"] == "EDNS NSID naming convention"


def test_pcap_vlan_tagged_google() -> None:
    replies = _udp_replies("dns-google-public-dns-vlan11.pcap", 53)
    assert len(replies) == 41
    assert replies[0].question == ("google.com.", "A", "IN")
    assert replies[0].answer[0].text == "216.58.218.206"


def test_pcap_nonstandard_port_udp_and_tcp() -> None:
    from scapy.layers.inet import TCP
    from scapy.packet import Raw
    from scapy.utils import rdpcap

    udp = _udp_replies("dns-nonstandard-port-8053-udp.pcap", 8053)
    assert [r.question for r in udp] == [("www.tcpdump.org.", "A", "IN")]
    segs: dict[int, bytes] = {}
    for pkt in rdpcap(str(_pcap("dns-nonstandard-port-8053-tcp.pcap"))):
        if TCP in pkt and pkt[TCP].sport == 8053 and Raw in pkt:
            segs.setdefault(pkt[TCP].seq, pkt[Raw].load)
    stream = b"".join(segs[k] for k in sorted(segs))
    n = feed_bytewise(frame_dns_tcp, stream)
    assert n is not None
    tcp = parse_dns_reply(stream[2:n])
    assert tcp.question == udp[0].question
    assert [rr.text for rr in tcp.answer] == [rr.text for rr in udp[0].answer]


def test_pcap_windows_domain_dns_reveals_zone() -> None:
    replies = _udp_replies("multi-win10-epm-psexec-msdns-kerberos.pcap", 53)
    wpad = next(r for r in replies if r.question == ("wpad.theshire.local.", "A", "IN"))
    assert wpad.rcode == "NXDOMAIN" and wpad.aa
    assert wpad.authority[0].text.startswith("mordordc.theshire.local.")
    f = identify(replies, queries_had_edns=None)
    assert f.details["zones"] == ["theshire.local"]
    assert f.host_facts["dns_zones"] == ["theshire.local"]


def _serve(ctx: ProbeContext, answer: Any) -> Any:
    """Drive the dialogue like a server would: each query gets ``answer(query_message)`` (an
    adapter over the one dialogue runner, as the engine is)."""
    runner = Runner(DNSProbe(), ctx)
    last = b""
    for _ in range(400):
        req = runner.next_request()
        if isinstance(req, Done):
            assert req.outcome.status == "success", req.outcome
            return req.outcome.finding
        if isinstance(req, SendBytes):
            last = req.data if ctx.transport == "udp" else req.data[2:]
            runner.sent()
        else:
            assert isinstance(req, NeedData)
            wire = answer(dns.message.from_wire(last))
            runner.receive_data(wire if ctx.transport == "udp" else tcp_wrap(wire))
    raise AssertionError("dialogue did not end")


def test_hostile_names_in_replies_do_not_break_the_dialogue() -> None:
    long_name = ".".join(["a" * 63] * 6)  # 383 characters: no query can carry it

    def answer(q: dns.message.Message) -> bytes:
        resp = dns.message.make_response(q)
        name = q.question[0].name
        if name.to_text() == "hostname.bind.":
            txt = f'"{long_name[:200]}" "{long_name[200:]}"'
            resp.answer.append(dns.rrset.from_text(name, 0, "CH", "TXT", txt))
        elif name.to_text() == "id.server.":
            resp.answer.append(dns.rrset.from_text(name, 0, "CH", "TXT", '"x\\000y"'))
        elif q.question[0].rdtype == dns.rdatatype.PTR:
            resp.set_rcode(dns.rcode.NXDOMAIN)
        else:
            resp.set_rcode(dns.rcode.REFUSED)
        return resp.to_wire()

    for transport in ("udp", "tcp"):
        ctx = ProbeContext(address="192.0.2.1", port=53, transport=transport, rng=random.Random(3))
        f = _serve(ctx, answer)
        assert f.service == "dns" and f.product is None
        assert f.details["server_name"].startswith("a" * 63)
        assert "zones" not in f.details


def test_zone_found_from_target_name_and_ad_srv_queried() -> None:
    zone = "corp.example"

    def answer(q: dns.message.Message) -> bytes:
        resp = dns.message.make_response(q)
        qn, qt = q.question[0].name.to_text(), dns.rdatatype.to_text(q.question[0].rdtype)
        if (qn, qt) == (zone + ".", "SOA"):
            resp.flags |= dns.flags.AA
            resp.answer.append(dns.rrset.from_text(qn, 60, "IN", "SOA", f"dc9.{zone}. h.{zone}. 1 2 3 4 5"))
        elif qt == "SRV" and qn.endswith(zone + "."):
            resp.flags |= dns.flags.AA
            port = {"_ldap": 389, "_kerberos": 88, "_gc": 3268}[qn.split(".")[0]]
            resp.answer.append(dns.rrset.from_text(qn, 60, "IN", "SRV", f"0 100 {port} dc9.{zone}."))
        else:
            resp.set_rcode(dns.rcode.REFUSED)
        return resp.to_wire()

    ctx = ProbeContext(address="192.0.2.1", port=53, transport="udp", rng=random.Random(5), hostname=f"dc9.{zone}")
    f = _serve(ctx, answer)
    assert f.details["zones"] == [zone]
    assert f.details["ad_domain"] == zone and f.details["domain_controllers"] == [f"dc9.{zone}"]
    # no CHAOS strings, no Samba behaviour, AD SRV present: Microsoft DNS, as a low-confidence guess
    assert (f.product, f.confidence) == ("Microsoft DNS", 4)
    assert "product_inferred_from" in f.details


class _PassiveDNS(DNSProbe):
    """DNSProbe whose dialogue is its passive one (what a replay of a foreign capture runs)."""

    def dialogue(self, ctx: ProbeContext) -> Any:
        return self.passive_dialogue(ctx)


def _passive(transport: Any, messages: list[bytes]) -> Any:
    """Drive DNSProbe.passive_dialogue over recorded messages (as a replay of a capture would)."""
    run = run_dialogue(_PassiveDNS(), messages, port=53, transport=transport)
    assert not run.sent  # it never sends
    if isinstance(run.error, NotThisProtocol):
        raise run.error
    assert run.ok, run.error
    return run.finding


def test_passive_dialogue_over_foreign_capture() -> None:
    from scapy.layers.inet import UDP
    from scapy.utils import rdpcap

    datagrams = [
        bytes(p[UDP].payload)
        for p in rdpcap(str(_pcap("dns-google-nsid-gpdns-ipv6-ipv4.pcapng")))
        if UDP in p and p[UDP].sport == 53
    ]
    f = _passive("udp", [b"\x00junk", *datagrams])
    assert f.details["nsid"] == "gpdns-mil" and f.details["queries_answered"] == 7
    assert len(f.details["rejected"]) == 1
    bind = _passive("tcp", BIND_TCP)
    assert (bind.product, bind.version) == ("ISC BIND", "9.18.49")
    with pytest.raises(NotThisProtocol):
        _passive("udp", [b"\x00" * 40])
