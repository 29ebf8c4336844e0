"""tsap probe: TPKT/COTP framing and parsing, lab recordings (MMS, S7), the public S7 capture,
hostile input and fuzzing."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probes.tsap import (
    MMS_INITIATE_CN,
    TSAPProbe,
    build_cotp_cr,
    build_cotp_dt,
    build_mms_identify,
    build_s7_setup,
    build_s7_szl_read,
    decode_oid,
    frame_tpkt,
    parse_component_identification,
    parse_cotp,
    parse_mms_identify,
    parse_module_identification,
    parse_s7,
    parse_s7_setup_ack,
    parse_session,
    parse_szl_response,
)
from scanner.api import NotThisProtocol, RecvClosed
from scanner.testing import SILENT, feed_bytewise, run_dialogue

DATA = Path(__file__).parent / "data"
CORPUS = Path(__file__).resolve().parents[1] / "data" / "pcaps-public"  # shipped with the tests (MANIFEST.tsv)
#: server bytes recorded from the lab: libiec61850 1.5.2 MMS server (CC, session ACCEPT, identify)
MMS = DATA / "tsap-libiec61850-1.5.2-mms.bin"
#: python-snap7 3.3.0 server (CC; silent on the session CONNECT; setup ack; SZL 0x0011, 0x001C)
S7 = DATA / "tsap-python-snap7-3.3.0-s7.bin"


def _split(stream: bytes) -> list[bytes]:
    out = []
    while stream:
        n = frame_tpkt(stream)
        assert n is not None
        out.append(stream[:n])
        stream = stream[n:]
    return out


def _server_stream(name: str, port: int = 102) -> bytes:
    path = CORPUS / name
    if not path.exists():
        pytest.fail(f"public capture {path} is missing (the test data ships with the tests)")
    from scapy.all import TCP, Padding, rdpcap

    segs: dict[int, bytes] = {}
    for p in rdpcap(str(path)):
        if TCP in p and p[TCP].sport == port:
            raw = bytes(p[TCP].payload)
            pad = p.getlayer(Padding)
            if pad is not None:
                raw = raw[: len(raw) - len(bytes(pad))]
            if raw:
                segs.setdefault(p[TCP].seq, raw)
    return b"".join(segs[s] for s in sorted(segs))


# ---------------------------------------------------------------- TPKT / COTP


def test_build_cr_layout() -> None:
    cr = build_cotp_cr(0x1234)
    assert cr == bytes.fromhex("0300001611e00000123400c0010ac1020100c2020102")
    pdu = parse_cotp(cr)
    assert pdu.kind == "CR" and pdu.src_ref == 0x1234 and pdu.tpdu_size == 1024
    assert build_cotp_dt(b"xy") == bytes.fromhex("0300000902f080") + b"xy"


def test_cc_from_the_lab() -> None:
    cc = parse_cotp(_split(MMS.read_bytes())[0])
    assert cc.kind == "CC" and cc.cls == 0 and cc.tpdu_size == 1024
    # libiec61850 echoes the TSAPs of the CR
    assert cc.facts()["calling_tsap"] == "0100" and cc.facts()["called_tsap"] == "0102"


def test_dr_parsed() -> None:
    # TPKT(11) + COTP DR: LI 6, code 0x80, dst-ref 1, src-ref 2, reason 0x85 (protocol error)
    dr = struct.pack(">BBH", 3, 0, 11) + bytes.fromhex("06800001000285")
    pdu = parse_cotp(dr)
    assert pdu.kind == "DR" and pdu.reason == 0x85 and pdu.facts()["reason_text"] == "protocol error"
    run = run_dialogue(TSAPProbe(), dr, port=102)
    assert run.ok and run.finding is not None
    assert run.finding.service == "tsap" and run.finding.details["upper_layer"] is None


@pytest.mark.parametrize("length", [0, 1, 4, 6])
def test_tpkt_bad_length(length: int) -> None:
    with pytest.raises(NotThisProtocol):
        frame_tpkt(struct.pack(">BBH", 3, 0, length) + b"\0" * 10)


def test_tpkt_long_length_waits() -> None:
    # 65535 claimed, 30 bytes present: need more (the engine's max_size and timeout bound it)
    assert frame_tpkt(struct.pack(">BBH", 3, 0, 65535) + b"\0" * 30) is None
    run = run_dialogue(TSAPProbe(), struct.pack(">BBH", 3, 0, 65535) + b"\x11\xd0" + b"\0" * 30, port=102)
    assert isinstance(run.error, RecvClosed) and run.finding is None


def test_not_tpkt() -> None:
    with pytest.raises(NotThisProtocol):
        frame_tpkt(b"SSH-2.0-OpenSSH\r\n")
    run = run_dialogue(TSAPProbe(), b"HTTP/1.0 400 Bad request\r\n\r\n", port=102)
    assert isinstance(run.error, NotThisProtocol)


def test_framer_bytewise_on_lab_streams() -> None:
    for path in (MMS, S7):
        for msg in _split(path.read_bytes()):
            assert feed_bytewise(frame_tpkt, msg) == len(msg)


# ---------------------------------------------------------------- MMS (lab recording)


def test_replay_mms() -> None:
    run = run_dialogue(TSAPProbe(), MMS.read_bytes(), port=102)
    assert run.ok, run.error
    f = run.finding
    assert f is not None and f.details["upper_layer"] == "mms" and f.details["session"] == "ACCEPT"
    assert f.details["mms_initiate"] == {"local_detail_called": 65000, "data_structure_nesting_level": 10, "version": 1}
    assert f.product == "LabVendor LabIED" and f.version == "1.0"
    assert run.sent[1] == build_cotp_dt(MMS_INITIATE_CN)
    assert run.sent[2] == build_cotp_dt(build_mms_identify(1))


def test_session_and_identify_parsers() -> None:
    msgs = _split(MMS.read_bytes())
    spdu, user = parse_session(parse_cotp(msgs[1]).data)
    assert spdu == "ACCEPT" and user.startswith(b"\x31")
    ident = parse_mms_identify(parse_cotp(msgs[2]).data)
    assert (ident.vendor, ident.model, ident.revision) == ("LabVendor", "LabIED", "1.0")
    # the identify request is what libiec61850's client sends (recorded in the lab)
    assert build_mms_identify(1) == bytes.fromhex("01000100610e300c020103a007a0050201018200")


def test_oid_decoding() -> None:
    assert decode_oid(bytes.fromhex("28ca220203")) == "1.0.9506.2.3"
    assert decode_oid(bytes.fromhex("56000106")) == "2.6.0.1.6"


def test_x400_recognised_from_oids() -> None:
    # A session ACCEPT whose user data names an MHS (X.400) application context, 2.6.0.1.6
    # (layout only: no X.400 MTA exists to record from)
    user = bytes.fromhex("300606045600010" "6")  # SEQUENCE { OID 2.6.0.1.6 }
    accept = bytes([0x0E, len(user) + 2, 0xC1, len(user)]) + user
    cc = _split(MMS.read_bytes())[0]
    run = run_dialogue(TSAPProbe(), cc + build_cotp_dt(accept), port=102)
    assert run.ok and run.finding is not None
    assert run.finding.details["upper_layer"] == "x400" and "2.6.0.1.6" in run.finding.details["oids"]


def test_closed_after_session_connect() -> None:
    cc = _split(MMS.read_bytes())[0]
    run = run_dialogue(TSAPProbe(), cc, port=102)
    assert run.ok and run.finding is not None
    f = run.finding
    assert f.details["upper_layer"] is None and f.details["s7_untried"] is True
    assert f.product is None  # a bare CC never says S7


# ---------------------------------------------------------------- S7 (lab recording, public capture)


def test_replay_s7_with_silence() -> None:
    """snap7 stays silent on the session CONNECT: the transcript says so (SILENT: that wait times
    out), the rest of the recording answers the S7 requests."""
    msgs = _split(S7.read_bytes())
    run = run_dialogue(TSAPProbe(), [msgs[0], SILENT, *msgs[1:]], port=102, address="192.0.2.1")
    assert run.ok, run.error
    finding = run.finding
    assert finding is not None
    assert finding.details["upper_layer"] == "s7comm"
    assert finding.details["module"]["order_number"] == "6ES7 315-2EH14-0AB0"
    assert finding.product == "S7 CPU 315-2 PN/DP" and finding.version == "V3.3.0"
    assert parse_s7(parse_cotp(run.sent[2]).data).rosctr == 1  # setup communication job


def test_public_s7_capture() -> None:
    msgs = _split(_server_stream("s7comm-siemens-s7-classic-szl.pcap"))
    cc = parse_cotp(msgs[0])
    assert cc.kind == "CC" and cc.tpdu_size == 1024 and cc.facts()["called_tsap"] == "0102"
    setup = parse_s7_setup_ack(parse_cotp(msgs[1]).data)
    assert setup["pdu_size"] == 240 and setup["max_amq_calling"] == 1
    szls = []
    for m in msgs[2:]:
        try:
            szls.append(parse_szl_response(parse_cotp(m).data))
        except NotThisProtocol:
            continue
    ids = {(s.szl_id, s.index) for s in szls}
    assert {(0x0132, 4), (0x0013, 0), (0x0131, 4)} <= ids
    s13 = next(s for s in szls if s.szl_id == 0x0013)
    assert s13.record_length == 36 and len(s13.records) == 5
    for m in msgs:
        assert feed_bytewise(frame_tpkt, m) == len(m)


def test_szl_module_identification_siemens_layout() -> None:
    # 28-byte records as a real CPU sends them: index 1 = module, index 7 = firmware V3.2.6
    rec1 = struct.pack(">H", 1) + b"6ES7 315-2AG10-0AB0 " + struct.pack(">HHH", 0, 1, 1)
    rec7 = struct.pack(">H", 7) + b" " * 20 + struct.pack(">H", 0) + bytes([0x56, 3, 2, 6])
    body = struct.pack(">HHHH", 0x0011, 0, 28, 2) + rec1 + rec7
    data = bytes([0xFF, 0x09]) + struct.pack(">H", len(body)) + body
    params = bytes.fromhex("000112081284010100000000")
    pdu = struct.pack(">BBHHHH", 0x32, 7, 0, 1, len(params), len(data)) + params + data
    out = parse_module_identification(parse_szl_response(pdu))
    assert out == {"order_number": "6ES7 315-2AG10-0AB0", "firmware": "V3.2.6"}


def test_build_s7_requests() -> None:
    assert build_s7_setup(5) == bytes.fromhex("32010000000500080000f0000001000101e0")
    szl = parse_s7(build_s7_szl_read(9, 0x001C))
    assert szl.rosctr == 7 and szl.data == bytes.fromhex("ff090004001c0000")
    msgs = _split(S7.read_bytes())
    comp = parse_component_identification(parse_szl_response(parse_cotp(msgs[-1]).data))
    assert comp["serial_number"] == "S C-C2UR28922012" and comp["copyright"] == "Original Siemens Equipment"


# ---------------------------------------------------------------- fuzz


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_parsers(data: bytes) -> None:
    for fn in (frame_tpkt, parse_cotp, parse_session, parse_mms_identify, parse_s7, parse_s7_setup_ack,
               parse_szl_response):
        try:
            fn(data)
        except NotThisProtocol:
            pass


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([MMS, S7]), st.integers(min_value=0, max_value=400), st.binary(min_size=1, max_size=6))
def test_fuzz_mutated_recordings(path: Path, pos: int, junk: bytes) -> None:
    stream = bytearray(path.read_bytes())
    stream[pos : pos + len(junk)] = junk
    run = run_dialogue(TSAPProbe(), bytes(stream), port=102)
    assert run.error is None or isinstance(run.error, NotThisProtocol | RecvClosed)
