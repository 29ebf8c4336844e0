"""scanner.ntlm: NEGOTIATE building, CHALLENGE parsing (real captures), hostile blobs, LDAP helpers."""

from __future__ import annotations

import base64
import datetime as dt
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scanner.api import NotThisProtocol
from scanner.ntlm import (
    DEFAULT_FLAGS,
    NEGOTIATE_TARGET_INFO,
    NEGOTIATE_UNICODE,
    NEGOTIATE_VERSION,
    NTLMChallenge,
    NTLMError,
    build_ldap_sasl_bind,
    build_negotiate,
    find_ntlmssp,
    frame_ldap_message,
    negotiate_b64,
    parse_challenge,
    parse_challenge_b64,
    parse_ldap_bind_response,
    windows_name,
)
from scanner.testing import feed_bytewise

PCAPS = Path(__file__).resolve().parents[1] / "data" / "pcaps-public"  # shipped with the tests (MANIFEST.tsv)


def tcp_payloads(name: str, sport: int | None = None) -> list[bytes]:
    """TCP payloads (in capture order) of a public capture, optionally only from source port ``sport``."""
    path = PCAPS / name
    if not path.exists():
        pytest.fail(f"public capture {path} is missing (the test data ships with the tests)")
    from scapy.layers.inet import TCP
    from scapy.utils import rdpcap

    out = []
    for pkt in rdpcap(str(path)):
        if TCP in pkt and (sport is None or pkt[TCP].sport == sport):
            data = bytes(pkt[TCP].payload)
            if data:
                out.append(data)
    return out


def first_challenge(name: str, sport: int | None = None) -> bytes:
    """The first NTLMSSP CHALLENGE carried in a capture (from its wrapper: LDAP, DCE/RPC, SMB2)."""
    for data in tcp_payloads(name, sport):
        if b"NTLMSSP\x00\x02\x00\x00\x00" in data:
            return find_ntlmssp(data[data.find(b"NTLMSSP\x00\x02\x00\x00\x00") :])
    raise AssertionError(f"no CHALLENGE in {name}")


def make_challenge(
    avs: list[tuple[int, bytes]],
    *,
    flags: int = 0xE2898235,
    target: bytes = "LAB".encode("utf-16-le"),
    version: bytes | None = bytes([10, 0]) + struct.pack("<H", 17763) + b"\x00\x00\x00\x0f",
) -> bytes:
    """Build a well-formed CHALLENGE (for synthetic cases; the real ones come from captures)."""
    info = b"".join(struct.pack("<HH", i, len(v)) + v for i, v in avs) + b"\x00\x00\x00\x00"
    header_len = 56 if version is not None else 48
    target_off = header_len
    info_off = target_off + len(target)
    msg = b"NTLMSSP\x00" + struct.pack("<I", 2)
    msg += struct.pack("<HHI", len(target), len(target), target_off)
    msg += struct.pack("<I", flags) + b"\x11" * 8 + bytes(8)
    msg += struct.pack("<HHI", len(info), len(info), info_off)
    if version is not None:
        msg += version
    return msg + target + info


def u16(text: str) -> bytes:
    return text.encode("utf-16-le")


# -------------------------------------------------------------------------------------- NEGOTIATE


def test_build_negotiate_layout() -> None:
    msg = build_negotiate()
    assert msg[:8] == b"NTLMSSP\x00"
    assert struct.unpack_from("<I", msg, 8)[0] == 1
    flags = struct.unpack_from("<I", msg, 12)[0]
    assert flags == DEFAULT_FLAGS and flags & NEGOTIATE_VERSION and flags & NEGOTIATE_UNICODE
    # no domain, no workstation: nothing about the scanning host is sent
    assert msg[16:32] == bytes(16)
    assert len(msg) == 40 and msg[32:39] == bytes(7) and msg[39] == 0x0F


def test_build_negotiate_without_version_is_32_bytes() -> None:
    msg = build_negotiate(DEFAULT_FLAGS & ~NEGOTIATE_VERSION)
    assert len(msg) == 32
    with pytest.raises(ValueError):
        build_negotiate(1 << 32)


