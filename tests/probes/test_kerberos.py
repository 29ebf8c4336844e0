"""kerberos and kpasswd probes: builders, framers byte by byte, parsers on real replies, the
product rules (with their sources), decode time, transcripts, a public capture, the lab, fuzzing.

Recorded replies (hex below) come from the lab's Samba 4.17.12 AD DC (realm LAB.EXAMPLE.TEST,
Debian's samba-ad-dc with its embedded Heimdal KDC), answering this package's own requests with
``seed=0`` (``run_scripted(KerberosProbe(), ..., host_facts={"ad_domain": "lab.example.test"})``).
"""

from __future__ import annotations

import socket
import statistics
import struct
import subprocess
import sys
import time
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probes.kerberos import (
    HEIMDAL_PREAUTH_TEXT,
    PLACEHOLDER_REALM,
    KdcReply,
    KerberosProbe,
    KpasswdProbe,
    KrbError,
    build_as_req,
    build_kpasswd_probe,
    classify_kdc,
    frame_kdc_tcp,
    frame_kdc_udp,
    frame_kpasswd_tcp,
    frame_kpasswd_udp,
    parse_kdc_message,
    parse_kpasswd_reply,
    parse_krb_error,
    tcp_wrap,
)
from scanner.api import NotThisProtocol
from scanner.testing import assert_probe_contract, feed_bytewise, replay_pcap, run_dialogue, run_scripted

CORPUS = Path(__file__).resolve().parents[1] / "data" / "pcaps-public"  # shipped with the tests (MANIFEST.tsv)
#: OTRF Security-Datasets "shire" lab: a Windows 10 client's TGS-REQ to the Windows DC MORDORDC
#: (realm THESHIRE.LOCAL) and its TGS-REP, over 88/tcp (MANIFEST.tsv)
WINDOWS_DC = CORPUS / "multi-win10-epm-psexec-msdns-kerberos.pcap"

