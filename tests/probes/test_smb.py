"""smb probe: builders, the framer byte by byte, parsers on real replies (and against scapy's
dissectors), the product rules, lab recordings replayed, public captures, the live lab (Samba AD
DC on 139/445, and a private SMB1-only smbd), hostile replies, fuzz.

Fixtures (``tests/probes/data/smb-*.bin``: the server's bytes only, NetBIOS frames back to back),
recorded on 2026-12-08 with this package's own requests (``_record`` below, the same code the lab
test runs) from Debian 12's Samba 2:4.17.12+dfsg-0+deb12u4:

* ``smb-samba-4.17-dc-445.bin``: the lab's AD DC (tests/lab, NetBIOS name DC1, domain LAB,
  realm lab.example.test) on 127.0.0.1:445: SMB2 NEGOTIATE response, SESSION_SETUP response with
  the NTLMSSP CHALLENGE;
* ``smb-samba-4.17-dc-139.bin``: the same server on 139: positive session response, then the same
  two replies (Samba leaves LARGE_MTU out over NetBIOS);
* ``smb-samba-4.17-smb1-only.bin``: a standalone smbd with ``server min/max protocol = NT1``
  (NetBIOS name SMB1TEST, workgroup TESTGRP; the config of :func:`_smb1_conf`): SMB1 NEGOTIATE
  response, SESSION_SETUP_ANDX response (NativeOS ``Windows 6.1``, NativeLanMan
  ``Samba 4.17.12-Debian``, the CHALLENGE);
* ``smb-samba-4.17-smb1-plain.bin``: the same smbd asked without extended security
  (``build_smb1_negotiate(extended_security=False)``, then the anonymous
  ``build_smb1_session_setup(None)``): NEGOTIATE response with the challenge, workgroup and server
  name, and the anonymous SESSION_SETUP_ANDX response, as a server without extended security
  answers.
"""

from __future__ import annotations

import random
import shutil
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probes.smb import (
    MAX_SMB_MESSAGE,
    SAMBA,
    SMB1_MAGIC,
    WINDOWS,
    SMBProbe,
    build_netbios_session_request,
    build_smb1_negotiate,
    build_smb1_session_setup,
    build_smb2_negotiate,
    build_smb2_session_setup,
    build_spnego_ntlm_negotiate,
    claim_product,
    encode_netbios_name,
    frame_netbios,
    parse_netbios,
    parse_smb1_negotiate,
    parse_smb1_session_setup,
    parse_smb2_header,
    parse_smb2_negotiate,
    parse_smb2_session_setup,
    samba_guid_name,
    spnego_mechs,
)
from scanner.api import NotThisProtocol
from scanner.ntlm import NTLMChallenge, build_negotiate, find_ntlmssp, parse_challenge
from scanner.profile import PortEntry, Profile
from scanner.registry import GROUP, Registry, load_registry
from scanner.results import ScanResult
from scanner.testing import feed_bytewise, replay_pcap, run_dialogue

DATA = Path(__file__).parent / "data"
CORPUS = Path(__file__).resolve().parents[1] / "data" / "pcaps-public"
DC_445 = DATA / "smb-samba-4.17-dc-445.bin"
DC_139 = DATA / "smb-samba-4.17-dc-139.bin"
SMB1_ONLY = DATA / "smb-samba-4.17-smb1-only.bin"
SMB1_PLAIN = DATA / "smb-samba-4.17-smb1-plain.bin"
WIN2016 = "msrpc-epm-win2016-map-svcctl-midstream.pcap"
WIN10 = "multi-win10-epm-psexec-msdns-kerberos.pcap"
WIN2022 = "msrpc-epm-win2022dc-opnum42-fault.pcap"


def _split(stream: bytes) -> list[bytes]:
    out = []
    while stream:
        n = frame_netbios(stream)
        assert n is not None
        out.append(stream[:n])
        stream = stream[n:]
    return out


def _payloads(path: Path) -> list[bytes]:
    return [parse_netbios(m).payload for m in _split(path.read_bytes())]


# ---------------------------------------------------------------- builders


