"""Tests of the ldap probe: framer, parsers, classifier and dialogue, with no network.

Real replies come from two places:

* ``data/ldap/*.bin``: the server byte streams of the probe's own dialogue, recorded against the
  lab (Samba 4.17.12 AD DC on 127.0.0.1:389 and :3268, OpenLDAP 2.5.13 on 127.0.0.1:379; the
  OpenLDAP stream ends with the StartTLS extended response, so the TLS part is not in it);
* the public captures in ``tests/data/pcaps-public`` (Windows Server 2003, 2019 and a recent DC over
  IPv6 with VLAN tags, a 2019 DC refusing a bind, OpenLDAP SASL binds, CLDAP from Samba, StartTLS),
  read with scapy (shipped with the tests; a missing one fails).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probes.ldap import (
    MAX_MESSAGE,
    ROOT_DSE_ATTRIBUTES,
    STARTTLS_OID,
    LDAPMessageInfo,
    LDAPProbe,
    build_root_dse_request,
    build_search_request,
    build_starttls_request,
    build_unbind_request,
    classify_root_dse,
    dn_to_dns_name,
    frame_ldap_message,
    frame_ldap_or_rest,
    parse_ldap_message,
    parse_monitor_version,
    parse_root_dse,
    refusal_finding,
    replayed_messages_finding,
    site_from_server_name,
    windows_generation,
)
from scanner.api import NotThisProtocol, RecvClosed, StepError, TLSFacts
from scanner.testing import feed_bytewise, run_dialogue

DATA = Path(__file__).parent / "data" / "ldap"
PCAPS = Path(__file__).resolve().parents[1] / "data" / "pcaps-public"  # shipped with the tests (MANIFEST.tsv)
SAMBA_389 = (DATA / "samba-4.17-dc-389.bin").read_bytes()
SAMBA_3268 = (DATA / "samba-4.17-dc-3268.bin").read_bytes()
OPENLDAP_379 = (DATA / "openldap-2.5.13-379.bin").read_bytes()
TLS = TLSFacts(version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384")


def split_messages(stream: bytes) -> list[bytes]:
    """Frame every LDAP message of a byte stream (stops at the first non-LDAP byte)."""
    out: list[bytes] = []
    pos = 0
    while pos < len(stream):
        try:
            n = frame_ldap_message(stream[pos:])
        except NotThisProtocol:
            break
        if n is None:
            break
        out.append(stream[pos : pos + n])
        pos += n
    return out


# ------------------------------------------------------------------------------- server messages


def server_message(message_id: int, op: str, **fields: object) -> bytes:
    """Encode a server reply with ldap3's RFC 4511 types (for refusal and hostile cases)."""
    from ldap3.protocol.rfc4511 import (
        LDAPDN,
        ExtendedResponse,
        LDAPMessage,
        LDAPString,
        MessageID,
        ProtocolOp,
        ResponseName,
        ResultCode,
        SearchResultDone,
    )
    from pyasn1.codec.ber import encoder

    component: Any
    if op == "searchResDone":
        component = SearchResultDone()
    elif op == "extendedResp":
        component = ExtendedResponse()
        if "response_name" in fields:
            component["responseName"] = ResponseName(fields["response_name"])
    else:  # pragma: no cover
        raise ValueError(op)
    component["resultCode"] = ResultCode(fields.get("code", 0))
    component["matchedDN"] = LDAPDN("")
    component["diagnosticMessage"] = LDAPString(fields.get("diagnostic", ""))
    message = LDAPMessage()
    message["messageID"] = MessageID(message_id)
    message["protocolOp"] = ProtocolOp().setComponentByName(op, component)
    return bytes(encoder.encode(message))


# ------------------------------------------------------------------------------- build