# -------------------------------------------------------------------- real CHALLENGEs (captures)

REAL = [
    # capture, source port, netbios computer, netbios domain, dns computer, dns domain, forest, build, name
    ("ldap-ad-win2019-dc01zion-invalid-credentials.pcap", 389, "DC01-ZION", "MATRIX",
     "DC01-Zion.matrix.local", "matrix.local", "matrix.local", (10, 0, 17763), "Windows Server 2019"),
    ("msrpc-epm-win2016-map-svcctl-midstream.pcap", 49683, "01566S-WIN16-IR", "3B",
     "01566s-win16-ir.threebeesco.com", "threebeesco.com", "threebeesco.com", (10, 0, 14393),
     "Windows Server 2016"),
    ("msrpc-epm-win2022dc-opnum42-fault.pcap", 445, "DC1", "DOM189", "dc1.dom189.local", "dom189.local",
     "dom189.local", (10, 0, 20348), "Windows Server 2022"),
]


@pytest.mark.parametrize(
    ("capture", "sport", "nb_host", "nb_domain", "dns_host", "dns_domain", "forest", "build", "release"),
    REAL,
    ids=[r[0].split("-")[0] + "-" + str(r[7][2]) for r in REAL],
)
def test_real_windows_challenges(
    capture: str, sport: int, nb_host: str, nb_domain: str, dns_host: str, dns_domain: str, forest: str,
    build: tuple[int, int, int], release: str,
) -> None:
    ch = parse_challenge(first_challenge(capture, sport))
    assert ch.netbios_computer == nb_host
    assert ch.netbios_domain == nb_domain
    assert ch.target_name == nb_domain
    assert ch.dns_computer == dns_host
    assert ch.dns_domain == dns_domain
    assert ch.dns_tree == forest
    assert ch.os_version == build
    assert ch.ntlm_revision == 15
    assert ch.windows_version is not None and ch.windows_version.startswith(release)
    assert not ch.looks_like_samba
    assert ch.timestamp is not None and 2019 <= ch.timestamp.year <= 2030
    facts = ch.as_dict()
    assert facts["os_version"] == "{}.{}.{}".format(*build)
    assert release in ch.summary() and dns_host in ch.summary()


def test_real_win2019_timestamp_exact() -> None:
    ch = parse_challenge(first_challenge("ldap-ad-win2019-dc01zion-invalid-credentials.pcap", 389))
    assert ch.timestamp is not None
    assert ch.timestamp.replace(microsecond=0) == dt.datetime(2020, 4, 23, 14, 4, 4, tzinfo=dt.UTC)


def test_real_httpsys_challenge_in_www_authenticate() -> None:
    """HTTP.sys (Microsoft-HTTPAPI/2.0) answering curl's NEGOTIATE: target DLP-TEST-R5, build 20348."""
    for data in tcp_payloads("http-webdav-apache-2.4.52-and-ms-httpapi-2.0.pcapng", 80):
        marker = b"WWW-Authenticate: NTLM "
        if marker in data:
            line = data[data.find(marker) + len(marker) :].split(b"\r\n", 1)[0]
            ch = parse_challenge(base64.b64decode(line))
            break
    else:
        raise AssertionError("no NTLM challenge in the HTTP.sys capture")
    assert ch.target_name == "DLP-TEST-R5"
    assert ch.netbios_computer == "DLP-TEST-R5" and ch.netbios_domain == "DLP-TEST-R5"
    assert ch.os_version == (10, 0, 20348) and ch.windows_version == "Windows Server 2022"


def test_real_cyrus_sasl_challenge_has_no_target_info() -> None:
    """OpenLDAP/Cyrus SASL NTLM: a 66-byte CHALLENGE with a target name only and no VERSION."""
    ch = parse_challenge(first_challenge("ldap-openldap-sasl-ntlm.pcap", 389))
    assert ch.target_name == "LOCALHOST"
    assert ch.netbios_computer is None and ch.dns_domain is None
    assert ch.os_version is None and ch.windows_version is None
    assert not ch.flags & NEGOTIATE_TARGET_INFO