def test_netbios_session_request_names() -> None:
    # RFC 1001 14.1: "*SMBSERVER" padded with spaces, suffix 0x20 -> the well-known encoding
    assert encode_netbios_name("*SMBSERVER", 0x20) == b"\x20CKFDENECFDEFFCFGEFFCCACACACACACA\x00"
    req = build_netbios_session_request()
    assert req[0] == 0x81 and struct.unpack(">H", req[2:4])[0] == len(req) - 4 == 68
    assert req[4:38] == encode_netbios_name("*SMBSERVER", 0x20)
    assert req[38:] == encode_netbios_name("PORTPROOF", 0x00)


def test_smb2_negotiate_layout_checked_by_scapy() -> None:
    from scapy.layers.smb2 import SMB2_Header, SMB2_Negotiate_Protocol_Request

    rng = random.Random(7)
    guid, salt = rng.randbytes(16), rng.randbytes(32)
    raw = build_smb2_negotiate(guid, salt)
    assert raw[0] == 0 and int.from_bytes(raw[1:4], "big") == len(raw) - 4
    pkt = SMB2_Header(raw[4:])
    req = pkt[SMB2_Negotiate_Protocol_Request]
    assert list(req.Dialects) == [0x0202, 0x0210, 0x0300, 0x0302, 0x0311]
    assert req.ClientGUID.bytes_le == guid
    assert len(req.NegotiateContexts) == 3
    assert salt in raw  # the preauth salt, from the seeded generator: the request is replayable
    assert build_smb2_negotiate(guid, salt) == raw
    assert b"<portproof" not in raw  # the cached template's placeholders are all replaced
    other = build_smb2_negotiate(bytes(16), bytes(32))
    assert len(other) == len(raw) and other != raw
    assert feed_bytewise(frame_netbios, raw) == len(raw)


def test_smb1_negotiate_offers_nt_lm_and_smb2() -> None:
    raw = build_smb1_negotiate()
    payload = parse_netbios(raw).payload
    assert payload[:4] == SMB1_MAGIC and payload[4] == 0x72
    flags2 = struct.unpack_from("<H", payload, 10)[0]
    assert flags2 & 0x0800 and flags2 & 0x8000  # extended security, Unicode
    assert b"\x02NT LM 0.12\x00\x02SMB 2.002\x00\x02SMB 2.???\x00" in payload


def test_spnego_token_carries_only_a_negotiate() -> None:
    blob = build_spnego_ntlm_negotiate()
    assert blob[0] == 0x60  # GSS-API InitialContextToken
    token = find_ntlmssp(blob)
    assert token == build_negotiate()
    assert struct.unpack_from("<I", token, 8)[0] == 1  # NEGOTIATE, never an AUTHENTICATE (3)
    assert spnego_mechs(blob) == ["NTLMSSP (1.3.6.1.4.1.311.2.2.10)"]
    for raw in (build_smb2_session_setup(blob), build_smb1_session_setup(blob)):
        assert find_ntlmssp(raw).startswith(build_negotiate())
    anon = parse_netbios(build_smb1_session_setup(None)).payload
    assert anon[32] == 13 and b"NTLMSSP" not in anon  # anonymous form: WordCount 13, no token


# ---------------------------------------------------------------- framing


@pytest.mark.parametrize("path", [DC_445, DC_139, SMB1_ONLY, SMB1_PLAIN], ids=lambda p: p.name)
def test_frame_fixtures_bytewise(path: Path) -> None:
    for msg in _split(path.read_bytes()):
        assert feed_bytewise(frame_netbios, msg) == len(msg)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n", "no NetBIOS session packet type"),
        (b"\x00\x01\x00\x00", "larger than any reply"),
        (b"\x00\x00\x00\x02ab", "holds no SMB header"),
        (b"\x00\x00\x00\x40SSH-2.0-", "not an SMB protocol id"),
        (b"\x85\x00\x00\x01\x00", "keepalive with a payload"),
    ],
)
def test_frame_rejects(data: bytes, why: str) -> None:
    with pytest.raises(NotThisProtocol, match=why):
        frame_netbios(data)