def test_root_dse_request_asks_for_every_deciding_attribute() -> None:
    from ldap3.protocol.rfc4511 import LDAPMessage
    from pyasn1.codec.ber import decoder

    data = build_root_dse_request(1)
    assert data == build_root_dse_request(1)  # deterministic: replayable byte for byte
    assert frame_ldap_message(data) == len(data)
    message, rest = decoder.decode(data, asn1Spec=LDAPMessage())
    assert rest == b""
    assert int(message["messageID"]) == 1
    search = message["protocolOp"].getComponent()
    assert message["protocolOp"].getName() == "searchRequest"
    assert str(search["baseObject"]) == ""
    assert int(search["scope"]) == 0  # baseObject
    attributes = [str(a) for a in search["attributes"]]
    assert attributes == list(ROOT_DSE_ATTRIBUTES)
    for needed in ("supportedCapabilities", "vendorName", "isGlobalCatalogReady", "*", "+"):
        assert needed in attributes


def test_other_requests_decode() -> None:
    from ldap3.protocol.rfc4511 import LDAPMessage
    from pyasn1.codec.ber import decoder

    starttls, _ = decoder.decode(build_starttls_request(4), asn1Spec=LDAPMessage())
    assert starttls["protocolOp"].getName() == "extendedReq"
    assert str(starttls["protocolOp"].getComponent()["requestName"]) == STARTTLS_OID
    unbind, _ = decoder.decode(build_unbind_request(5), asn1Spec=LDAPMessage())
    assert unbind["protocolOp"].getName() == "unbindRequest" and int(unbind["messageID"]) == 5
    search, _ = decoder.decode(
        build_search_request(2, "cn=Monitor", ("monitoredInfo",), size_limit=1), asn1Spec=LDAPMessage()
    )
    assert str(search["protocolOp"].getComponent()["baseObject"]) == "cn=Monitor"
    assert int(search["protocolOp"].getComponent()["sizeLimit"]) == 1


def test_module_import_stays_light() -> None:
    """Loading the registry must not pay for ldap3/pyasn1/scapy: they are imported on first use."""
    code = "import sys, probes.ldap; print(sorted(m for m in ('ldap3', 'pyasn1', 'scapy') if m in sys.modules))"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------- frame


@pytest.mark.parametrize("stream", [SAMBA_389, SAMBA_3268, OPENLDAP_379], ids=["samba389", "samba3268", "slapd"])
def test_frame_real_replies_bytewise(stream: bytes) -> None:
    messages = split_messages(stream)
    assert b"".join(messages) == stream  # the whole recorded stream is LDAP messages, back to back
    for message in messages:
        assert feed_bytewise(frame_ldap_message, message) == len(message)
        # several messages in one read: the framer returns the first one's length only
        assert frame_ldap_message(message + stream) == len(message)


def test_frame_long_form_lengths() -> None:
    # Windows always uses 4-octet long-form lengths (30 84 00 00 0a 8b ...)
    body = b"\x02\x01\x01" + b"\x65\x07\x0a\x01\x00\x04\x00\x04\x00"
    for length_bytes in (b"\x81", b"\x82\x00", b"\x84\x00\x00\x00"):
        header = b"\x30" + length_bytes[:1] + length_bytes[1:] + bytes([len(body)])
        if length_bytes == b"\x81":
            header = b"\x30\x81" + bytes([len(body)])
        msg = header + body
        assert feed_bytewise(frame_ldap_message, msg) == len(msg)
        assert parse_ldap_message(msg).op == "searchResDone"


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 400 Bad Request\r\n",
        b"220 mail.example ESMTP\r\n",
        b"\x16\x03\x01\x00\x2a",  # a TLS record
        b"\x30\x80",  # indefinite length: not allowed in LDAP
        b"\x30\x85\x01\x00\x00\x00\x00",  # 5 length octets
        b"\x30\x84\x80\x00\x00\x00",  # 2^31
        b"\x30\x84" + (MAX_MESSAGE + 1).to_bytes(4, "big"),
        b"\x30\x03\x02\x01\x01",  # too short to hold a protocolOp
        b"\x30\x0c\x04\x01\x01",  # no INTEGER messageID
    ],
)
def test_frame_rejects_what_is_not_ldap(data: bytes) -> None:
    with pytest.raises(NotThisProtocol):
        frame_ldap_message(data)