# ------------------------------------------------------------------ recorded Samba 4.17 replies
#: AS-REQ for portproof-62d82c07cd@LAB.EXAMPLE.TEST: KDC_ERR_C_PRINCIPAL_UNKNOWN, no e-text
SAMBA_UNKNOWN = bytes.fromhex(
    "7e819e30819ba003020105a10302011ea411180f32303236313230383033333631325aa505020302a6d6a603020106a712"
    "1b104c41422e4558414d504c452e54455354a821301fa003020101a11830161b14706f727470726f6f662d3632643832633037"
    "6364a9121b104c41422e4558414d504c452e54455354aa253023a003020102a11c301a1b066b72627467741b104c41422e45"
    "58414d504c452e54455354"
)
#: AS-REQ for krbtgt@LAB.EXAMPLE.TEST: KDC_ERR_PREAUTH_REQUIRED, Heimdal's e-text, METHOD-DATA
#: with PA-ETYPE-INFO2 (aes256, salt LAB.EXAMPLE.TESTkrbtgt)
SAMBA_KRBTGT = bytes.fromhex(
    "7e82013f3082013ba003020105a10302011ea411180f32303236313230383033333631325aa505020302d334a603020119a7"
    "121b104c41422e4558414d504c452e54455354a8133011a003020101a10a30081b066b7262746774a9121b104c41422e4558"
    "414d504c452e54455354aa253023a003020102a11c301a1b066b72627467741b104c41422e4558414d504c452e54455354ab"
    "2b1b294e65656420746f207573652050412d454e432d54494d455354414d502f50412d504b2d41532d524551ac7f047d307b"
    "3009a103020110a20204003009a10302010fa2020400300aa10402020093a20204003009a103020102a2020400300aa10402"
    "020088a2020400300aa1040202028fa20204003034a103020113a22d042b30293027a003020112a1181b164c41422e455841"
    "4d504c452e544553546b7262746774a206040400001000"
)
#: krbtgt asked with etype 17 (then 23) alone: PREAUTH_REQUIRED, no ETYPE-INFO2 entry
SAMBA_KRBTGT_ONE_ETYPE = bytes.fromhex(
    "7e82010930820105a003020105a10302011ea411180f32303236313230383033333631325aa505020302e9daa603020119a7"
    "121b104c41422e4558414d504c452e54455354a8133011a003020101a10a30081b066b7262746774a9121b104c41422e4558"
    "414d504c452e54455354aa253023a003020102a11c301a1b066b72627467741b104c41422e4558414d504c452e54455354ab"
    "2b1b294e65656420746f207573652050412d454e432d54494d455354414d502f50412d504b2d41532d524551ac4904473045"
    "3009a103020110a20204003009a10302010fa2020400300aa10402020093a20204003009a103020102a2020400300aa10402"
    "020088a2020400300aa1040202028fa2020400"
)
#: over TCP, realm unknown: the placeholder realm answered KDC_ERR_C_PRINCIPAL_UNKNOWN (echoed)
SAMBA_PLACEHOLDER_TCP = bytes.fromhex(
    "000000a47e81a130819ea003020105a10302011ea411180f32303236313230383033333631325aa5050203031bf8a60302"
    "0106a7131b11504f525450524f4f462e494e56414c4944a821301fa003020101a11830161b14706f727470726f6f662d36"
    "326438326330376364a9131b11504f525450524f4f462e494e56414c4944aa263024a003020102a11d301b1b066b726274"
    "67741b11504f525450524f4f462e494e56414c4944"
)
#: then, realm still unknown, the AS-REQ naming no client: Heimdal's "No client in request"
SAMBA_NAMELESS_TCP = bytes.fromhex(
    "000000837e8180307ea003020105a10302011ea411180f32303236313230383033343430325aa50502030d5669a603020106"
    "a9131b11504f525450524f4f462e494e56414c4944aa263024a003020102a11d301b1b066b72627467741b11504f52545052"
    "4f4f462e494e56414c4944ab161b144e6f20636c69656e7420696e2072657175657374"
)
#: kpasswd on 464/udp, answer to build_kpasswd_probe(): header (len 157, version 1, AP-REP len 0)
#: + KRB-ERROR (sname kadmin/changepw) with e-data: result 2 + "gensec_update failed - NT_STATUS_..."
SAMBA_KPASSWD = bytes.fromhex(
    "009d000100007e8194308191a003020105a10302011ea411180f32303236313230383033333631325aa5050203031ffba603"
    "020102a9121b104c41422e4558414d504c452e54455354aa1d301ba003020101a11430121b066b61646d696e1b086368616e"
    "67657077ac330431000267656e7365635f757064617465206661696c6564202d204e545f5354415455535f4c4f474f4e5f46"
    "41494c5552450a"
)


def _krb_error(code: int, e_text: str | None = None, realm: str = "EXAMPLE.ORG", e_data: bytes | None = None) -> bytes:
    """A KRB-ERROR built with scapy (for the implementations the lab does not run)."""
    from scapy.asn1.asn1 import ASN1_GENERALIZED_TIME
    from scapy.layers.kerberos import KRB_ERROR, PrincipalName

    kw: dict[str, object] = {}
    if e_text is not None:
        kw["eText"] = e_text
    if e_data is not None:
        kw["eData"] = e_data
    err = KRB_ERROR(
        stime=ASN1_GENERALIZED_TIME("20260102030405Z"),
        susec=7,
        errorCode=code,
        realm=realm,
        sname=PrincipalName(nameType=2, nameString=["krbtgt", realm]),
        **kw,
    )
    return bytes(err)


# ---------------------------------------------------------------------------------- build


def test_module_import_stays_light() -> None:
    """Loading the registry must not pay for scapy: it is imported on first use."""
    code = "import sys, probes.kerberos; print('scapy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"