def test_frame_waits_and_keepalive() -> None:
    assert frame_netbios(b"\x00\x00\x01") is None
    assert frame_netbios(b"\x00\x00\x00\x50\xfeSMB") is None
    assert frame_netbios(b"\x85\x00\x00\x00") == 4
    assert frame_netbios(b"\x82\x00\x00\x00") == 4
    assert MAX_SMB_MESSAGE + 4 == 65536


# ---------------------------------------------------------------- parsers on the lab's replies


def test_parse_samba_dc_negotiate_and_agree_with_scapy() -> None:
    from scapy.layers.smb2 import SMB2_Header, SMB2_Negotiate_Protocol_Response

    neg_raw, setup_raw = _payloads(DC_445)
    neg = parse_smb2_negotiate(neg_raw)
    assert neg.dialect_name == "3.1.1" and neg.signing_required
    assert neg.server_guid == b"dc1" + bytes(13)  # Samba: the NetBIOS name, lower case
    assert samba_guid_name(neg.server_guid) == "dc1"
    assert (neg.max_transact, neg.max_read, neg.max_write) == (8388608,) * 3
    assert neg.boot_time is None and neg.system_time is not None
    facts = neg.as_dict()
    assert facts["contexts"]["preauth_integrity"] == {"hashes": ["SHA-512"], "salt_length": 32}
    assert facts["contexts"]["signing"] == ["AES-GMAC"]
    assert "NTLMSSP (1.3.6.1.4.1.311.2.2.10)" in facts["security_mechs"]
    # scapy's dissector reads the same reply the same way
    ref = SMB2_Header(neg_raw)[SMB2_Negotiate_Protocol_Response]
    assert ref.DialectRevision == neg.dialect and ref.Capabilities == neg.capabilities
    assert ref.MaxReadSize == neg.max_read and ref.SecurityBlobLen == len(neg.security_blob)
    assert ref.GUID.bytes_le == neg.server_guid
    setup = parse_smb2_session_setup(setup_raw)
    assert setup.header.status == 0xC0000016
    chal = parse_challenge(find_ntlmssp(setup.security_blob))
    assert (chal.netbios_domain, chal.netbios_computer, chal.dns_computer) == ("LAB", "DC1", "dc1.lab.example.test")
    assert chal.looks_like_samba


def test_parse_smb1_only_samba() -> None:
    neg_raw, setup_raw = _payloads(SMB1_ONLY)
    neg = parse_smb1_negotiate(neg_raw)
    assert neg.dialect == "NT LM 0.12" and neg.extended_security
    assert samba_guid_name(neg.server_guid) == "smb1test"
    setup = parse_smb1_session_setup(setup_raw)
    assert (setup.native_os, setup.native_lanman, setup.primary_domain) == (
        "Windows 6.1", "Samba 4.17.12-Debian", "TESTGRP"
    )
    claim = claim_product(None, neg, setup, parse_challenge(find_ntlmssp(setup.security_blob)))
    # NativeOS "Windows 6.1" is Samba's announced NetBIOS version, not Windows
    assert (claim.product, claim.version, claim.rule) == (SAMBA, "4.17.12", "portproof:smb/smb1-native-lanman-samba")
    assert claim.build_extra == "Debian" and claim.os is None and not claim.conflicts


def test_smb1_session_setup_matches_scapy() -> None:
    from scapy.layers.smb import SMB_Header

    _neg, setup_raw = _payloads(SMB1_ONLY)
    ref = SMB_Header(setup_raw)
    setup = parse_smb1_session_setup(setup_raw)
    assert ref.NativeOS == setup.native_os and ref.NativeLanMan == setup.native_lanman


# ---------------------------------------------------------------- product rules