@pytest.mark.parametrize("data", [b"", b"\x30", b"\x30\x84\x00\x00", b"\x30\x84\x00\x00\x01\x00\x02\x01"])
def test_frame_needs_more(data: bytes) -> None:
    assert frame_ldap_message(data) is None


# ------------------------------------------------------------------------------- lab transcripts


def test_samba_389_transcript() -> None:
    run = run_dialogue(LDAPProbe(), SAMBA_389, port=389)
    assert run.ok, run.error
    f = run.finding
    assert f is not None
    assert (f.service, f.product, f.version, f.confidence) == ("ldap", "Samba AD DC", "4.17.12", 10)
    assert f.details["domain"] == "lab.example.test"
    assert f.details["forest"] == "lab.example.test"
    assert f.details["dns_host_name"] == "dc1.lab.example.test"
    assert f.details["site"] == "Default-First-Site-Name"
    assert f.details["roles"] == ["domain-controller", "global-catalog"]
    assert f.details["port_role"] == "directory"
    assert f.details["functional_levels"] == {"domain": 4, "forest": 4, "domain_controller": 4}
    assert f.details["functional_level_name"] == "Windows Server 2008 R2"
    assert "windows_generation" not in f.details  # Samba emulates a level; it is not Windows
    assert f.details["sasl_mechanisms"] == ["GSS-SPNEGO", "GSSAPI", "NTLM"]
    assert f.details["anonymous_access"] == "rootdse-only"
    assert "00002020" in f.details["anonymous"]["naming_context_error"]
    assert f.host_facts == {
        "ad_domain": "lab.example.test",
        "ad_forest": "lab.example.test",
        "dns_host_name": "dc1.lab.example.test",
    }
    sources = {e.source: e.value for e in f.evidence}
    assert sources["rootDSE vendorName"] == "Samba Team (https://www.samba.org)"
    assert sources["rootDSE vendorVersion"] == "4.17.12-Debian"
    # Samba advertises no StartTLS extension: nothing is tried. It offers NTLM, so the last request
    # is the SASL bind carrying an NTLMSSP NEGOTIATE; this transcript (recorded before that step)
    # holds no answer to it, which the probe records without losing the identification.
    assert f.details["starttls_advertised"] is None and "starttls" not in f.details
    assert len(run.sent) == 3
    assert parse_ldap_message(run.sent[-1]).op == "bindRequest"
    assert b"NTLMSSP\x00\x01\x00\x00\x00" in run.sent[-1]
    assert "ntlm_error" in f.details


def test_samba_3268_is_the_global_catalog() -> None:
    run = run_dialogue(LDAPProbe(), SAMBA_3268, port=3268)
    assert run.ok and run.finding is not None
    assert run.finding.product == "Samba AD DC"
    assert run.finding.details["port_role"] == "global-catalog"
    assert "global-catalog" in run.finding.details["roles"]


def test_openldap_379_transcript_with_starttls() -> None:
    run = run_dialogue(LDAPProbe(), OPENLDAP_379, port=379, tls=TLS)
    assert run.ok, run.error
    f = run.finding
    assert f is not None
    assert (f.product, f.version, f.confidence) == ("OpenLDAP", "2.5.13", 10)
    assert f.details["build"] == "2.5.13+dfsg-5"
    assert f.details["monitored_info"].startswith("OpenLDAP: slapd 2.5.13+dfsg-5")
    assert f.details["naming_contexts"] == ["dc=lab,dc=example,dc=test"]
    assert f.details["anonymous_access"] == "directory"  # the lab ACL: access to * by * read
    assert f.details["anonymous"]["monitor"] is True
    assert f.details["starttls_advertised"] is True
    assert f.details["starttls"] == "ok"
    assert "domain-controller" not in f.details.get("roles", [])
    assert "ad_domain" not in f.host_facts
    # rootDSE, cn=Monitor, naming context, StartTLS, then the SASL NTLM bind (slapd offers NTLM);
    # the transcript predates that step, so it ends there unanswered
    ops = [parse_ldap_message(m).op for m in run.sent]
    assert ops == ["searchRequest", "searchRequest", "searchRequest", "extendedReq", "bindRequest"]
    assert [parse_ldap_message(m).message_id for m in run.sent] == [1, 2, 3, 4, 5]