def test_as_req_has_no_preauth_and_asks_a_tgt() -> None:
    from scapy.layers.kerberos import KRB_AS_REQ

    assert KRB_AS_REQ(build_as_req(None, "X.Y", 1)).reqBody.cname is None  # the nameless request
    raw = build_as_req("portproof-0123456789", "LAB.EXAMPLE.TEST", 0x12345678)
    assert raw[0] == 0x6A  # [APPLICATION 10] AS-REQ (RFC 4120 5.4.1)
    req = KRB_AS_REQ(raw)
    assert req.padata is None  # no PA-ENC-TIMESTAMP, nothing a password could be guessed from
    body = req.reqBody
    assert [s.val for s in body.cname.nameString] == [b"portproof-0123456789"]
    assert body.realm.val == b"LAB.EXAMPLE.TEST"
    assert [s.val for s in body.sname.nameString] == [b"krbtgt", b"LAB.EXAMPLE.TEST"]
    assert [e.val for e in body.etype] == [18, 17, 23]
    assert body.nonce.val == 0x12345678
    assert tcp_wrap(raw)[:4] == struct.pack(">I", len(raw))


def test_requests_are_reproducible_from_the_seed() -> None:
    sent: list[bytes] = []

    def respond(data: bytes) -> bytes | None:
        sent.append(data)
        return None

    run_scripted(KerberosProbe(), respond, transport="udp", port=88, seed=3)
    run_scripted(KerberosProbe(), respond, transport="udp", port=88, seed=3)
    assert sent[0] == sent[2] and b"portproof-" in sent[0]


def test_kpasswd_probe_layout() -> None:
    req = build_kpasswd_probe()
    # RFC 3244 2: length, version 1, AP-REQ length 2, then a non-AP-REQ (empty SEQUENCE) and KRB-PRIV
    assert req == bytes.fromhex("000a" "0001" "0002" "3000" "3000")


# ---------------------------------------------------------------------------------- framing


def test_tcp_framer_bytewise() -> None:
    msg = tcp_wrap(SAMBA_KRBTGT)
    assert feed_bytewise(frame_kdc_tcp, msg) == len(msg)
    assert frame_kdc_tcp(msg + b"\x00\x00") == len(msg)
    assert frame_kdc_tcp(msg[:3]) is None and frame_kdc_tcp(msg[:-1]) is None


@pytest.mark.parametrize(
    "head",
    [
        b"\x80\x00\x00\x10\x7e",  # reserved top bit (RFC 4120 7.2.2)
        b"\x7f\xff\xff\xff\x7e",  # 2 GiB announced
        b"\x00\x00\x00\x00",  # empty message
        b"\x00\x00\x00\x20\x30\x00",  # a SEQUENCE, not a KDC reply (nor a kpasswd length of 32)
        b"HTTP/1.1 400",  # text: refused at the fifth byte, not after 1.2 GB
    ],
)
def test_tcp_framer_refuses(head: bytes) -> None:
    with pytest.raises(NotThisProtocol):
        frame_kdc_tcp(head)
    with pytest.raises(NotThisProtocol):
        frame_kpasswd_tcp(head)


def test_udp_framers() -> None:
    assert frame_kdc_udp(SAMBA_UNKNOWN) == len(SAMBA_UNKNOWN)
    assert frame_kpasswd_udp(SAMBA_KPASSWD) == len(SAMBA_KPASSWD)
    with pytest.raises(NotThisProtocol):
        frame_kdc_udp(b"\x30\x00")
    with pytest.raises(NotThisProtocol):
        frame_kpasswd_udp(b"\x00\x10\x00\x05")  # version 5 is not kpasswd's


def test_kpasswd_tcp_framer_checks_the_inner_length() -> None:
    msg = tcp_wrap(SAMBA_KPASSWD)
    assert feed_bytewise(frame_kpasswd_tcp, msg) == len(msg)
    bad = struct.pack(">I", len(SAMBA_KPASSWD)) + b"\x00\x10" + SAMBA_KPASSWD[2:]
    with pytest.raises(NotThisProtocol):
        frame_kpasswd_tcp(bad)


# ---------------------------------------------------------------------------------- parse


def test_parse_samba_unknown_principal() -> None:
    err = parse_krb_error(SAMBA_UNKNOWN)
    assert (err.error_code, err.error_name) == (6, "KDC_ERR_C_PRINCIPAL_UNKNOWN")
    assert err.realm == "LAB.EXAMPLE.TEST" and err.sname == "krbtgt/LAB.EXAMPLE.TEST"
    assert err.cname == "portproof-62d82c07cd" and err.e_text is None
    assert err.present == ("crealm", "cname")  # Heimdal: no ctime/cusec, no e-text, no e-data
    assert err.stime == "20261208033612Z" and err.susec == 0x02A6D6


