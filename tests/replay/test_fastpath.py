"""The replay's fast path: the raw pcap reader, the 5-tuple decoder, and the endpoint cut-off."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.utils import RawPcapReader

from probes.smtp import SMTPProbe
from scanner.api import Probe
from scanner.replay import STALE_FLOWS, FlowLimits, replay_paths, tlsparse
from scanner.replay import identify as identify_mod
from scanner.replay.layers import (
    ACK,
    SYN,
    TCPSegment,
    Undecodable,
    flow_key,
    link_to_ip,
    parse_ip,
    parse_tcp,
    parse_udp,
)
from scanner.replay.pcapwriter import PcapWriter, TCPConversation, ip_packet, tcp_packet
from scanner.replay.reader import CaptureReader
from scanner.replay.reassembly import FlowTable, TCPFlow, UDPFlow
from tests.replay._build import eth, sll, write_pcap

REPO = Path(__file__).resolve().parents[2]
CORPUS = sorted((REPO / "tests" / "data" / "pcaps-public").glob("*.pcap*")) + sorted((REPO / "pcaps").glob("*.pcap*"))
SMTP = [SMTPProbe()]


def _slow_key(linktype: int, data: bytes) -> tuple[int, bytes, int, bytes, int, int] | None:
    """The same 6-tuple through the full decoders (None for fragments and non-TCP/UDP)."""
    try:
        etype, off = link_to_ip(linktype, data)
        ip = parse_ip(etype, data, off)
        if ip.frag_id is not None:
            return None
        if ip.proto == 6:
            seg = parse_tcp(ip.payload)
            return 6, ip.src, seg.sport, ip.dst, seg.dport, seg.flags
        if ip.proto == 17:
            u = parse_udp(ip.payload)
            return 17, ip.src, u.sport, ip.dst, u.dport, 0
    except Undecodable:
        return None
    return None


def test_flow_key_agrees_with_the_full_decoders_on_every_corpus_packet() -> None:
    fast = slow_only = 0
    for path in CORPUS:
        for _ts, linktype, data, _ in CaptureReader(str(path)).records():
            k = flow_key(linktype, data)
            if k is not None:
                fast += 1
                assert k == _slow_key(linktype, data), (path.name, data[:64].hex())
            elif _slow_key(linktype, data) is not None:
                slow_only += 1  # VLAN tags, IPv6 extension headers: decoded the slow way
    assert fast > 2000 and slow_only < fast // 10


@pytest.mark.parametrize(
    "frame",
    [
        eth(ip_packet("192.0.2.1", "192.0.2.2", 6, b"\x00" * 10)),  # TCP header cut short
        eth(ip_packet("192.0.2.1", "192.0.2.2", 1, b"\x08\x00" + bytes(6))),  # ICMP
        eth(b"\x45"),  # IPv4 header cut short
        sll(ip_packet("2001:db8::1", "2001:db8::2", 17, b"\x00\x35")),  # UDP header cut short
        b"",
    ],
)
def test_flow_key_leaves_anything_odd_to_the_slow_path(frame: bytes) -> None:
    assert flow_key(1 if not frame or frame[12:14] in (b"\x08\x00", b"\x86\xdd") else 113, frame) is None


def test_ipv4_fragment_is_not_taken_by_the_fast_path() -> None:
    pkt = bytearray(ip_packet("192.0.2.1", "192.0.2.2", 17, bytes(8) + b"x" * 16))
    assert flow_key(101, bytes(pkt)) is not None
    pkt[6] |= 0x20  # more fragments
    assert flow_key(101, bytes(pkt)) is None


def test_fast_reader_gives_scapys_records(tmp_path: Path) -> None:
    for path in [p for p in CORPUS if p.read_bytes()[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4")][:20]:
        ours = [(d, w) for _, _, d, w in CaptureReader(str(path)).records()]
        theirs = [(d, m.wirelen) for d, m in RawPcapReader(str(path))]
        assert ours == theirs, path.name
        gz = tmp_path / (path.name + ".gz")
        gz.write_bytes(gzip.compress(path.read_bytes()))
        assert [(d, w) for _, _, d, w in CaptureReader(str(gz)).records()] == theirs


def test_records_iterator_and_record_objects_agree() -> None:
    path = str(REPO / "pcaps" / "smtp-postfix.pcap")
    tuples = list(CaptureReader(path).records())
    records = list(CaptureReader(path))
    assert [(r.ts, r.linktype, r.data, r.wirelen) for r in records] == tuples
    assert [r.index for r in records] == list(range(1, len(records) + 1))


def _smtp_flows(path: Path, n: int, greeting: bytes = b"220 mx.fast.test ESMTP Postfix (Debian/GNU)\r\n") -> Path:
    with PcapWriter(path) as w:
        for i in range(n):
            conv = TCPConversation(w, ("192.0.2.10", 40000 + i), ("192.0.2.25", 25), ts=1e9 + i)
            conv.send(False, greeting)
            conv.send(True, b"QUIT\r\n")
            conv.send(False, b"221 bye\r\n")
            conv.close()
    return path


class _Counting:
    """Counts the TCP flows the identifier examines with their payload."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.examined = 0
        orig = identify_mod.Identifier.identify_tcp

        def counted(ident: identify_mod.Identifier, flow: TCPFlow, *a: object, **kw: object) -> object:
            if not flow.count_only:
                self.examined += 1
            return orig(ident, flow, *a, **kw)  # type: ignore[arg-type]

        monkeypatch.setattr(identify_mod.Identifier, "identify_tcp", counted)