def test_openldap_starttls_handshake_failure_keeps_the_finding() -> None:
    run = run_dialogue(LDAPProbe(), OPENLDAP_379, port=379, tls=None)
    assert run.ok and run.finding is not None
    assert run.finding.product == "OpenLDAP"
    assert run.finding.details["starttls"].startswith("handshake failed")


def test_openldap_over_implicit_tls_skips_starttls() -> None:
    stream = b"".join(split_messages(OPENLDAP_379)[:-1])  # without the StartTLS reply
    run = run_dialogue(LDAPProbe(), stream, port=636, tls=TLS, implicit_tls=True)
    assert run.ok and run.finding is not None
    assert run.finding.details["transport_security"] == "ldaps"
    assert "starttls" not in run.finding.details
    assert [parse_ldap_message(m).op for m in run.sent][-1] == "bindRequest"  # SASL NTLM, unanswered here


def test_reply_cut_after_the_entry_still_identifies() -> None:
    entry = split_messages(SAMBA_389)[0]
    run = run_dialogue(LDAPProbe(), entry, port=389)
    assert run.ok and run.finding is not None
    assert run.finding.product == "Samba AD DC"


def test_reply_truncated_inside_the_entry_is_an_error_not_a_crash() -> None:
    run = run_dialogue(LDAPProbe(), SAMBA_389[:700], port=389)
    assert isinstance(run.error, RecvClosed)
    assert run.finding is None


# ------------------------------------------------------------------------------- refusals


WINDOWS_BIND_REQUIRED = (
    "000004DC: LdapErr: DSID-0C090A5C, comment: In order to perform this operation a successful bind "
    "must be completed on the connection., data 0, v4563"
)


def test_refused_search_still_confirms_ldap() -> None:
    reply = server_message(1, "searchResDone", code=1, diagnostic=WINDOWS_BIND_REQUIRED)
    run = run_dialogue(LDAPProbe(), reply, port=389)
    assert run.ok and run.finding is not None
    f = run.finding
    assert f.service == "ldap"
    assert f.details["refused"]["result_name"] == "operationsError"
    assert f.details["anonymous_access"] == "none"
    assert f.product == "Microsoft Active Directory" and f.confidence == 7


def test_unwilling_to_perform_from_an_unknown_server() -> None:
    reply = server_message(1, "searchResDone", code=53, diagnostic="anonymous access denied")
    run = run_dialogue(LDAPProbe(), reply, port=389)
    assert run.ok and run.finding is not None
    assert run.finding.product is None
    assert run.finding.details["refused"]["result_name"] == "unwillingToPerform"
    assert "anonymous access denied" in run.finding.evidence[0].value


def test_notice_of_disconnection() -> None:
    reply = server_message(0, "extendedResp", code=2, diagnostic="bye", response_name="1.3.6.1.4.1.1466.20036")
    assert parse_ldap_message(reply).is_notice_of_disconnection
    run = run_dialogue(LDAPProbe(), reply, port=389)
    assert run.ok and run.finding is not None
    assert run.finding.details["refused"]["op"] == "extendedResp"