def test_real_ldap_bind_response_from_capture() -> None:
    """parse_ldap_bind_response on the Windows 2019 DC's real saslBindInProgress answer."""
    data = next(d for d in tcp_payloads("ldap-ad-win2019-dc01zion-invalid-credentials.pcap", 389)
                if b"NTLMSSP\x00\x02" in d)
    n = feed_bytewise(frame_ldap_message, data)
    assert n is not None
    result = parse_ldap_bind_response(data[:n])
    assert result.result_code == 14  # saslBindInProgress
    assert result.challenge is not None and result.challenge.netbios_computer == "DC01-ZION"
    assert result.challenge.os_version == (10, 0, 17763)


# ----------------------------------------------------------------------------- synthetic shapes


def test_synthetic_challenge_all_fields() -> None:
    blob = make_challenge([
        (2, u16("LAB")), (1, u16("DC1")), (4, u16("lab.example.test")), (3, u16("dc1.lab.example.test")),
        (5, u16("example.test")), (7, struct.pack("<Q", 133_000_000_000_000_000)), (6, struct.pack("<I", 2)),
        (0x99, b"\x01\x02"),
    ])
    ch = parse_challenge(blob)
    assert (ch.netbios_domain, ch.netbios_computer, ch.dns_domain, ch.dns_computer, ch.dns_tree) == (
        "LAB", "DC1", "lab.example.test", "dc1.lab.example.test", "example.test")
    assert ch.av_flags == 2 and ch.unknown_av_ids == (0x99,)
    assert ch.timestamp == dt.datetime(1601, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=13_300_000_000)


def test_version_absent_when_payload_starts_at_48() -> None:
    ch = parse_challenge(make_challenge([(1, u16("X"))], version=None, flags=0x00828235 & ~NEGOTIATE_VERSION))
    assert ch.os_version is None and ch.netbios_computer == "X"


def test_samba_version_is_flagged() -> None:
    ch = parse_challenge(make_challenge([], version=bytes([6, 1, 0, 0, 0, 0, 0, 15])))
    assert ch.os_version == (6, 1, 0) and ch.looks_like_samba and ch.windows_version is None
    assert "Samba" in ch.summary()


def test_windows_name_table() -> None:
    assert windows_name(10, 0, 17763) == "Windows Server 2019 / Windows 10 1809"
    assert windows_name(5, 2, 3790) is not None and "2003" in str(windows_name(5, 2, 3790))
    assert windows_name(10, 0, 1) is None


def test_find_ntlmssp_in_wrapper() -> None:
    blob = make_challenge([(1, u16("A"))])
    assert find_ntlmssp(b"\xa1\x81\x90junk" + blob) == blob
    with pytest.raises(NTLMError):
        find_ntlmssp(b"no token here")


# ------------------------------------------------------------------------------- malformed blobs

GOOD = make_challenge([(1, u16("DC1")), (2, u16("LAB"))])


def _patch(blob: bytes, at: int, fmt: str, *values: int) -> bytes:
    buf = bytearray(blob)
    struct.pack_into(fmt, buf, at, *values)
    return bytes(buf)


MALFORMED = {
    "empty": b"",
    "short": GOOD[:40],
    "bad signature": b"NTLMSSQ\x00" + GOOD[8:],
    "negotiate not challenge": _patch(GOOD, 8, "<I", 1),
    "target offset past end": _patch(GOOD, 16, "<I", len(GOOD) + 10),
    "target offset huge": _patch(GOOD, 16, "<I", 0xFFFFFFF0),
    "target length huge": _patch(GOOD, 12, "<H", 0xFFFF),
    "info offset past end": _patch(GOOD, 44, "<I", 0x7FFFFFFF),
    "info length past end": _patch(GOOD, 40, "<H", 0xFFF0),
    "info offset inside header": _patch(GOOD, 44, "<I", 4),
    "AV length past info": _patch(GOOD, 56 + 6 + 2, "<H", 0x7FFF),
    "AV odd utf16": make_challenge([(1, b"abc")]),
    "AV bad timestamp length": make_challenge([(7, b"\x00" * 4)]),
    "AV bad flags length": make_challenge([(6, b"\x00" * 3)]),
    "truncated AV header": GOOD[:-3],
    "too many AV pairs": make_challenge([(0x20, b"")] * 100),
    "huge blob": GOOD + bytes(20000),
    "bad utf16 surrogate": make_challenge([(1, b"\x00\xd8\x41\x00")]),
}