def test_samba_guid_shape_never_matches_random_guids() -> None:
    rng = random.Random(1)
    assert all(samba_guid_name(rng.randbytes(16)) is None for _ in range(20000))
    assert all(samba_guid_name(uuid.UUID(int=rng.getrandbits(128), version=4).bytes_le) is None for _ in range(2000))
    assert samba_guid_name(b"DC1" + bytes(13)) is None  # Samba lower-cases the name
    assert samba_guid_name(b"fileserver-01234") is None  # no NUL: no C string
    assert samba_guid_name(b"fs01\x00\x00x" + bytes(9)) is None  # junk after the name


def _windows_2003_session_setup() -> bytes:
    """An SMB1 SESSION_SETUP_ANDX response shaped like Windows Server 2003 SP2's, built by hand
    (MS-SMB 2.2.4.6.2; the strings are the ones that release sends, as in MS-CIFS's examples and
    nmap's smb-os-discovery output). Layout: header (32), WordCount 4, AndX 4, Action 2,
    SecurityBlobLength 2, ByteCount 2, blob, a pad byte to an even offset, UTF-16 strings."""
    blob = b"\xa1\x03\x0a\x01\x01"
    strings = "".join(s + "\x00" for s in ("Windows Server 2003 3790 Service Pack 2", "Windows Server 2003 5.2",
                                           "LAB")).encode("utf-16-le")
    header = b"\xffSMB" + struct.pack("<BIBHH8sHHHHH", 0x73, 0xC0000016, 0x98, 0xC807, 0, bytes(8), 0, 0, 0, 2048, 2)
    data = blob + strings if (32 + 1 + 8 + 2 + len(blob)) % 2 == 0 else blob + b"\x00" + strings
    return header + struct.pack("<BBBHHH", 4, 0xFF, 0, 0, 0, len(blob)) + struct.pack("<H", len(data)) + data


def test_windows_lanman_names_windows() -> None:
    setup = parse_smb1_session_setup(_windows_2003_session_setup())
    assert setup.native_os == "Windows Server 2003 3790 Service Pack 2"
    chal = NTLMChallenge(flags=0, os_version=(5, 2, 3790))
    claim = claim_product(None, None, setup, chal)
    assert (claim.product, claim.rule) == (WINDOWS, "portproof:smb/smb1-native-lanman-windows")
    assert claim.os == "Windows Server 2003 3790 Service Pack 2" and claim.version == "5.2.3790"
    assert setup.native_lanman == "Windows Server 2003 5.2" and setup.primary_domain == "LAB"


def test_conflicting_rules_are_recorded_not_applied() -> None:
    neg = parse_smb2_negotiate(_payloads(DC_445)[0])
    claim = claim_product(neg, None, None, NTLMChallenge(flags=0, os_version=(10, 0, 17763)))
    assert claim.product == SAMBA and claim.rule == "portproof:smb/server-guid-samba-netbios-name"
    assert claim.version is None and len(claim.conflicts) == 1 and "Windows" in claim.conflicts[0]


def test_nothing_named_without_evidence() -> None:
    neg = parse_smb2_negotiate(_payloads(DC_445)[0])
    random_guid = neg.__class__(**{**{f: getattr(neg, f) for f in neg.__dataclass_fields__},
                                   "server_guid": uuid.uuid4().bytes_le})
    claim = claim_product(random_guid, None, None, NTLMChallenge(flags=0, os_version=(10, 0, 99999)))
    assert claim.product is None and claim.rule is None


# ---------------------------------------------------------------- transcripts


def _check_samba_dc(run_finding: object, port: int) -> None:
    from scanner.api import Finding

    f = run_finding
    assert isinstance(f, Finding)
    assert f.service == "smb" and f.product == SAMBA and f.version is None
    assert f.rule == "portproof:smb/server-guid-samba-netbios-name"
    assert f.details["dialect"] == "3.1.1" and f.details["signing_required"] is True
    assert f.details["guid_netbios_name"] == "dc1"
    ntlm = f.details["ntlm"]
    assert (ntlm["netbios_domain"], ntlm["netbios_computer"], ntlm["dns_computer"], ntlm["dns_domain"]) == (
        "LAB", "DC1", "dc1.lab.example.test", "lab.example.test"
    )
    assert f.host_facts["ntlm_netbios_domain"] == "LAB" and f.host_facts["ntlm_dns_computer"] == "dc1.lab.example.test"
    assert f.details["nmap_service"] == ("netbios-ssn" if port == 139 else "microsoft-ds")
    assert f.extrainfo == "SMB 3.1.1, signing required, dc1.lab.example.test, domain LAB"
    assert "ntlm_error" not in f.details