def test_a_first_reply_to_another_request_switches_to_replay_reading() -> None:
    """Replies that answer someone else's request (a capture): find the rootDSE, ask nothing more."""
    other = server_message(7, "searchResDone", code=0)
    run = run_dialogue(LDAPProbe(), other + SAMBA_389, port=389)
    assert run.ok and run.finding is not None and run.finding.product == "Samba AD DC"
    assert len(run.sent) == 1  # no follow-up requests: their answers would not be in the stream


# ------------------------------------------------------------------------------- public captures


def _server_streams(name: str, port: int = 389) -> list[bytes]:
    """The server-to-client TCP payload of each flow from ``port``, ordered by sequence number."""
    path = PCAPS / name
    if not path.exists():
        pytest.fail(f"public capture {path} is missing (the test data ships with the tests)")
    from scapy.layers.inet import TCP
    from scapy.layers.inet6 import IPv6
    from scapy.utils import rdpcap

    flows: dict[tuple[str, int], dict[int, bytes]] = {}
    for packet in rdpcap(str(path)):
        if TCP not in packet or packet[TCP].sport != port:
            continue
        payload = bytes(packet[TCP].payload)
        if not payload:
            continue
        dst = packet[IPv6].dst if IPv6 in packet else packet["IP"].dst
        flows.setdefault((dst, packet[TCP].dport), {}).setdefault(packet[TCP].seq, payload)
    return [b"".join(seg for _, seg in sorted(segs.items())) for segs in flows.values()]


def _root_dse_entries(stream: bytes) -> list[LDAPMessageInfo]:
    """Every rootDSE entry in a stream, including those inside SASL-signed (not sealed) buffers."""
    found: list[LDAPMessageInfo] = []
    pos = 0
    while True:
        pos = stream.find(b"\x30", pos)
        if pos < 0:
            return found
        try:
            n = frame_ldap_message(stream[pos:])
            message = parse_ldap_message(stream[pos : pos + n]) if n else None
        except NotThisProtocol:
            message = None
        if message is not None and message.op == "searchResEntry" and message.dn == "":
            found.append(message)
            pos += n or 1
        else:
            pos += 1


def test_pcap_windows_2003_root_dse() -> None:
    (stream,) = _server_streams("ldap-ad-win2003-rootdse-krb5-sealed.pcap")
    messages = split_messages(stream)
    assert [parse_ldap_message(m).op for m in messages] == ["searchResEntry", "searchResDone", "bindResponse"]
    f = classify_root_dse(parse_root_dse(parse_ldap_message(messages[0])), 389)
    assert f.product == "Microsoft Active Directory" and f.confidence == 9
    assert f.details["windows_generation"] == "Windows Server 2003-2003 R2"
    assert f.details["dns_host_name"] == "w2k3-101.w2k3.vmnet1.vm.base"
    assert f.details["domain"] == "w2k3.vmnet1.vm.base"
    assert f.details["site"] == "Standardname-des-ersten-Standorts"
    assert f.details["roles"] == ["domain-controller"]


def test_pcap_windows_2019_global_catalog() -> None:
    (stream,) = _server_streams("ldap-ad-win2019-dc01zion-rootdse-gc.pcapng")
    entries = _root_dse_entries(stream)
    # the first (plain) search asked for a few attributes; a later one, inside SASL signing
    # (integrity only), returned the functional levels and the global-catalog flag
    full = [e for e in entries if "domainControllerFunctionality" in e.attributes]
    assert full, "no rootDSE with functional levels in the capture"
    f = classify_root_dse(parse_root_dse(full[0]), 389)
    assert f.product == "Microsoft Active Directory"
    assert f.details["functional_levels"] == {"domain": 7, "forest": 7, "domain_controller": 7}
    assert f.details["windows_generation"] == "Windows Server 2016-2022"
    assert f.details["roles"] == ["domain-controller", "global-catalog"]
    assert f.details["domain"] == "matrix.local"
    assert f.details["dns_host_name"] == "DC01-Zion.matrix.local"
    assert f.host_facts["ad_domain"] == "matrix.local"


