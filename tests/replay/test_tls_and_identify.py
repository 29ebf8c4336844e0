"""TLS facts from captured handshakes, and flows offered to the real probes' dialogues."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probes.imap import IMAPProbe
from probes.pop3 import POP3Probe
from probes.smtp import SMTPProbe
from scanner.api import TLSFacts
from scanner.replay import replay_paths
from scanner.replay.identify import pair_datagrams
from scanner.replay.pcapwriter import (
    PcapWriter,
    TCPConversation,
    ip_packet,
    synthesize_server_handshake,
    tcp_packet,
    udp_packet,
)
from scanner.replay.tlsparse import cert_facts_from_der, find_server_hello, parse_server_tls
from tests.replay._build import eth, write_pcap

PROBES = [SMTPProbe(), IMAPProbe(), POP3Probe()]


@pytest.fixture(scope="module")
def cert_der() -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail.replay.test")])
    now = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(0x1234)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("mail.replay.test")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def test_server_hello_and_certificate_tls12(cert_der: bytes) -> None:
    hs = synthesize_server_handshake(
        TLSFacts("TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256", certificate_der=cert_der, alpn="imap")
    )
    facts = parse_server_tls(hs + b"\x17\x03\x03\x00\x05hello")
    assert facts.version == "TLSv1.2" and facts.cipher == "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
    assert facts.alpn == "imap" and facts.certificates == [cert_der]
    cert = cert_facts_from_der(cert_der)
    assert cert is not None and cert.subject == "CN=mail.replay.test" and cert.self_signed
    assert cert.sans == ["DNS:mail.replay.test"] and cert.key == "EC secp256r1"


def test_tls13_says_the_certificate_is_hidden(cert_der: bytes) -> None:
    hs = synthesize_server_handshake(TLSFacts("TLSv1.3", "TLS_AES_256_GCM_SHA384", certificate_der=cert_der))
    facts = parse_server_tls(hs)
    assert facts.version == "TLSv1.3" and facts.cipher == "TLS_AES_256_GCM_SHA384"
    assert facts.certificates == [] and "encrypted" in (facts.note or "")


def test_handshake_split_across_records_and_cut_short(cert_der: bytes) -> None:
    hs = synthesize_server_handshake(TLSFacts("TLSv1.2", "AES128-SHA", certificate_der=cert_der))
    body = hs[5:]
    split = b"".join(b"\x16\x03\x03" + len(p).to_bytes(2, "big") + p for p in (body[:50], body[50:]))
    assert parse_server_tls(split).certificates == [cert_der]
    cut = parse_server_tls(hs[:200])
    assert cut.version == "TLSv1.2" and cut.certificates == [] and "cut short" in (cut.note or "")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_tls_parser_never_raises(data: bytes) -> None:
    parse_server_tls(b"\x16\x03\x03" + data)
    parse_server_tls(data)
    find_server_hello(data)
    assert cert_facts_from_der(data) is None or len(data) > 100


def _starttls_capture(path: Path, cert_der: bytes) -> Path:
    with PcapWriter(path) as w:
        conv = TCPConversation(w, ("192.0.2.10", 51000), ("192.0.2.25", 25), ts=1e9)
        conv.send(False, b"220 mx.replay.test ESMTP Postfix (Debian/GNU)\r\n")
        conv.send(True, b"EHLO client\r\n")
        conv.send(False, b"250-mx.replay.test\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n")
        conv.send(True, b"STARTTLS\r\n")
        conv.send(False, b"220 2.0.0 Ready to start TLS\r\n")
        conv.send(True, b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00")
        conv.send(False, synthesize_server_handshake(TLSFacts("TLSv1.2", "AES256-SHA", certificate_der=cert_der)))
        conv.send(False, b"\x17\x03\x03\x00\x20" + bytes(32))
        conv.close()
        imaps = TCPConversation(w, ("192.0.2.10", 51001), ("192.0.2.25", 993), ts=1e9 + 1)
        imaps.send(True, b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00")
        imaps.send(False, synthesize_server_handshake(TLSFacts("TLSv1.2", "AES256-SHA", certificate_der=cert_der)))
        imaps.close()
    return path


def test_starttls_reports_protocol_before_and_tls_after(tmp_path: Path, cert_der: bytes) -> None:
    report = replay_paths([str(_starttls_capture(tmp_path / "s.pcap", cert_der))], PROBES)
    smtp, imaps = report.results
    assert (smtp.port, smtp.service, smtp.product, smtp.verdict) == (25, "smtp", "Postfix", "identified")
    assert smtp.tls is not None and smtp.tls.mode == "starttls" and smtp.tls.version == "TLSv1.2"
    assert smtp.tls.certificate is not None and smtp.tls.certificate.subject == "CN=mail.replay.test"
    assert smtp.source is not None and smtp.source.flows == 1 and smtp.source.first_seen == pytest.approx(1e9)
    assert (imaps.port, imaps.service, imaps.verdict) == (993, "imap", "identified")
    assert imaps.confidence <= 3 and "encrypted" in (imaps.reason or "")
    assert imaps.tls is not None and imaps.tls.mode == "implicit" and imaps.tls.certificate is not None


def test_midstream_flow_without_handshake_server_from_port(tmp_path: Path) -> None:
    # the capture starts after the greeting, segments out of order, VLAN-tagged, one retransmission
    srv = b"+OK Dovecot (Debian) ready.\r\n"
    p1 = tcp_packet("198.51.100.7", "198.51.100.9", 110, 61000, 7000, 300, 0x18, srv[:10])
    p2 = tcp_packet("198.51.100.7", "198.51.100.9", 110, 61000, 7010, 300, 0x18, srv[10:])
    frames = [eth(p2, (7,)), eth(p1, (7,)), eth(p1, (7,))]
    report = replay_paths([str(write_pcap(tmp_path / "m.pcap", frames, linktype=1))], PROBES)
    (res,) = report.results
    assert (res.address, res.port, res.service, res.product) == ("198.51.100.7", 110, "pop3", "Dovecot")
    assert res.details["replay"]["server_decided_by"] == "port" and res.details["replay"]["midstream"]
    assert res.source is not None and res.source.packets == 3


def test_server_side_from_greeting_on_unusual_ports(tmp_path: Path) -> None:
    # neither port is a hint: the greeting tells which side is the server
    banner = b"* OK [CAPABILITY IMAP4rev1] Dovecot (Debian) ready.\r\n"
    p = tcp_packet("203.0.113.5", "203.0.113.6", 40143, 30000, 1, 1, 0x18, banner)
    q = tcp_packet("203.0.113.6", "203.0.113.5", 30000, 40143, 1, 1 + len(banner), 0x18, b"a1 LOGOUT\r\n")
    report = replay_paths([str(write_pcap(tmp_path / "g.pcap", [p, q]))], PROBES)
    (res,) = report.results
    assert (res.port, res.service) == (40143, "imap")
    assert res.details["replay"]["server_decided_by"] == "greeting"


def test_ipv4_fragments_reassembled_before_udp(tmp_path: Path) -> None:
    whole = udp_packet("192.0.2.53", "192.0.2.1", 53, 5555, b"\x12\x34\x81\x80" + bytes(2000))
    l4 = whole[20:]
    frames = []
    for off in range(0, len(l4), 1480):
        part = l4[off : off + 1480]
        more = off + 1480 < len(l4)
        pkt = bytearray(ip_packet("192.0.2.53", "192.0.2.1", 253, part, ident=99))
        pkt[9] = 17
        pkt[6:8] = ((0x2000 if more else 0) | (off // 8)).to_bytes(2, "big")
        frames.append(bytes(pkt))
    report = replay_paths([str(write_pcap(tmp_path / "f.pcap", reversed(frames)))], PROBES)
    assert report.fragments_reassembled == 1 and report.decoded == 1
    (res,) = report.results
    assert (res.port, res.transport, res.verdict) == (53, "udp", "unidentified")


def test_pairing_dns_by_id_and_question() -> None:
    def q(qid: int, name: bytes, resp: bool) -> bytes:
        flags = b"\x81\x80" if resp else b"\x01\x00"
        return qid.to_bytes(2, "big") + flags + b"\x00\x01\x00\x00\x00\x00\x00\x00" + name + b"\x00\x01\x00\x01"

    a, b = b"\x01a\x04test\x00", b"\x01B\x04test\x00"
    dgrams = [(0, q(1, a, False)), (0, q(2, b, False)), (1, q(2, b.lower(), True)), (1, q(9, a, True))]
    responses, info = pair_datagrams(dgrams, 1)
    assert info == {"paired": 1, "unpaired_responses": 1, "unanswered_requests": 1}
    assert responses[0] == q(2, b.lower(), True)