@pytest.mark.parametrize(("path", "port"), [(DC_445, 445), (DC_139, 139)], ids=["445", "139"])
def test_transcript_samba_dc(path: Path, port: int) -> None:
    run = run_dialogue(SMBProbe(), path.read_bytes(), port=port)
    assert run.ok, run.error
    _check_samba_dc(run.finding, port)
    assert len(run.sent) == (3 if port == 139 else 2)
    if port == 139:
        assert run.sent[0] == build_netbios_session_request()
        assert run.finding is not None and run.finding.details["netbios_session"] == "positive session response"


def test_transcript_smb1_after_smb1_answer() -> None:
    """A server that answers our SMB2 NEGOTIATE in SMB1 gets the SMB1 dialogue on a new connection."""
    neg, setup = _split(SMB1_ONLY.read_bytes())
    run = run_dialogue(SMBProbe(), [neg, neg, setup], port=445)
    assert run.ok, run.error
    f = run.finding
    assert f is not None and f.product == SAMBA and f.version == "4.17.12"
    assert f.details["smb2_negotiate"] == "answered in SMB1"
    assert f.details["smb1_session_setup"]["native_lanman"] == "Samba 4.17.12-Debian"
    assert f.details["ntlm"]["netbios_computer"] == "SMB1TEST"
    assert f.extrainfo is not None and f.extrainfo.startswith("SMB1 NT LM 0.12")


def test_transcript_smb1_without_extended_security_is_anonymous() -> None:
    neg, setup = _split(SMB1_PLAIN.read_bytes())
    parsed = parse_smb1_negotiate(parse_netbios(neg).payload)
    assert not parsed.extended_security and (parsed.domain, parsed.server_name) == ("TESTGRP", "SMB1TEST")
    run = run_dialogue(SMBProbe(), [neg, neg, setup], port=445)
    assert run.ok, run.error
    anon = parse_netbios(run.sent[-1]).payload
    assert anon[32] == 13 and b"NTLMSSP" not in anon  # the anonymous form: no token, no password
    f = run.finding
    assert f is not None and f.product == SAMBA and f.version == "4.17.12" and "ntlm" not in f.details
    assert f.details["smb1"]["domain"] == "TESTGRP" and f.extrainfo == "SMB1 NT LM 0.12, domain TESTGRP"


def test_negotiate_refused_is_still_smb() -> None:
    neg = bytearray(_split(DC_445.read_bytes())[0])
    struct.pack_into("<I", neg, 4 + 8, 0xC00000BB)  # STATUS_NOT_SUPPORTED: no common dialect
    error = bytes(neg[4 : 4 + 64]) + struct.pack("<HBBI", 9, 0, 0, 0) + b"\x00"  # MS-SMB2 2.2.2 error body
    run = run_dialogue(SMBProbe(), b"\x00" + len(error).to_bytes(3, "big") + error, port=445)
    assert run.ok and run.finding is not None and run.finding.service == "smb"
    assert run.finding.details["negotiate_status"] == "STATUS_NOT_SUPPORTED" and run.finding.product is None


def test_negative_session_response_on_139() -> None:
    run = run_dialogue(SMBProbe(), b"\x83\x00\x00\x01\x82", port=139)
    assert run.ok
    f = run.finding
    assert f is not None and f.service == "smb" and f.product is None and f.confidence == 5
    assert f.details["netbios_session_error"] == "called name not present"


# ---------------------------------------------------------------- hostile replies (transcripts)


def _with_challenge(blob_mutator: Callable[[bytearray, int], None]) -> bytes:
    neg, setup = _split(DC_445.read_bytes())
    payload = bytearray(parse_netbios(setup).payload)
    at = payload.find(b"NTLMSSP\x00\x02")
    blob_mutator(payload, at)
    return neg + b"\x00" + len(payload).to_bytes(3, "big") + bytes(payload)