def test_pcap_recent_dc_over_ipv6_with_vlan_tags() -> None:
    (stream,) = _server_streams("ldap-ad-rootdse-ipv6-vlan80-ad2024.pcapng")
    entry = parse_ldap_message(split_messages(stream)[0])
    f = classify_root_dse(parse_root_dse(entry), 389)
    assert f.product == "Microsoft Active Directory"
    assert f.details["windows_generation"] == "Windows Server 2012 or later"
    assert f.details["domain"] == "ad2024.weberlab.de"
    assert f.details["dns_host_name"] == "vm39-ad2024.ad2024.weberlab.de"
    assert "EXTERNAL" in f.details["sasl_mechanisms"]


def test_pcap_windows_2019_refusing_a_bind() -> None:
    (stream,) = _server_streams("ldap-ad-win2019-dc01zion-invalid-credentials.pcap")
    replies = [parse_ldap_message(m) for m in split_messages(stream)]
    refused = [r for r in replies if r.result_code == 49]
    assert refused and refused[0].result_name == "invalidCredentials"
    f = refusal_finding(refused[0])
    assert f.service == "ldap" and f.product == "Microsoft Active Directory"
    assert "data 52e" in f.details["refused"]["diagnostic"]
    assert {r.result_code for r in replies} == {14, 49}  # saslBindInProgress, invalidCredentials


@pytest.mark.parametrize("name", ["ldap-openldap-sasl-scram-sha-512.pcap", "ldap-openldap-sasl-ntlm.pcap"])
def test_pcap_openldap_sasl(name: str) -> None:
    (stream,) = _server_streams(name)
    replies = [parse_ldap_message(m) for m in split_messages(stream)]
    assert replies[0].op == "bindResponse" and replies[0].result_name == "saslBindInProgress"
    assert replies[0].diagnostic is not None and replies[0].diagnostic.startswith("SASL(0): successful result:")
    assert replies[-1].op == "searchResDone" and replies[-1].result_code == 0
    assert sum(r.op == "searchResEntry" for r in replies) == 9


def test_pcap_starttls_reply() -> None:
    (stream,) = _server_streams("ldap-starttls-ipv6-loopback-selfsigned.pcap")
    first = split_messages(stream)
    assert len(first) == 1  # then TLS records (0x16), which the framer refuses
    reply = parse_ldap_message(first[0])
    assert reply.op == "extendedResp" and reply.result_code == 0
    with pytest.raises(NotThisProtocol):
        frame_ldap_message(stream[len(first[0]) :])


def test_pcap_cldap_from_samba() -> None:
    path = PCAPS / "cldap-samba4-ad-dc-netlogon.pcap"
    if not path.exists():
        pytest.fail(f"public capture {path} is missing (the test data ships with the tests)")
    from scapy.layers.inet import UDP
    from scapy.utils import rdpcap

    datagrams = [bytes(p[UDP].payload) for p in rdpcap(str(path)) if UDP in p and p[UDP].sport == 389]
    assert datagrams
    # one datagram holds the searchResEntry and the searchResDone back to back
    messages = split_messages(datagrams[0])
    replies = [parse_ldap_message(m) for m in messages]
    assert [r.op for r in replies] == ["searchResEntry", "searchResDone"]
    assert list(replies[0].attributes) == ["netlogon"]
    assert frame_ldap_message(datagrams[0]) == len(messages[0])


# A pcap replay drives the same dialogue over a captured server stream: the replies answer
# another client's requests (other message ids, binds, SASL-wrapped traffic after the bind).