def test_parse_samba_preauth_required() -> None:
    err = parse_krb_error(SAMBA_KRBTGT)
    assert err.error_code == 25 and err.e_text == HEIMDAL_PREAUTH_TEXT
    assert err.padata_types == (16, 15, 147, 2, 136, 655, 19)
    assert err.etype_info2 == ((18, "LAB.EXAMPLE.TESTkrbtgt"),)
    d = err.as_dict()
    assert d["etype_info2"] == ["aes256-cts-hmac-sha1-96"] and "PA-ETYPE-INFO2" in d["padata"]


def test_parse_samba_kpasswd_error() -> None:
    rep = parse_kpasswd_reply(SAMBA_KPASSWD)
    assert rep.framed and rep.version == 1 and rep.ap_rep_len == 0 and rep.error is not None
    err = rep.error
    assert err.sname == "kadmin/changepw" and err.realm == "LAB.EXAMPLE.TEST"
    assert err.result_code == 2  # KRB5_KPASSWD_HARDERROR
    assert err.result_string == "gensec_update failed - NT_STATUS_LOGON_FAILURE"


def test_parse_refuses_garbage() -> None:
    for junk in (b"", b"\x7e", b"\x7e\x03\x30\x01\x00", SAMBA_UNKNOWN[:-3], SAMBA_UNKNOWN + b"xx", b"\x6d\x00"):
        with pytest.raises(NotThisProtocol):
            parse_kdc_message(junk)
    with pytest.raises(NotThisProtocol):
        parse_kpasswd_reply(b"\x00\x06\x00\x01\x00")


def test_ms_kile_extended_error_is_read() -> None:
    # MS-KILE 2.2.1/2.2.2: KERB-ERROR-DATA {data-type 3, data-value KERB-EXT-ERROR}, NTSTATUS
    # 0xc0000072 (STATUS_ACCOUNT_DISABLED) little-endian, reserved, flags
    ext = struct.pack("<III", 0xC0000072, 0, 1)
    content = b"\xa1\x03\x02\x01\x03" + b"\xa2" + bytes([len(ext) + 2]) + b"\x04" + bytes([len(ext)]) + ext
    e_data = b"\x30" + bytes([len(content)]) + content
    err = parse_krb_error(_krb_error(18, e_data=e_data))
    assert err.kerb_error_data_type == 3 and err.ntstatus == 0xC0000072


def test_decode_time_is_well_under_5ms() -> None:
    """CPU time per reply (not wall time: the test machine is shared), the largest lab reply."""
    parse_kdc_message(SAMBA_KRBTGT)  # warm (scapy import)
    for parse, msg in ((parse_kdc_message, SAMBA_KRBTGT), (parse_kpasswd_reply, SAMBA_KPASSWD)):
        times = []
        for _ in range(30):
            t0 = time.process_time()
            parse(msg)
            times.append(time.process_time() - t0)
        assert statistics.median(times) < 0.005, (parse.__name__, statistics.median(times))


# ---------------------------------------------------------------------------------- rules


def test_rule_samba_from_heimdal_text_and_the_ad_krbtgt_account() -> None:
    v = classify_kdc(parse_krb_error(SAMBA_UNKNOWN), parse_krb_error(SAMBA_KRBTGT))
    assert (v.product, v.rule) == ("Samba AD DC KDC (Heimdal)", "samba-ad-krbtgt")


def test_rule_heimdal_without_ad() -> None:
    # a plain Heimdal KDC (kdc/kerberos5.c wording) whose database has no 'krbtgt' user
    heimdal = parse_krb_error(_krb_error(25, HEIMDAL_PREAUTH_TEXT))
    v = classify_kdc(heimdal, parse_krb_error(_krb_error(6)))
    assert (v.product, v.rule) == ("Heimdal KDC", "heimdal-etext")