@pytest.mark.parametrize("blob", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_rejected_cleanly(blob: bytes) -> None:
    with pytest.raises(NTLMError) as info:
        parse_challenge(blob)
    assert isinstance(info.value, ValueError) and isinstance(info.value, NotThisProtocol)


def test_truncated_real_challenge_rejected() -> None:
    real = first_challenge("ldap-ad-win2019-dc01zion-invalid-credentials.pcap", 389)
    real = real[: 56 + 120]  # cut inside the target info (which runs to ~226 bytes)
    with pytest.raises(NTLMError):
        parse_challenge(real)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_random_bytes(data: bytes) -> None:
    for blob in (data, b"NTLMSSP\x00\x02\x00\x00\x00" + data):
        try:
            ch = parse_challenge(blob)
        except NTLMError:
            continue
        assert isinstance(ch, NTLMChallenge)
        ch.as_dict()
        ch.summary()


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_fuzz_mutated_challenge(data: st.DataObject) -> None:
    buf = bytearray(GOOD)
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(8, len(buf) - 1))
        buf[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(buf)))
    try:
        parse_challenge(bytes(buf[:cut]))
    except NTLMError:
        pass


# ---------------------------------------------------------------------------------- LDAP helpers


def test_build_ldap_sasl_bind_decodes() -> None:
    from ldap3.protocol.rfc4511 import LDAPMessage
    from pyasn1.codec.ber import decoder

    raw = build_ldap_sasl_bind(7, "GSS-SPNEGO")
    assert feed_bytewise(frame_ldap_message, raw) == len(raw)
    msg, rest = decoder.decode(raw, asn1Spec=LDAPMessage())
    assert rest == b"" and int(msg["messageID"]) == 7
    bind = msg["protocolOp"]["bindRequest"]
    sasl = bind["authentication"]["sasl"]
    assert str(sasl["mechanism"]) == "GSS-SPNEGO"
    assert bytes(sasl["credentials"]) == build_negotiate()


def test_frame_ldap_message_limits() -> None:
    assert frame_ldap_message(b"") is None and frame_ldap_message(b"\x30") is None
    assert frame_ldap_message(b"\x30\x84\x00\x00") is None
    for bad in (b"\x31\x00", b"\x30\x80", b"\x30\x85\x00\x00\x00\x00\x01", b"\x30\x84\x7f\xff\xff\xff"):
        with pytest.raises(NTLMError):
            frame_ldap_message(bad)


def test_parse_ldap_bind_response_rejects_other_messages() -> None:
    with pytest.raises(NTLMError):
        parse_ldap_bind_response(build_ldap_sasl_bind(1))  # a request, not a response
    with pytest.raises(NTLMError):
        parse_ldap_bind_response(b"\x30\x03\x02\x01")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_ldap_bind_response(data: bytes) -> None:
    try:
        parse_ldap_bind_response(b"\x30" + bytes([min(len(data), 127)]) + data)
    except NTLMError:
        pass


def test_base64_helpers_for_text_protocols() -> None:
    assert base64.b64decode(negotiate_b64()) == build_negotiate()
    assert negotiate_b64().startswith("TlRMTVNTUAABAAAA")
    real = first_challenge("ldap-ad-win2019-dc01zion-invalid-credentials.pcap", 389)
    ch = parse_challenge_b64(base64.b64encode(real) + b"\r\n")
    assert ch.netbios_computer == "DC01-ZION"
    for bad in ("not base64!", base64.b64encode(b"hello").decode()):
        with pytest.raises(NTLMError):
            parse_challenge_b64(bad)