def test_identified_endpoint_is_cut_off_and_still_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    count = _Counting(monkeypatch)
    capture = _smtp_flows(tmp_path / "smtp.pcap", 40)
    report = replay_paths([str(capture)], SMTP)
    (res,) = report.results
    assert (res.service, res.product, res.verdict) == ("smtp", "Postfix", "identified")
    # the first flow identified the endpoint; the 39 others only passed the dict lookup
    assert count.examined == 1
    packets = sum(1 for _ in CaptureReader(str(capture)).records())
    assert res.source is not None and res.source.flows == 40 and report.flows == 40
    # every packet counted (the flushed flow's and the cut ones'), none twice
    assert res.source.packets == packets and report.decoded == packets


def test_endpoint_no_probe_names_is_given_up_after_stale_flows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = _Counting(monkeypatch)
    capture = _smtp_flows(tmp_path / "junk.pcap", 3 * STALE_FLOWS, greeting=b"\x00\x01junk that no probe reads\r\n")
    (res,) = replay_paths([str(capture)], SMTP).results
    assert res.verdict != "identified"
    # the first flow gave the endpoint its (poor) result, the next STALE_FLOWS taught nothing
    assert count.examined == 1 + STALE_FLOWS
    assert res.source is not None and res.source.flows == 3 * STALE_FLOWS


def test_a_live_flow_keeps_its_later_exchanges_after_an_early_identification(tmp_path: Path) -> None:
    # one UDP flow: the first answer alone identifies the endpoint (the flow is still live); the
    # answer naming the product comes later on the same flow and must still be read
    results = replay_paths([str(REPO / "pcaps" / "dns-bind.pcap")], _dns()).results
    (res,) = [r for r in results if (r.port, r.transport) == (53, "udp")]
    assert res.product == "ISC BIND"


def _dns() -> list[Probe]:
    from probes.dns import DNSProbe

    return [DNSProbe()]


def test_a_long_flow_is_identified_at_its_byte_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a download with no close in the capture, then more flows: without the budget the endpoint
    # would be identified only at the end of the file and every flow examined
    count = _Counting(monkeypatch)
    path = tmp_path / "long.pcap"
    with PcapWriter(path) as w:
        conv = TCPConversation(w, ("192.0.2.10", 39999), ("192.0.2.25", 25), ts=1e9)
        conv.send(False, b"220 mx.fast.test ESMTP Postfix (Debian/GNU)\r\n")
        conv.send(True, b"DATA\r\n")
        conv.send(False, b"x" * (FlowLimits().per_direction + 4096))
        for i in range(10):
            c = TCPConversation(w, ("192.0.2.10", 40000 + i), ("192.0.2.25", 25), ts=1e9 + 1 + i)
            c.send(False, b"220 mx.fast.test ESMTP Postfix (Debian/GNU)\r\n")
            c.close()
    (res,) = replay_paths([str(path)], SMTP).results
    assert (res.product, res.source.flows if res.source else 0) == ("Postfix", 11)
    assert count.examined == 2  # the long flow at its budget and when flushed; the 10 others cut