@pytest.mark.parametrize("code,era", [(60, "Heimdal 7.x or older"), (6, "Heimdal 8 generation")])
def test_rule_heimdal_from_the_nameless_request(code: int, era: str) -> None:
    # kdc/kerberos5.c: "No client in request", KRB_ERR_GENERIC up to 7.x (Debian heimdal-kdc 7.8,
    # the lab's 127.0.0.10), KDC_ERR_C_PRINCIPAL_UNKNOWN later (the lab's Samba 4.17)
    unknown = parse_krb_error(_krb_error(6))
    v = classify_kdc(unknown, unknown, parse_krb_error(_krb_error(code, "No client in request")))
    assert (v.product, v.rule) == ("Heimdal KDC", "heimdal-etext")
    assert any(era in r for r in v.reasons), v.reasons


@pytest.mark.parametrize("text", ["CLIENT_NOT_FOUND", "NULL_CLIENT", "NEEDED_PREAUTH"])
def test_rule_mit_status_word(text: str) -> None:
    # MIT src/kdc/do_as_req.c prepare_error_as: errpkt.text = string2data(status)
    v = classify_kdc(parse_krb_error(_krb_error(6, text)), None)
    assert (v.product, v.rule) == ("MIT Kerberos KDC", "mit-status-etext")


def test_rule_microsoft_revoked_krbtgt() -> None:
    v = classify_kdc(parse_krb_error(_krb_error(6)), parse_krb_error(_krb_error(18)))
    assert (v.product, v.rule) == ("Microsoft Windows KDC", "ms-krbtgt-revoked")


def test_rules_stay_quiet_without_a_tell() -> None:
    assert classify_kdc(parse_krb_error(_krb_error(6)), None).product is None
    assert classify_kdc(parse_krb_error(_krb_error(6)), parse_krb_error(_krb_error(6))).product is None
    assert classify_kdc(parse_krb_error(_krb_error(6, "KDC_ERR_C_PRINCIPAL_UNKNOWN")), None).product is None
    assert classify_kdc(parse_krb_error(_krb_error(25, "Some other KDC")), None).product is None


# ---------------------------------------------------------------------------------- transcripts


def test_transcript_udp_with_realm_names_samba() -> None:
    run = run_dialogue(
        KerberosProbe(),
        [SAMBA_UNKNOWN, SAMBA_KRBTGT, SAMBA_KRBTGT_ONE_ETYPE, SAMBA_KRBTGT_ONE_ETYPE],
        transport="udp",
        port=88,
        host_facts={"ad_domain": "lab.example.test"},
    )
    f = run.finding
    assert run.ok and f is not None
    assert (f.service, f.product) == ("kerberos", "Samba AD DC KDC (Heimdal)")
    assert f.rule == "portproof:kerberos/samba-ad-krbtgt"
    assert f.details["realm"] == "LAB.EXAMPLE.TEST" and f.details["realm_confirmed"] is True
    assert f.details["enctypes"] == ["aes256-cts-hmac-sha1-96"]
    assert f.details["enctypes_unlisted"] == ["aes128-cts-hmac-sha1-96", "rc4-hmac"]
    assert f.details["server_time"] == "2026-12-08T03:36:12.173782Z"
    assert f.host_facts == {"kerberos_realm": "LAB.EXAMPLE.TEST"}


def test_transcript_tcp_unknown_realm_names_heimdal_from_the_nameless_request() -> None:
    run = run_dialogue(KerberosProbe(), SAMBA_PLACEHOLDER_TCP + SAMBA_NAMELESS_TCP, port=88)
    f = run.finding
    assert run.ok and f is not None and f.service == "kerberos"
    assert (f.product, f.rule) == ("Heimdal KDC", "portproof:kerberos/heimdal-etext")
    assert f.details["principal"].endswith("@" + PLACEHOLDER_REALM)
    assert f.details["unknown_realm_answer"] == "KDC_ERR_C_PRINCIPAL_UNKNOWN"
    assert f.details["nameless"]["e_text"] == "No client in request"
    assert "realm" not in f.details  # the echoed placeholder is not the KDC's realm


