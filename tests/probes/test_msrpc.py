"""msrpc probe: framers byte by byte, lab recordings replayed, public captures, hostile input, fuzz."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probes.msrpc import (
    EPT_S_NOT_REGISTERED,
    MSRPCProbe,
    build_bind,
    build_ept_lookup,
    build_ntlm_bind,
    frame_dcerpc_pdu,
    frame_dcerpc_reply,
    infer_roles,
    parse_auth_verifier,
    parse_bind_challenge,
    parse_bind_reply,
    parse_ept_lookup_reply,
    parse_fault,
    parse_pdu_header,
    parse_tower,
    reassemble_stub,
)
from scanner.api import NotThisProtocol, RecvClosed
from scanner.ntlm import NTLMError, build_negotiate
from scanner.testing import feed_bytewise, run_dialogue

DATA = Path(__file__).parent / "data"
CORPUS = Path(__file__).resolve().parents[1] / "data" / "pcaps-public"  # shipped with the tests (MANIFEST.tsv)
#: server bytes recorded from the lab (Samba 4.17.12): bind_ack, ept_lookup reply (2 fragments),
#: ept_s_not_registered reply
SAMBA_DC = DATA / "msrpc-samba-4.17-dc.bin"
#: samba-dcerpcd standalone (127.0.0.4): bind_ack, one 2-fragment reply with the status
DCERPCD = DATA / "msrpc-samba-4.17-dcerpcd.bin"
#: the same servers, recorded with the NTLM bind (the stream goes on over the Reconnect): bind_ack,
#: ept_lookup replies, then the bind_ack to our NTLM bind with the CHALLENGE in its verifier
SAMBA_DC_NTLM = DATA / "msrpc-samba-4.17-dc-ntlm.bin"
DCERPCD_NTLM = DATA / "msrpc-samba-4.17-dcerpcd-ntlm.bin"
WIN2016 = "msrpc-epm-win2016-map-svcctl-midstream.pcap"


def _split(stream: bytes) -> list[bytes]:
    out = []
    while stream:
        n = frame_dcerpc_reply(stream)
        assert n is not None
        out.append(stream[:n])
        stream = stream[n:]
    return out


def _server_stream(name: str, port: int = 135) -> bytes:
    """Server payload of the first flow from ``port`` in a public capture (a missing one fails)."""
    path = CORPUS / name
    if not path.exists():
        pytest.fail(f"public capture {path} is missing (the test data ships with the tests)")
    from scapy.all import TCP, Padding, rdpcap

    segs: dict[tuple[int, int], dict[int, bytes]] = {}
    order: list[tuple[int, int]] = []
    for p in rdpcap(str(path)):
        if TCP not in p or p[TCP].sport != port:
            continue
        raw = bytes(p[TCP].payload)
        pad = p.getlayer(Padding)
        if pad is not None:
            raw = raw[: len(raw) - len(bytes(pad))]
        if not raw:
            continue
        key = (p[TCP].dport, 0)
        if key not in segs:
            segs[key] = {}
            order.append(key)
        segs[key].setdefault(p[TCP].seq, raw)
    assert order, f"no server stream in {name}"
    flow = segs[order[0]]
    return b"".join(flow[s] for s in sorted(flow))


# ---------------------------------------------------------------- build


def test_build_bind_is_epm_v3_ndr() -> None:
    pdu = build_bind(call_id=1)
    hdr = parse_pdu_header(pdu)
    assert (hdr.ptype, hdr.frag_len, hdr.call_id, hdr.little_endian) == (11, len(pdu), 1, True)
    # abstract syntax EPM v3, transfer syntax NDR 2.0 (UUIDs little-endian on the wire)
    assert bytes.fromhex("0883afe11f5dc91191a408002b14a0fa03000000") in pdu
    assert bytes.fromhex("045d888aeb1cc9119fe808002b10486002000000") in pdu


def test_build_ept_lookup_layout() -> None:
    handle = bytes(range(20))
    pdu = build_ept_lookup(7, handle, max_ents=500)
    hdr = parse_pdu_header(pdu)
    assert hdr.frag_len == len(pdu) == 24 + 40
    assert struct.unpack("<H", pdu[22:24])[0] == 2  # opnum ept_lookup
    stub = pdu[24:]
    # inquiry_type 0, null object and interface pointers, vers_option 1, handle, max_ents
    assert stub[:16] == bytes.fromhex("00000000" "00000000" "00000000" "01000000")
    assert stub[16:36] == handle and stub[36:] == struct.pack("<I", 500)


# ---------------------------------------------------------------- framing


def test_frame_bytewise_on_lab_replies() -> None:
    stream = SAMBA_DC.read_bytes()
    msgs = _split(stream)
    assert [parse_pdu_header(m).ptype_name for m in msgs] == ["bind_ack", "response", "response"]
    for m in msgs:
        assert feed_bytewise(frame_dcerpc_reply, m) == len(m)
    # the first ept_lookup reply is two fragments: the single-PDU framer stops at the first
    first = frame_dcerpc_pdu(msgs[1])
    assert first is not None and first < len(msgs[1])
    assert parse_pdu_header(msgs[1]).pfc_flags & 0x03 == 0x01


@pytest.mark.parametrize(
    ("prefix", "why"),
    [
        (b"\x04\x00\x0c\x03\x10\x00\x00\x00" + struct.pack("<HHI", 60, 0, 1), "version"),
        (b"\x05\x00\x63\x03\x10\x00\x00\x00" + struct.pack("<HHI", 60, 0, 1), "type"),
        (b"\x05\x00\x0c\x03\x10\x00\x00\x00" + struct.pack("<HHI", 8, 0, 1), "frag_len"),
        (b"\x05\x00\x0c\x03\x10\x00\x00\x00" + struct.pack("<HHI", 20, 64, 1), "auth_len"),
        (b"\x05\x00\x0c\x03\x77\x00\x00\x00" + struct.pack("<HHI", 60, 0, 1), "representation"),
    ],
)
def test_frame_rejects_bad_headers(prefix: bytes, why: str) -> None:
    with pytest.raises(NotThisProtocol):
        frame_dcerpc_pdu(prefix + b"\0" * 64)


def test_lying_frag_len_waits_then_is_bounded() -> None:
    # frag_len claims 65535 bytes: the framer asks for more; the engine's max_size bounds it
    hdr = b"\x05\x00\x0c\x03\x10\x00\x00\x00" + struct.pack("<HHI", 65535, 0, 1)
    assert frame_dcerpc_pdu(hdr + b"\0" * 100) is None
    run = run_dialogue(MSRPCProbe(), hdr + b"\0" * 100, port=135)
    assert isinstance(run.error, RecvClosed) and run.finding is None


def test_too_many_fragments_rejected() -> None:
    frag = b"\x05\x00\x02\x00\x10\x00\x00\x00" + struct.pack("<HHI", 24, 0, 2) + b"\0" * 8
    with pytest.raises(NotThisProtocol):
        frame_dcerpc_reply(frag * 100)


# ---------------------------------------------------------------- lab recordings


def test_replay_samba_dc() -> None:
    run = run_dialogue(MSRPCProbe(), SAMBA_DC.read_bytes(), port=135)
    assert run.ok, run.error
    f = run.finding
    assert f is not None and f.service == "msrpc" and f.product == "Samba"
    assert f.details["bind"] == "bind_ack" and f.details["sec_addr"] == "135"
    assert f.details["lookup_status"] == ["0x00000000", f"{EPT_S_NOT_REGISTERED:#010x}"]
    assert f.details["list_end"] == "samba-paging"
    assert len(f.details["endpoints"]) == 53
    assert {"drsuapi", "netlogon", "lsarpc", "samr", "dnsserver", "unixinfo"} <= set(f.details["interfaces"])
    assert f.details["roles"][0] == "domain-controller" and "dns-server" in f.details["roles"]
    assert f.details["tcp_ports"] == ["135", "49152", "49153", "49154"]
    # what was sent: bind, then a lookup that continues from the handle of the first reply, then
    # (on a fresh connection) the NTLM bind, which this older recording does not answer
    assert len(run.sent) == 4 and run.sent[0] == build_bind(call_id=1)
    first = parse_ept_lookup_reply(_split(SAMBA_DC.read_bytes())[1])
    assert not first.handle_is_null and run.sent[2] == build_ept_lookup(3, first.entry_handle)
    assert run.sent[3] == build_ntlm_bind()
    assert "ntlm" not in f.details and "RecvClosed" in f.details["ntlm_error"]


def test_replay_standalone_dcerpcd() -> None:
    run = run_dialogue(MSRPCProbe(), DCERPCD.read_bytes(), port=135)
    assert run.ok, run.error
    f = run.finding
    assert f is not None and f.product == "Samba"
    assert f.details["lookup_status"] == ["0x16c9a0d6"]
    assert f.details["list_end"] == "not-registered-with-entries"
    assert len(f.details["endpoints"]) == 38
    assert "domain-controller" not in f.details["roles"]


def test_endpoint_fields() -> None:
    lookup = parse_ept_lookup_reply(_split(SAMBA_DC.read_bytes())[1])
    by = {(e.name, e.protseq, e.endpoint): e for e in lookup.entries}
    e = by[("netlogon", "ncacn_np", "\\pipe\\netlogon")]
    assert e.interface == "12345678-1234-abcd-ef00-01234567cffb" and e.version == "1.0"
    assert e.annotation == "netlogon"
    tcp = by[("epmapper", "ncacn_ip_tcp", "135")]
    assert tcp.host == "0.0.0.0" and tcp.version == "3.0"
    assert ("epmapper", "ncalrpc", "EPMAPPER") in by


def test_empty_list_still_confirms() -> None:
    msgs = _split(SAMBA_DC.read_bytes())
    # bind_ack then the ept_s_not_registered reply alone: "alive, nothing registered"
    run = run_dialogue(MSRPCProbe(), msgs[0] + msgs[2], port=135)
    assert run.ok and run.finding is not None
    assert run.finding.service == "msrpc" and run.finding.details["empty"] is True
    assert run.finding.product is None


def test_bind_nak_confirms() -> None:
    nak = b"\x05\x00\x0d\x03\x10\x00\x00\x00" + struct.pack("<HHI", 24, 0, 1) + b"\x04\x00\x01\x05\x00\x00\x00\x00"
    run = run_dialogue(MSRPCProbe(), nak, port=135)
    assert run.ok and run.finding is not None
    assert run.finding.details["bind"] == "bind_nak" and run.finding.details["reject_reason"] == 4


# ---------------------------------------------------------------- public captures


def test_public_win2016_bind_ack() -> None:
    msgs = _split(_server_stream("msrpc-epm-win2016-map-svcctl-midstream.pcap"))
    ack = parse_bind_reply(msgs[0])
    assert ack.kind == "bind_ack" and ack.max_xmit_frag == 5840 and ack.sec_addr == "135"
    # three contexts offered (NDR, NDR64, bind-time feature negotiation): one accepted, the
    # first refused, the third is the bind-time feature negotiation acknowledgement
    assert ack.results == ["provider_rejection", "acceptance", "negotiate_ack"]
    assert parse_pdu_header(msgs[1]).ptype_name == "response"
    for m in msgs:
        assert feed_bytewise(frame_dcerpc_reply, m) == len(m)


def test_public_win2022_fault() -> None:
    msgs = _split(_server_stream("msrpc-epm-win2022dc-opnum42-fault.pcap"))
    ack = parse_bind_reply(msgs[0])
    assert ack.accepted and ack.max_xmit_frag == 4280 and ack.sec_addr == "135"
    assert parse_fault(msgs[1]) == 0x1C010002  # nca_op_rng_error


def test_public_dcom_kerberos_bind_ack() -> None:
    msgs = _split(_server_stream("msrpc-135-dcom-isystemactivator-kerberos.pcapng"))
    hdr = parse_pdu_header(msgs[0])
    assert hdr.ptype_name == "bind_ack" and hdr.auth_len > 0  # Kerberos AP-REP in the verifier
    assert parse_bind_reply(msgs[0]).sec_addr == "135"
    kinds = [parse_pdu_header(m).ptype_name for m in msgs]
    assert kinds[:3] == ["bind_ack", "alter_context_resp", "response"]
    assert len(reassemble_stub(msgs[2])) > 0


def test_public_win10_map_tower() -> None:
    msgs = _split(_server_stream("multi-win10-epm-psexec-msdns-kerberos.pcap"))
    assert parse_bind_reply(msgs[0]).max_xmit_frag == 5840
    # ept_map reply: a tower for svcctl on ncacn_ip_tcp
    stub = reassemble_stub(msgs[1])
    at = stub.find(bytes.fromhex("050013000d"))  # 5 floors, floor 1: 19-byte UUID LHS
    ep = parse_tower(stub[at:])
    assert ep.name == "svcctl" and ep.protseq == "ncacn_ip_tcp" and ep.endpoint == "49726"


# ---------------------------------------------------------------- roles, hostile, fuzz


def test_roles() -> None:
    lookup = parse_ept_lookup_reply(_split(SAMBA_DC.read_bytes())[1])
    assert infer_roles(lookup.entries)[0] == "domain-controller"
    assert infer_roles([e for e in lookup.entries if e.name != "drsuapi"]).count("domain-controller") == 0


def test_lying_num_ents_is_clean() -> None:
    msg = bytearray(_split(SAMBA_DC.read_bytes())[1])
    msg[24 + 20 : 24 + 24] = struct.pack("<I", 0x7FFFFFFF)  # num_ents in the first fragment
    with pytest.raises(NotThisProtocol):
        parse_ept_lookup_reply(bytes(msg))


def test_corrupted_tower_is_clean() -> None:
    with pytest.raises(NotThisProtocol):
        parse_tower(b"\x05\x00\x13\x00\x0d" + b"\xff" * 10)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_framers_and_parsers(data: bytes) -> None:
    for fn in (frame_dcerpc_pdu, frame_dcerpc_reply, parse_bind_reply, parse_ept_lookup_reply, parse_tower):
        try:
            fn(data)
        except NotThisProtocol:
            pass


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=6800), st.binary(min_size=1, max_size=8))
def test_fuzz_mutated_lab_reply(pos: int, junk: bytes) -> None:
    stream = bytearray(SAMBA_DC.read_bytes())
    stream[pos : pos + len(junk)] = junk
    run = run_dialogue(MSRPCProbe(), bytes(stream), port=135)
    assert run.error is None or isinstance(run.error, NotThisProtocol | RecvClosed)


# ---------------------------------------------------------------- NTLM bind (auth verifier)


def _ntlm_ack(stream_file: Path = SAMBA_DC_NTLM) -> bytes:
    """The last PDU of a recording made with the NTLM bind: the bind_ack carrying the CHALLENGE."""
    msgs = _split(stream_file.read_bytes())
    assert parse_pdu_header(msgs[-1]).ptype_name == "bind_ack"
    return msgs[-1]


def _listing(stream_file: Path = SAMBA_DC_NTLM) -> bytes:
    """Everything before the NTLM bind_ack: the EPM bind_ack and the ept_lookup replies."""
    data = stream_file.read_bytes()
    return data[: len(data) - len(_ntlm_ack(stream_file))]


def _with_call_id(pdu: bytes, call_id: int) -> bytes:
    return pdu[:12] + struct.pack("<I", call_id) + pdu[16:]


def test_build_ntlm_bind_layout() -> None:
    pdu = build_ntlm_bind()
    hdr = parse_pdu_header(pdu)
    negotiate = build_negotiate()
    assert (hdr.ptype_name, hdr.frag_len, hdr.call_id, hdr.auth_len) == ("bind", len(pdu), 1, len(negotiate))
    verifier = parse_auth_verifier(pdu)
    assert verifier is not None
    # RPC_C_AUTHN_WINNT, RPC_C_AUTHN_LEVEL_CONNECT, context 0; the token is our NEGOTIATE
    assert (verifier.auth_type, verifier.auth_level, verifier.auth_context_id) == (10, 2, 0)
    assert verifier.token == negotiate and negotiate[8:12] == b"\x01\x00\x00\x00"
    # the sec_trailer starts 4-aligned after the (padded) bind body, which is the plain bind's
    trailer_at = hdr.frag_len - hdr.auth_len - 8
    assert trailer_at % 4 == 0
    plain = build_bind(call_id=1)
    assert pdu[16 : trailer_at - verifier.auth_pad_length] == plain[16:]
    # scapy's own dissector reads it back the same way
    from scapy.layers.dcerpc import DceRpc5

    av = DceRpc5(pdu).auth_verifier
    assert (int(av.auth_type), int(av.auth_level), len(bytes(av.auth_value))) == (10, 2, len(negotiate))


def test_replay_samba_dc_with_ntlm() -> None:
    run = run_dialogue(MSRPCProbe(), SAMBA_DC_NTLM.read_bytes(), port=135)
    assert run.ok, run.error
    f = run.finding
    assert f is not None and f.product == "Samba" and f.confidence == 9
    assert len(f.details["endpoints"]) == 53 and f.details["list_end"] == "samba-paging"
    ntlm = f.details["ntlm"]
    assert (ntlm["netbios_domain"], ntlm["netbios_computer"], ntlm["dns_computer"], ntlm["dns_domain"]) == (
        "LAB", "DC1", "dc1.lab.example.test", "lab.example.test"
    )
    assert ntlm["os_version"] == "6.1.0" and ntlm["looks_like_samba"] is True
    assert "ntlm_error" not in f.details and "ntlm_product_conflict" not in f.details
    assert f.details["ntlm_auth"] == {"auth_type": 10, "auth_level": 2}
    assert f.host_facts["ntlm_dns_computer"] == "dc1.lab.example.test"
    assert f.host_facts["ntlm_netbios_domain"] == "LAB"
    assert f.extrainfo is not None and "domain controller" in f.extrainfo and "dc1.lab.example.test" in f.extrainfo
    assert any("6.1 build 0" in e.value for e in f.evidence)
    # bind, 2 lookups, the NTLM bind; nothing after it: no auth3 (ptype 16), no credentials
    assert len(run.sent) == 4 and run.sent[3] == build_ntlm_bind()
    assert all(parse_pdu_header(p).ptype != 16 for p in run.sent)


def test_replay_dcerpcd_with_ntlm() -> None:
    run = run_dialogue(MSRPCProbe(), DCERPCD_NTLM.read_bytes(), port=135)
    assert run.ok, run.error
    f = run.finding
    assert f is not None and f.product == "Samba"
    ntlm = f.details["ntlm"]
    # a standalone server: its NetBIOS name is its domain; "dns_domain" is empty, not absent
    assert ntlm["netbios_computer"] == ntlm["netbios_domain"] == ntlm["target_name"]
    assert ntlm["os_version"] == "6.1.0"
    assert "ntlm_dns_domain" not in f.host_facts


def test_public_win2016_bind_ack_challenge() -> None:
    msgs = _split(_server_stream(WIN2016, port=49683))
    # the captured client bound to svcctl with NTLMSSP at packet privacy (level 6)
    verifier, chal = parse_bind_challenge(msgs[0])
    assert (verifier.auth_type, verifier.auth_level) == (10, 6)
    assert chal.netbios_computer == "01566S-WIN16-IR" and chal.netbios_domain == "3B"
    assert chal.dns_computer == "01566s-win16-ir.threebeesco.com" and chal.dns_tree == "threebeesco.com"
    assert chal.os_version == (10, 0, 14393) and chal.windows_version == "Windows Server 2016 / Windows 10 1607"
    # the later alter_context_resp of the same connection carries another CHALLENGE
    alter = [m for m in msgs if parse_pdu_header(m).ptype_name == "alter_context_resp"]
    assert alter and parse_bind_challenge(alter[0])[1].dns_computer == chal.dns_computer


def test_win2016_challenge_answers_our_ntlm_bind() -> None:
    # transcript: Samba's bind_ack and an empty list (so the endpoints name no product), then
    # the Windows 2016 bind_ack from the public capture as the answer to our NTLM bind (its
    # call_id set to ours: the captured client used 2)
    samba = _split(SAMBA_DC.read_bytes())
    win = _with_call_id(_split(_server_stream(WIN2016, port=49683))[0], 1)
    run = run_dialogue(MSRPCProbe(), samba[0] + samba[2] + win, port=135)
    assert run.ok, run.error
    f = run.finding
    assert f is not None and f.details["empty"] is True
    assert f.product == "Microsoft Windows RPC" and f.version == "10.0.14393"
    assert f.details["windows_release"] == f.host_facts["windows_version"] == "Windows Server 2016 / Windows 10 1607"
    assert f.details["ntlm"]["dns_domain"] == "threebeesco.com"
    assert f.extrainfo is not None and "01566s-win16-ir.threebeesco.com" in f.extrainfo


def test_ntlm_contradicting_endpoints_is_recorded_not_applied() -> None:
    win = _with_call_id(_split(_server_stream(WIN2016, port=49683))[0], 1)
    run = run_dialogue(MSRPCProbe(), _listing() + win, port=135)
    assert run.ok and run.finding is not None
    assert run.finding.product == "Samba" and run.finding.version is None
    assert "NTLM VERSION says Microsoft Windows RPC" in run.finding.details["ntlm_product_conflict"]


def _corrupt_target_info_offset(ack: bytes) -> bytes:
    hdr = parse_pdu_header(ack)
    at = ack.find(b"NTLMSSP\x00")
    assert at > 0
    # TargetInfoFields offset (CHALLENGE + 44) far past the end of the message
    return ack[: at + 44] + struct.pack("<I", 0xFFFF) + ack[at + 48 : hdr.frag_len]


def _hostile_acks() -> list[tuple[str, bytes, str]]:
    ack = _ntlm_ack()
    hdr = parse_pdu_header(ack)
    no_auth = ack[: hdr.frag_len - hdr.auth_len - 8]
    no_auth = no_auth[:8] + struct.pack("<HH", len(no_auth), 0) + no_auth[12:]
    token_at = hdr.frag_len - hdr.auth_len
    not_ntlm = ack[:token_at] + b"X" * hdr.auth_len
    short = ack[: token_at + 20]  # the CHALLENGE cut after 20 bytes, frag_len and auth_len agreeing
    short = short[:8] + struct.pack("<HH", len(short), 20) + short[12:]
    auth_len_lies = ack[:10] + struct.pack("<H", hdr.frag_len) + ack[12:]
    nak = b"\x05\x00\x0d\x03\x10\x00\x00\x00" + struct.pack("<HHI", 24, 0, 1) + b"\x08\x00\x01\x05\x00\x00\x00\x00"
    return [
        ("offset past the end", _corrupt_target_info_offset(ack), "past the"),
        ("no verifier", no_auth, "without an auth verifier"),
        ("not NTLMSSP", not_ntlm, "no NTLMSSP signature"),
        ("type 1 in place of 2", ack[: token_at + 8] + b"\x01" + ack[token_at + 9 :], "not CHALLENGE"),
        ("truncated CHALLENGE", short, "too short"),
        ("auth_len larger than the fragment", auth_len_lies, "auth_len"),
        ("other call id", _with_call_id(ack, 9), "call_id 9"),
        ("bind_nak", nak, "bind_nak, reason 8"),
        ("closed", b"", "RecvClosed"),
    ]


@pytest.mark.parametrize(("case", "reply", "why"), _hostile_acks(), ids=[c[0] for c in _hostile_acks()])
def test_hostile_ntlm_answers_leave_the_listing(case: str, reply: bytes, why: str) -> None:
    run = run_dialogue(MSRPCProbe(), _listing() + reply, port=135)
    assert run.ok, (case, run.error)
    f = run.finding
    assert f is not None and f.service == "msrpc" and f.product == "Samba"
    assert len(f.details["endpoints"]) == 53
    assert "ntlm" not in f.details and why in f.details["ntlm_error"], f.details["ntlm_error"]
    assert not any(k.startswith("ntlm_") for k in f.host_facts)


def test_parse_bind_challenge_rejects_offsets_past_end() -> None:
    with pytest.raises(NTLMError, match="past the"):
        parse_bind_challenge(_corrupt_target_info_offset(_ntlm_ack()))
    with pytest.raises(NotThisProtocol):
        parse_bind_challenge(build_ntlm_bind())  # a bind, not a bind_ack
    assert parse_auth_verifier(_split(SAMBA_DC.read_bytes())[0]) is None


@settings(max_examples=500, deadline=None)
@given(st.integers(min_value=0, max_value=250), st.binary(min_size=1, max_size=8))
def test_fuzz_parse_bind_challenge(pos: int, junk: bytes) -> None:
    ack = bytearray(_ntlm_ack())
    ack[pos : pos + len(junk)] = junk
    try:
        parse_bind_challenge(bytes(ack))
    except NotThisProtocol:  # NTLMError included
        pass


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=250), st.binary(min_size=1, max_size=8))
def test_fuzz_mutated_ntlm_bind_ack_in_dialogue(pos: int, junk: bytes) -> None:
    ack = bytearray(_ntlm_ack())
    ack[pos : pos + len(junk)] = junk
    # whatever the NTLM answer holds, the endpoint listing stands and nothing escapes
    run = run_dialogue(MSRPCProbe(), _listing() + bytes(ack), port=135)
    assert run.ok, run.error
    assert run.finding is not None and len(run.finding.details["endpoints"]) == 53
    assert ("ntlm" in run.finding.details) != ("ntlm_error" in run.finding.details)