@pytest.mark.parametrize(
    ("name", "product", "extra"),
    [
        ("ldap-ad-win2003-rootdse-krb5-sealed.pcap", "Microsoft Active Directory", "Windows Server 2003-2003 R2"),
        ("ldap-ad-win2019-dc01zion-rootdse-gc.pcapng", "Microsoft Active Directory", "domain matrix.local"),
        ("ldap-ad-rootdse-ipv6-vlan80-ad2024.pcapng", "Microsoft Active Directory", "Windows Server 2012 or later"),
        ("ldap-ad-win2019-dc01zion-invalid-credentials.pcap", "Microsoft Active Directory", None),
        ("ldap-openldap-sasl-scram-sha-512.pcap", "OpenLDAP", None),  # slapAuthzDN in the SASL reply
        ("ldap-openldap-sasl-ntlm.pcap", None, None),  # nothing in it names the product
        ("ldap-starttls-ipv6-loopback-selfsigned.pcap", None, None),
    ],
)
def test_dialogue_over_captured_streams(name: str, product: str | None, extra: str | None) -> None:
    (stream,) = _server_streams(name)
    run = run_dialogue(LDAPProbe(), stream, port=389)
    assert run.ok, run.error
    assert run.finding is not None and run.finding.service == "ldap"
    assert run.finding.product == product
    if extra:
        assert run.finding.extrainfo is not None and extra in run.finding.extrainfo


def test_replayed_messages_need_at_least_one() -> None:
    with pytest.raises(NotThisProtocol):
        replayed_messages_finding([])


def test_lenient_framer_hands_over_non_ldap_bytes() -> None:
    entry = split_messages(SAMBA_389)[0]
    assert frame_ldap_or_rest(entry + b"\x00\x00\x0c\x4b") == len(entry)
    assert frame_ldap_or_rest(b"\x00\x00\x0c\x4b\x05\x04") == 6
    assert frame_ldap_or_rest(b"") is None
    assert frame_ldap_or_rest(entry[:10]) is None


# ------------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("level", "caps", "expected"),
    [
        (0, ["1.2.840.113556.1.4.800"], "Windows Server 2000"),
        (2, [], "Windows Server 2003-2003 R2"),
        (3, [], "Windows Server 2008"),
        (4, [], "Windows Server 2008 R2"),
        (6, [], "Windows Server 2012 R2"),
        (7, [], "Windows Server 2016-2022"),
        (10, [], "Windows Server 2025"),
        (99, ["1.2.840.113556.1.4.800"], None),
        (None, [], None),
        (
            None,
            ["1.2.840.113556.1.4.800", "1.2.840.113556.1.4.1670", "1.2.840.113556.1.4.1935"],
            "Windows Server 2008",
        ),
    ],
)
def test_windows_generation(level: int | None, caps: list[str], expected: str | None) -> None:
    assert windows_generation(level, caps) == expected


def test_dn_helpers() -> None:
    assert dn_to_dns_name("DC=lab,DC=example,DC=test") == "lab.example.test"
    assert dn_to_dns_name("o=corp") is None
    assert dn_to_dns_name("not a dn ,,==") is None
    assert dn_to_dns_name(None) is None
    sn = "CN=DC1,CN=Servers,CN=Branch\\, Office,CN=Sites,CN=Configuration,DC=lab,DC=example,DC=test"
    assert site_from_server_name(sn) is not None
    assert site_from_server_name("CN=DC1,CN=Servers,CN=HQ,CN=Sites,CN=Configuration,DC=x") == "HQ"
    assert site_from_server_name("cn=foo") is None


def test_monitor_version() -> None:
    assert parse_monitor_version("OpenLDAP: slapd 2.5.13+dfsg-5 (Feb  8 2023 01:56:12)") == (
        "2.5.13",
        "2.5.13+dfsg-5",
    )
    assert parse_monitor_version("OpenLDAP: slapd 2.6.7 (Jan 1 2024)") == ("2.6.7", "2.6.7")
    assert parse_monitor_version("something else") is None


def _entry(**attrs: list[str]) -> LDAPMessageInfo:
    return LDAPMessageInfo(
        message_id=1, op="searchResEntry", dn="", attributes={k: [v.encode() for v in vs] for k, vs in attrs.items()}
    )