def test_idle_flow_is_flushed_after_the_idle_timeout() -> None:
    flushed: list[TCPFlow | UDPFlow] = []
    table = FlowTable(flushed.append, FlowLimits(idle_timeout=60.0))
    table.add_tcp(0.0, b"\xc0\x00\x02\x01", b"\xc0\x00\x02\x02", TCPSegment(40000, 25, 1, 0, SYN, b""))
    table.add_tcp(30.0, b"\xc0\x00\x02\x01", b"\xc0\x00\x02\x03", TCPSegment(40001, 25, 1, 0, SYN, b""))
    assert not flushed
    table.add_tcp(70.0, b"\xc0\x00\x02\x01", b"\xc0\x00\x02\x03", TCPSegment(40001, 25, 2, 0, ACK, b""))
    assert len(flushed) == 1 and table.expired == 1 and len(table.flows) == 1


def test_udp_answer_is_told_once_per_flow() -> None:
    answered: list[UDPFlow] = []
    table = FlowTable(lambda f: None, FlowLimits(), on_answer=answered.append)
    a, b = b"\xc0\x00\x02\x01", b"\xc0\x00\x02\x02"
    table.add_udp(1.0, a, 5000, b, 53, b"q1")
    table.add_udp(1.1, a, 5000, b, 53, b"q2")
    assert not answered
    table.add_udp(1.2, b, 53, a, 5000, b"r1")
    table.add_udp(1.3, b, 53, a, 5000, b"r2")
    assert len(answered) == 1 and answered[0].datagrams[:3] == [(0, b"q1"), (0, b"q2"), (1, b"r1")]


def test_tail_of_a_closed_flow_is_not_a_new_flow(tmp_path: Path) -> None:
    path = tmp_path / "tail.pcap"
    with PcapWriter(path) as w:
        for i in range(3):
            conv = TCPConversation(w, ("192.0.2.10", 40000 + i), ("192.0.2.25", 25), ts=1e9 + i)
            conv.send(False, b"220 mx.fast.test ESMTP Postfix (Debian/GNU)\r\n")
            conv.close(reset=False)
            # a retransmitted last ACK after the close
            w.write(tcp_packet("192.0.2.10", "192.0.2.25", 40000 + i, 25, 99, 99, ACK, b""), 1e9 + i + 0.5)
    frames = [d for _, _, d, _ in CaptureReader(str(path)).records()]
    write_pcap(tmp_path / "eth.pcap", [eth(f) for f in frames], linktype=1)
    for p in (path, tmp_path / "eth.pcap"):
        (res,) = replay_paths([str(p)], SMTP).results
        assert res.source is not None and res.source.flows == 3, p.name


def _reorder(path: Path, out: Path, endian: str, nano: bool) -> Path:
    """``path`` (a little-endian microsecond pcap) rewritten in byte order ``endian``, with
    nanosecond timestamps when ``nano``: the same records under another of the four magics."""
    data = path.read_bytes()
    _magic, vmaj, vmin, zone, sig, snap, link = struct.unpack_from("<IHHiIII", data, 0)
    parts = [struct.pack(endian + "IHHiIII", 0xA1B23C4D if nano else 0xA1B2C3D4, vmaj, vmin, zone, sig, snap, link)]
    pos = 24
    while pos + 16 <= len(data):
        sec, usec, caplen, wirelen = struct.unpack_from("<IIII", data, pos)
        parts.append(struct.pack(endian + "IIII", sec, usec * 1000 if nano else usec, caplen, wirelen))
        parts.append(data[pos + 16 : pos + 16 + caplen])
        pos += 16 + caplen
    out.write_bytes(b"".join(parts))
    return out


@pytest.mark.parametrize(("endian", "nano"), [("<", False), (">", False), ("<", True), (">", True)])
def test_plain_reader_matches_scapys_for_every_classic_magic(tmp_path: Path, endian: str, nano: bool) -> None:
    src = REPO / "pcaps" / "smtp-postfix.pcap"
    assert src.read_bytes()[:4] == b"\xd4\xc3\xb2\xa1"
    path = _reorder(src, tmp_path / "x.pcap", endian, nano)
    reader = CaptureReader(str(path))
    ours = list(reader.records())
    theirs = [(m.sec + m.usec / (1e9 if nano else 1e6), d, m.wirelen) for d, m in RawPcapReader(str(path))]
    assert [(ts, d, w) for ts, _, d, w in ours] == theirs and len(ours) > 5
    assert reader.format == "pcap" and not reader.errors