def test_garbage_challenge_keeps_the_negotiate() -> None:
    def lie(p: bytearray, at: int) -> None:
        p[at + 44 : at + 48] = struct.pack("<I", 0x7FFFFFF0)  # TargetInfo offset far past the end

    run = run_dialogue(SMBProbe(), _with_challenge(lie), port=445)
    assert run.ok
    f = run.finding
    assert f is not None and "ntlm" not in f.details and "run past" in f.details["ntlm_error"]
    assert f.product == SAMBA  # the GUID rule still names it


def test_truncated_negotiate_is_not_smb() -> None:
    neg = _split(DC_445.read_bytes())[0]
    cut = neg[4:64 + 40]
    run = run_dialogue(SMBProbe(), b"\x00" + len(cut).to_bytes(3, "big") + cut, port=445, raise_bugs=False)
    assert run.status in ("no-match", "protocol-error") and run.finding is None


def test_lying_context_offset_is_clean() -> None:
    neg = bytearray(_split(DC_445.read_bytes())[0])
    struct.pack_into("<I", neg, 4 + 64 + 60, 0xFFFFFF00)
    with pytest.raises(NotThisProtocol):
        parse_smb2_negotiate(bytes(neg[4:]))


def test_session_setup_refused_is_noted() -> None:
    neg, setup = _split(DC_445.read_bytes())
    payload = bytearray(parse_netbios(setup).payload)
    struct.pack_into("<I", payload, 8, 0xC0000022)  # STATUS_ACCESS_DENIED
    run = run_dialogue(SMBProbe(), neg + b"\x00" + len(payload).to_bytes(3, "big") + bytes(payload), port=445)
    assert run.ok and run.finding is not None
    assert run.finding.details["ntlm_error"] == "SESSION_SETUP answered STATUS_ACCESS_DENIED"


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([DC_445, DC_139, SMB1_ONLY, SMB1_PLAIN]), st.integers(0, 700), st.binary(min_size=1, max_size=6))
def test_fuzz_mutated_replies_never_bug(path: Path, pos: int, junk: bytes) -> None:
    stream = bytearray(path.read_bytes())
    pos %= len(stream)
    stream[pos : pos + len(junk)] = junk
    port = 139 if path == DC_139 else 445
    run = run_dialogue(SMBProbe(), bytes(stream), port=port, raise_bugs=False)
    assert run.status != "probe-bug", run.traceback


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_parsers(data: bytes) -> None:
    for fn in (parse_smb2_header, parse_smb2_negotiate, parse_smb2_session_setup, parse_smb1_negotiate,
               parse_smb1_session_setup, parse_netbios):
        try:
            fn(data)
        except NotThisProtocol:
            pass
    assert isinstance(spnego_mechs(data), list)


# ---------------------------------------------------------------- public captures (replay)


def _capture(name: str) -> Path:
    path = CORPUS / name
    if not path.exists():
        pytest.fail(f"public capture {path} is missing (the test data ships with the tests)")
    return path


def test_replay_windows_server_2016() -> None:
    results = {r.port: r for r in replay_pcap(SMBProbe(), _capture(WIN2016))}
    r = results[445]
    assert r.service == "smb" and r.product == WINDOWS and r.version == "10.0.14393"
    assert r.rule == "portproof:smb/ntlm-version-windows"
    assert r.details["dialect"] == "3.1.1" and r.details["signing_required"] is True
    assert r.details["ntlm"]["netbios_computer"] == "01566S-WIN16-IR"
    assert r.details["os"] == "Windows Server 2016 / Windows 10 1607"
    smb2 = r.details["smb2"]
    assert smb2["boot_time"].startswith("2020-07-19") and "guid_netbios_name" not in r.details
    assert "NEGOEX (1.3.6.1.4.1.311.2.2.30)" in smb2["security_mechs"]