def test_classify_389_ds_ad_lds_and_generic() -> None:
    ds = classify_root_dse(
        parse_root_dse(_entry(vendorName=["389 Project"], vendorVersion=["389-Directory/2.3.1 B2023.052.0000"]))
    )
    assert (ds.product, ds.version, ds.confidence) == ("389 Directory Server", "2.3.1", 10)
    rh = classify_root_dse(
        parse_root_dse(_entry(vendorName=["Red Hat, Inc."], vendorVersion=["Red Hat-Directory/11.7.0 B2023"]))
    )
    assert (rh.product, rh.version) == ("Red Hat Directory Server", "11.7.0")
    lds = classify_root_dse(
        parse_root_dse(
            _entry(
                supportedCapabilities=["1.2.840.113556.1.4.1851", "1.2.840.113556.1.4.1670"],
                domainControllerFunctionality=["7"],
            )
        )
    )
    assert lds.product == "Microsoft AD LDS" and "domain-controller" not in lds.details.get("roles", [])
    assert lds.details["windows_generation"] == "Windows Server 2016-2022"
    generic = classify_root_dse(parse_root_dse(_entry(supportedLDAPVersion=["3"])), 3269)
    assert generic.product is None and generic.service == "ldap"
    assert generic.details["roles"] == ["global-catalog"]  # it answers on the GC port
    # attribute names are matched case-insensitively
    samba = classify_root_dse(
        parse_root_dse(
            _entry(VENDORNAME=["Samba Team (https://www.samba.org)"], supportedcapabilities=["1.2.840.113556.1.4.800"])
        )
    )
    assert samba.product == "Samba AD DC" and samba.version is None


# ------------------------------------------------------------------------------- hostile input


@pytest.mark.parametrize(
    "data",
    [
        b"\x30\x05\x02\x01\x01\xff\x00",  # unknown protocolOp tag
        b"\x30\x06\x02\x01\x01\x64\x01\x04",  # inner length past the end
        b"\x30\x07\x02\x05\xff\xff\xff\xff\xff\x65\x00",
        b"\x30\x0c\x02\x01\x01\x64\x07\x04\x00\x30\x03\x30\x01\x00",  # broken attribute list
    ],
)
def test_parse_rejects_malformed_ber(data: bytes) -> None:
    with pytest.raises(NotThisProtocol):
        parse_ldap_message(data)


@pytest.mark.parametrize(
    "stream",
    [
        b"garbage that is not BER at all",
        b"\x30\x84\x80\x00\x00\x00" + b"\x00" * 32,
        b"\x30\x05\x02\x01\x01\xff\x00",
    ],
)
def test_dialogue_on_garbage_says_not_this_protocol(stream: bytes) -> None:
    run = run_dialogue(LDAPProbe(), stream, port=389)
    assert isinstance(run.error, NotThisProtocol)
    assert run.finding is None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_frame_and_parse(data: bytes) -> None:
    try:
        n = frame_ldap_message(data)
    except NotThisProtocol:
        return
    assert n is None or 0 < n <= len(data)
    if n:
        try:
            parse_ldap_message(data[:n])
        except NotThisProtocol:
            pass


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=len(SAMBA_389) - 1), st.integers(min_value=0, max_value=255))
def test_fuzz_dialogue_on_mutated_real_reply(position: int, value: int) -> None:
    stream = bytearray(SAMBA_389)
    stream[position] = value
    run = run_dialogue(LDAPProbe(), bytes(stream), port=389)
    # a clean finding, or a clean protocol/step error: never another exception
    assert run.ok or isinstance(run.error, (NotThisProtocol, StepError))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=64), max_size=8))
def test_fuzz_dialogue_on_random_streams(chunks: list[bytes]) -> None:
    run = run_dialogue(LDAPProbe(), b"\x30" + b"".join(chunks), port=389)
    assert run.ok or isinstance(run.error, (NotThisProtocol, StepError))