def test_a_plain_pcap_is_replayed_without_importing_scapys_reader() -> None:
    # scapy.utils (its readers) costs start-up; a classic pcap needs none of it. The SMTP probe
    # needs no scapy either, so none of scapy may be imported by this replay.
    code = (
        "import sys\n"
        "from probes.smtp import SMTPProbe\n"
        "from scanner.replay import replay_paths\n"
        f"r = replay_paths([{str(REPO / 'pcaps' / 'smtp-postfix.pcap')!r}], [SMTPProbe()])\n"
        "assert r.results and r.results[0].product, r.results\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'scapy'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_cipher_suite_names_read_from_scapys_source_are_its_table() -> None:
    from scapy.layers.tls.crypto.suites import _tls_cipher_suites

    table = tlsparse._suite_names_from_source()
    assert len(table) > 200
    assert table == dict(_tls_cipher_suites)
    assert tlsparse.cipher_name(0x1301) == "TLS_AES_128_GCM_SHA256"
    assert tlsparse.cipher_name(0xC02F) == "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
    assert tlsparse.cipher_name(0xFAFA) == "0xfafa"  # GREASE: no name


@pytest.mark.parametrize(("call_id", "max_frag"), [(1, 4280), (2, 5840), (0xFFFFFFFF, 1024)])
def test_msrpc_bind_packed_without_scapy_is_scapys_pdu(call_id: int, max_frag: int) -> None:
    # the msrpc dialogue's first step runs on every replayed flow not named yet: its bind is
    # packed with struct, and must be the very PDU scapy builds
    from scapy.layers.dcerpc import (
        DceRpc5,
        DceRpc5AbstractSyntax,
        DceRpc5Bind,
        DceRpc5Context,
        DceRpc5TransferSyntax,
    )

    from probes.msrpc import wire

    ctx = DceRpc5Context(
        cont_id=0,
        abstract_syntax=DceRpc5AbstractSyntax(if_uuid=wire.EPM_UUID, if_version=3),
        transfer_syntaxes=[DceRpc5TransferSyntax(if_uuid=wire.NDR_UUID, if_version=2)],
    )
    pdu = DceRpc5(ptype=wire.PTYPE_BIND, pfc_flags=0x03, endian="little", call_id=call_id) / DceRpc5Bind(
        max_xmit_frag=max_frag, max_recv_frag=max_frag, assoc_group_id=0, context_elem=[ctx]
    )
    assert wire.build_bind(call_id, max_frag) == bytes(pdu)


@pytest.mark.parametrize(
    ("cname", "realm", "nonce", "etypes"),
    [
        ("portproof-0123456789", "EXAMPLE.COM", 12345, (18, 17, 23)),
        (None, "SAMDOM.EXAMPLE.COM", 0x7FFFFFFF, (18, 17, 20, 19, 23, 16)),
        ("x" * 200, "Y" * 150, 2**31 + 5, (18,)),  # long-form DER lengths; the nonce masked
        ("u", "", 128, (-128, 255)),  # integers at the sign boundaries
    ],
)
def test_kerberos_as_req_encoded_without_scapy_is_scapys(
    cname: str | None, realm: str, nonce: int, etypes: tuple[int, ...]
) -> None:
    # the kerberos dialogue's first step runs on every replayed flow not named yet: its AS-REQ is
    # DER-encoded by hand and must be the very bytes of scapy's KRB_AS_REQ (rtime is the current
    # second in both: built again when a second boundary fell between the two)
    from scapy.asn1.asn1 import ASN1_GENERALIZED_TIME

    from probes.kerberos import wire

    krb = wire._scapy()

    def scapy_build() -> bytes:
        body = krb.KRB_KDC_REQ_BODY(
            kdcOptions="forwardable+renewable",
            cname=None if cname is None else krb.PrincipalName(nameType=1, nameString=[cname]),
            realm=realm,
            sname=krb.PrincipalName(nameType=2, nameString=["krbtgt", realm]),
            till=ASN1_GENERALIZED_TIME(wire._TILL),
            nonce=nonce & 0x7FFFFFFF,
            etype=list(etypes),
        )
        return bytes(krb.KRB_AS_REQ(padata=None, reqBody=body))

    for _ in range(3):
        ours, theirs = wire.build_as_req(cname, realm, nonce, etypes), scapy_build()
        if ours == theirs:
            break
    assert ours == theirs