def test_replay_windows_server_2022_dc() -> None:
    results = {r.port: r for r in replay_pcap(SMBProbe(), _capture(WIN2022))}
    r = results[445]
    assert r.product == WINDOWS and r.version == "10.0.20348" and r.details["os"] == "Windows Server 2022"
    assert r.details["dialect"] == "3.0" and "ENCRYPTION" in r.details["smb2"]["capabilities"]
    assert (r.details["ntlm"]["netbios_domain"], r.details["ntlm"]["dns_computer"]) == ("DOM189", "dc1.dom189.local")


def test_replay_midstream_windows_10_is_smb_without_product() -> None:
    results = {r.port: r for r in replay_pcap(SMBProbe(), _capture(WIN10))}
    r = results[445]
    # the capture starts after the negotiate and the session setup: SMB2 replies, nothing that names
    assert r.service == "smb" and r.product is None and r.rule is None
    assert set(r.details["replay_smb2_replies"]) >= {"IOCTL", "CLOSE"}


# ---------------------------------------------------------------- the live lab


def _registry() -> Registry:
    reg = load_registry(eps=[EntryPoint(name="smb", value="probes.smb:SMBProbe", group=GROUP)])
    assert not reg.errors, reg.errors
    return reg


def _record(address: str, port: int, nbss: bool, smb1: bool = False) -> bytes:
    """The server's bytes for this package's requests (how the fixtures were made)."""
    rng = random.Random(0)
    out = b""
    with socket.create_connection((address, port), timeout=5) as sock:
        requests = [build_netbios_session_request()] if nbss else []
        if smb1:
            requests += [build_smb1_negotiate(), build_smb1_session_setup(build_spnego_ntlm_negotiate())]
        else:
            requests += [build_smb2_negotiate(rng.randbytes(16), rng.randbytes(32)),
                         build_smb2_session_setup(build_spnego_ntlm_negotiate())]
        for req in requests:
            sock.sendall(req)
            buf = b""
            for _ in range(64):  # bounded: each read adds bytes or ends
                n = frame_netbios(buf) if buf else None
                if n is not None:
                    break
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
            out += buf
    return out


@pytest.mark.lab
def test_lab_recording_parses_like_the_fixture(lab: object) -> None:
    live = _record("127.0.0.1", 445, nbss=False)
    run = run_dialogue(SMBProbe(), live, port=445)
    assert run.ok, run.error
    _check_samba_dc(run.finding, 445)


@pytest.fixture(scope="module")
def dc(lab: object) -> dict[int, ScanResult]:
    from scanner.engine import scan_sync
    from scanner.profile import load_profile

    results = scan_sync(["127.0.0.1"], ports="139,445", registry=_registry(), profile=load_profile("ad-dc"))
    return {r.port: r for r in results}


@pytest.mark.lab
@pytest.mark.parametrize("port", [139, 445])
def test_lab_samba_dc(dc: dict[int, ScanResult], port: int) -> None:
    r = dc[port]
    assert r.state == "open" and r.service == "smb" and r.probe == "smb"
    assert r.verdict == "confirmed"
    assert r.product == SAMBA and r.version is None  # SMB2 carries no Samba version: none is guessed
    assert r.rule == "portproof:smb/server-guid-samba-netbios-name"
    assert r.details["ntlm"]["netbios_domain"] == "LAB" and r.details["ntlm"]["netbios_computer"] == "DC1"
    assert r.details["ntlm"]["dns_computer"] == "dc1.lab.example.test"
    assert r.details["dialect"] == "3.1.1" and r.details["signing_required"] is True
    assert r.extrainfo is not None and "dc1.lab.example.test" in r.extrainfo


@pytest.mark.lab
def test_lab_record_and_replay(lab: object, tmp_path: Path) -> None:
    from scanner.engine import scan_sync
    from scanner.replay import replay_paths
    from scanner.replay.pcapwriter import PcapRecorder

    recorded = tmp_path / "smb.pcap"
    rec = PcapRecorder(recorded)
    try:
        live = scan_sync(["127.0.0.1"], ports="445", registry=_registry(), recorder=rec)
    finally:
        rec.close()
    report = replay_paths([str(recorded)], _registry().probes)
    assert report.errors == []
    replayed = {(r.address, r.port): r for r in report.results}[("127.0.0.1", 445)]
    assert replayed.product == live[0].product == SAMBA
    assert replayed.details["ntlm"]["dns_computer"] == live[0].details["ntlm"]["dns_computer"]