def test_transcript_first_reply_alone_confirms_kerberos_only() -> None:
    # the optional second request unanswered (connection closed): Kerberos stands, no product
    run = run_dialogue(KerberosProbe(), SAMBA_PLACEHOLDER_TCP, port=88)
    f = run.finding
    assert run.ok and f is not None and f.service == "kerberos" and f.product is None
    assert "nameless_error" in f.details


def test_transcript_kpasswd_names_samba() -> None:
    run = run_dialogue(KpasswdProbe(), tcp_wrap(SAMBA_KPASSWD), port=464)
    f = run.finding
    assert run.ok and f is not None
    assert (f.service, f.product, f.rule) == ("kpasswd", "Samba kpasswd", "portproof:kpasswd/samba-ntstatus")
    assert f.host_facts["kerberos_realm"] == "LAB.EXAMPLE.TEST"


def test_kerberos_probe_refuses_a_kpasswd_reply_and_vice_versa() -> None:
    assert run_dialogue(KerberosProbe(), tcp_wrap(SAMBA_KPASSWD), port=88, raise_bugs=False).finding is None
    assert run_dialogue(KpasswdProbe(), SAMBA_PLACEHOLDER_TCP, port=464, raise_bugs=False).finding is None


def test_contract() -> None:
    assert_probe_contract(KerberosProbe())
    assert_probe_contract(KpasswdProbe())


# ---------------------------------------------------------------------------------- public capture


def test_replay_windows_dc_tgs_rep() -> None:
    """A Windows DC's TGS-REP seen passively: Kerberos and its realm. A TGS-REP carries no
    implementation tell (no e-text, no error choice), so no product is claimed."""
    if not WINDOWS_DC.exists():
        pytest.fail(f"public capture {WINDOWS_DC} is missing (the test data ships with the tests)")
    results = [r for r in replay_pcap([KerberosProbe(), KpasswdProbe()], WINDOWS_DC) if r.port == 88]
    assert len(results) == 1
    r = results[0]
    assert (r.service, r.product) == ("kerberos", None)
    assert r.details["realm"] == "THESHIRE.LOCAL"
    assert r.details["kdc_reply"]["ticket_sname"] == "HOST/WORKSTATION6.theshire.local"
    assert r.details["kdc_reply"]["ticket_etype"] == "aes256-cts-hmac-sha1-96"


def test_identify_passive() -> None:
    f = KerberosProbe().identify_passive([tcp_wrap(SAMBA_UNKNOWN) + tcp_wrap(SAMBA_KRBTGT)], [])
    # passively there is no krbtgt question of ours: Heimdal's wording names Heimdal, not Samba
    assert f is not None and (f.service, f.product) == ("kerberos", "Heimdal KDC")
    assert KerberosProbe().identify_passive([b"HTTP/1.1 200 OK\r\n"], []) is None
    k = KpasswdProbe().identify_passive([SAMBA_KPASSWD], [])
    assert k is not None and k.service == "kpasswd"
    assert KerberosProbe().client_hint(tcp_wrap(build_as_req("a", "B.C", 1)))
    assert not KerberosProbe().client_hint(b"GET / HTTP/1.1\r\n")


# ---------------------------------------------------------------------------------- fuzz


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from([SAMBA_UNKNOWN, SAMBA_KRBTGT, SAMBA_KPASSWD[6:]]),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6),
)
def test_fuzz_mutated_replies(msg: bytes, flips: list[tuple[int, int]]) -> None:
    data = bytearray(msg)
    for pos, val in flips:
        data[pos % len(data)] = val
    for parse in (parse_kdc_message, parse_kpasswd_reply):
        try:
            out = parse(bytes(data))
        except NotThisProtocol:
            continue
        assert isinstance(out, KrbError | KdcReply) or hasattr(out, "framed")


# ---------------------------------------------------------------------------------- lab