def _smb1_conf(root: Path, port: int) -> Path:
    """A standalone smbd that speaks SMB1 only, on 127.0.0.1:``port``, all state under ``root``."""
    for sub in ("lock", "state", "cache", "private", "pid", "ncalrpc", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    conf = root / "smb.conf"
    conf.write_text(
        f"""[global]
  netbios name = SMB1TEST
  workgroup = TESTGRP
  server role = standalone server
  server min protocol = NT1
  server max protocol = NT1
  smb ports = {port}
  interfaces = 127.0.0.1
  bind interfaces only = yes
  disable netbios = yes
  load printers = no
  printing = bsd
  printcap name = /dev/null
  disable spoolss = yes
  lock directory = {root}/lock
  state directory = {root}/state
  cache directory = {root}/cache
  private dir = {root}/private
  pid directory = {root}/pid
  ncalrpc dir = {root}/ncalrpc
  log file = {root}/log/%m.log
"""
    )
    return conf


@pytest.fixture(scope="module")
def smb1_server(lab: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A private SMB1-only smbd (Debian's, installed with the lab's Samba), stopped by its pid."""
    smbd = shutil.which("smbd") or "/usr/sbin/smbd"
    if not Path(smbd).exists():
        pytest.fail("smbd is missing (the lab installs Debian's samba)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = _smb1_conf(tmp_path_factory.mktemp("smb1"), port)
    # its own session: on SIGTERM smbd signals its whole process group, which must not be pytest's
    proc = subprocess.Popen([smbd, "-F", "--no-process-group", "-s", str(conf)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("the private SMB1 smbd did not listen within 15 s")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.mark.lab
def test_lab_smb1_only_samba_names_its_version(smb1_server: int, tmp_path: Path) -> None:
    from scanner.engine import scan_sync
    from scanner.replay import replay_paths
    from scanner.replay.pcapwriter import PcapRecorder

    # the profile names smb for the port (off 139/445 the probe only runs hinted or at intensity 8+)
    profile = Profile("smb1", "private SMB1 smbd", (PortEntry(smb1_server, "tcp", "smb", False, "smb"),))
    recorded = tmp_path / "smb1.pcap"
    rec = PcapRecorder(recorded)
    try:
        (r,) = scan_sync(["127.0.0.1"], profile=profile, registry=_registry(), recorder=rec)
    finally:
        rec.close()
    assert r.verdict == "confirmed"
    # replayed: the first connection holds no server byte (the SMB2 NEGOTIATE dropped), the
    # replay follows the probe's Reconnect to the SMB1 one
    (replayed,) = replay_paths([str(recorded)], _registry().probes).results
    assert (replayed.product, replayed.version, replayed.rule) == (r.product, r.version, r.rule)
    assert r.service == "smb" and r.product == SAMBA and r.version == "4.17.12"
    assert r.rule == "portproof:smb/smb1-native-lanman-samba"
    assert r.details["smb2_negotiate"].startswith("connection closed")  # the SMB2 NEGOTIATE was dropped
    assert r.details["smb1_session_setup"]["native_os"] == "Windows 6.1"
    assert r.details["samba_build"] == "Debian"
    assert r.details["ntlm"]["netbios_computer"] == "SMB1TEST"
    # the fixture came from the same configuration: the live bytes parse the same way
    live = _record("127.0.0.1", smb1_server, nbss=False, smb1=True)
    neg, setup = (parse_netbios(m).payload for m in _split(live))
    fixture_neg, fixture_setup = _payloads(SMB1_ONLY)
    assert parse_smb1_session_setup(setup).native_lanman == parse_smb1_session_setup(fixture_setup).native_lanman
    assert parse_smb1_negotiate(neg).server_guid == parse_smb1_negotiate(fixture_neg).server_guid