def _lab_exchange(transport: str, port: int, address: str = "127.0.0.1") -> object:
    def respond(data: bytes) -> bytes | None:
        if transport == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(3)
                s.sendto(data, (address, port))
                try:
                    return s.recvfrom(65535)[0]
                except TimeoutError:
                    return None
        with socket.create_connection((address, port), 3) as s:
            s.settimeout(3)
            s.sendall(data)
            buf = b""
            for _ in range(64):  # bounded
                if len(buf) >= 4 and len(buf) >= 4 + struct.unpack(">I", buf[:4])[0]:
                    break
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
            return buf or None

    return respond


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_lab_kdc_names_samba_with_realm(lab: object, transport: str) -> None:
    """The lab's Samba AD DC on 127.0.0.1:88, with the AD domain an LDAP probe would have found."""
    run = run_scripted(
        KerberosProbe(),
        _lab_exchange(transport, 88),  # type: ignore[arg-type]
        transport=transport,  # type: ignore[arg-type]
        port=88,
        address="127.0.0.1",
        host_facts={"ad_domain": "lab.example.test"},
    )
    f = run.finding
    assert run.ok and f is not None, run
    assert f.service == "kerberos" and f.details["realm"] == "LAB.EXAMPLE.TEST"
    assert f.product == "Samba AD DC KDC (Heimdal)" and f.rule == "portproof:kerberos/samba-ad-krbtgt"
    assert "aes256-cts-hmac-sha1-96" in f.details["enctypes"]


def test_lab_scan_88_and_464(lab: object) -> None:
    """A real scan (engine, both probes, tcp and udp): kerberos on 88, kpasswd (Samba) on 464."""
    from scanner.engine import scan_sync
    from scanner.registry import GROUP, load_registry

    reg = load_registry(
        eps=[
            EntryPoint(name="kerberos", value="probes.kerberos:KerberosProbe", group=GROUP),
            EntryPoint(name="kpasswd", value="probes.kerberos:KpasswdProbe", group=GROUP),
        ]
    )
    assert not reg.errors, reg.errors
    results = {(r.port, r.transport): r for r in scan_sync(["127.0.0.1"], ports="88,464,U:88,U:464", registry=reg)}
    for transport in ("tcp", "udp"):
        kdc, kpw = results[(88, transport)], results[(464, transport)]
        assert (kdc.state, kdc.service) == ("open", "kerberos"), kdc
        assert (kpw.state, kpw.service, kpw.product) == ("open", "kpasswd", "Samba kpasswd"), kpw
        assert kpw.details["realm"] == "LAB.EXAMPLE.TEST"
        assert kdc.details["server_time"].endswith("Z")


#: the extra KDCs of the lab: tests/lab/extra.d/mitkdc.sh (MIT krb5 1.20) and heimdalkdc.sh (Heimdal 7.8)
EXTRA_KDCS = [
    ("127.0.0.9", "MIT.EXAMPLE.TEST", "MIT Kerberos KDC", "mit-status-etext", "CLIENT_NOT_FOUND"),
    ("127.0.0.10", "HEIMDAL.EXAMPLE.TEST", "Heimdal KDC", "heimdal-etext", None),
]


@pytest.mark.parametrize("transport", ["tcp", "udp"])
@pytest.mark.parametrize("kdc", EXTRA_KDCS, ids=["mit", "heimdal"])
def test_lab_extra_kdcs(lab: object, transport: str, kdc: tuple[str, str, str, str, str | None]) -> None:
    """MIT and a plain Heimdal are named with no realm known and with their realm known, and
    never taken for Samba or Microsoft (their databases hold no 'krbtgt' user)."""
    address, realm, product, rule, first_text = kdc
    for facts in ({}, {"kerberos_realm": realm}):
        run = run_scripted(
            KerberosProbe(),
            _lab_exchange(transport, 88, address),  # type: ignore[arg-type]
            transport=transport,  # type: ignore[arg-type]
            port=88,
            address=address,
            host_facts=facts,
        )
        f = run.finding
        assert f is not None, f"no finding from {address}:88/{transport} (is tests/lab/extra.d up?): {run}"
        assert (f.service, f.product, f.rule) == ("kerberos", product, f"portproof:kerberos/{rule}"), f.evidence
        assert f.details["first"].get("e_text") == first_text
        if facts:
            assert f.details["realm"] == realm and f.details["krbtgt"]["error_code"] == 6
