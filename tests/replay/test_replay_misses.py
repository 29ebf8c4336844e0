"""The three replay misses of issue 16, in general form, on real captures.

* DNS recognised from any well-formed message, not only our own question: a TSIG-signed answer
  (BIND's BADKEY answer to a query signed with a key it does not know) and a GSS-TSIG TKEY
  negotiation (Samba's internal DNS), each a real conversation with the lab's servers;
* the NTLMSSP CHALLENGE read wherever a capture holds one: LDAP SASL binds (two public captures and
  a real bind to the lab's Samba DC), HTTP ``WWW-Authenticate`` (public capture), DCE/RPC binds (the
  lab's Samba endpoint mapper), and the text protocols' ``AUTH NTLM`` (no lab MTA or IMAP server
  speaks NTLM: the lab DC's real CHALLENGE is carried in an SMTP/IMAP/POP3 exchange);
* a conversation of which only the client's side was captured, named from the client's commands
  (SMTP to the lab's Postfix, IMAP/POP3 to Dovecot), saying that only the client was seen.

Lab conversations are real socket exchanges with the lab's daemons on loopback (a foreign
client's questions, not our probes'), written to a capture with the project's pcap writer.
"""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TKEY
import dns.rrset
import dns.tsig
import pytest

from probes.msrpc.wire import build_ntlm_bind, frame_dcerpc_pdu
from scanner.ntlm import build_ldap_sasl_bind, build_negotiate, frame_ldap_message, negotiate_b64
from scanner.registry import load_probes
from scanner.replay import replay_paths
from scanner.replay.pcapwriter import ACK, PSH, SYN, PcapWriter, TCPConversation, tcp_packet, udp_packet
from scanner.results import ScanResult
from tests.pcaputil import corpus_file

PROBES = load_probes()
CLIENT = "127.0.0.1"

#: a reply is complete when this says so (the bytes read so far); None: read until quiet
Done = Callable[[bytes], bool] | None


def _talk(addr: str, port: int, requests: Sequence[bytes], done: Done, timeout: float = 5.0) -> list[bytes]:
    """A real conversation with a lab daemon: each request sent, its reply read (bounded in time
    and size). Returns the replies, one per request."""
    replies: list[bytes] = []
    with socket.create_connection((addr, port), timeout=timeout) as sock:
        for req in requests:
            sock.sendall(req)
            buf = b""
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and len(buf) < 1 << 20:
                if done is not None and buf and done(buf):
                    break
                sock.settimeout(max(0.05, deadline - time.monotonic()) if done else 0.5)
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    if done is None:
                        break
                    continue
                if not chunk:
                    break
                buf += chunk
            replies.append(buf)
    return replies


def _greeted(addr: str, port: int, requests: Sequence[bytes], line_done: Callable[[bytes], bool]) -> list[bytes]:
    """A text protocol: the greeting (read first), then one reply per request."""
    replies: list[bytes] = []
    with socket.create_connection((addr, port), timeout=5.0) as sock:
        for req in [b"", *requests]:
            if req:
                sock.sendall(req)
            buf = b""
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline and not line_done(buf):
                sock.settimeout(max(0.05, deadline - time.monotonic()))
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    break
                buf += chunk
            replies.append(buf)
    return replies


def _write_tcp(path: Path, server: tuple[str, int], exchanges: Sequence[tuple[bool, bytes]]) -> Path:
    """A capture of one TCP connection (handshake, then each (from_client, bytes) in order)."""
    with PcapWriter(path) as w:
        conv = TCPConversation(w, (CLIENT, 40001), server)
        for from_client, data in exchanges:
            if data:
                conv.send(from_client, data)
        conv.close(reset=False)
    return path


def _replay(path: Path) -> dict[tuple[str, int, str], ScanResult]:
    return {(r.address, r.port, r.transport): r for r in replay_paths([str(path)], PROBES).results}


def _dns_tcp_done(buf: bytes) -> bool:
    return len(buf) >= 2 and len(buf) >= 2 + int.from_bytes(buf[:2], "big")


def _tcp_wrap(wire: bytes) -> bytes:
    return len(wire).to_bytes(2, "big") + wire


# ------------------------------------------------------------------------------------ DNS


def _signed_query(qid: int) -> bytes:
    key = dns.tsig.Key("portproof-unknown-key.", b"0123456789abcdef0123456789abcdef", dns.tsig.HMAC_SHA256)
    q = dns.message.make_query("lab.example.test.", "SOA")
    q.id = qid
    q.use_tsig(key)
    return q.to_wire()


def _tkey_query(qid: int) -> bytes:
    """A GSS-TSIG TKEY query (RFC 3645 4.1.2) whose token is an NTLMSSP NEGOTIATE."""
    name = dns.name.from_text("portproof-4242.sig-dc1.lab.example.test.")
    q = dns.message.make_query(name, "TKEY", "ANY")
    q.id = qid
    now = int(time.time())
    tkey = dns.rdtypes.ANY.TKEY.TKEY(
        dns.rdataclass.ANY, dns.rdatatype.TKEY, dns.name.from_text("gss-tsig."), now, now + 3600, 3, 0,
        build_negotiate(),
    )
    q.additional.append(dns.rrset.from_rdata(name, 0, tkey))
    return q.to_wire()


def test_dns_tsig_signed_answer_is_dns(lab: object, tmp_path: Path) -> None:
    """BIND answers a query signed with an unknown key with a TSIG-signed BADKEY (NOTAUTH): a
    question we never ask, an answer dnspython refuses to parse without a keyring. DNS anyway,
    over TCP and UDP."""
    query = _signed_query(0x5151)
    (reply,) = _talk("127.0.0.2", 53, [_tcp_wrap(query)], _dns_tcp_done)
    assert _dns_tcp_done(reply), "BIND did not answer the signed query"
    with pytest.raises(dns.message.UnknownTSIGKey):  # the hard case: a plain parse refuses it
        dns.message.from_wire(reply[2:])
    tcp = _write_tcp(tmp_path / "tsig-tcp.pcap", ("127.0.0.2", 53), [(True, _tcp_wrap(query)), (False, reply)])
    res = _replay(tcp)[("127.0.0.2", 53, "tcp")]
    assert (res.verdict, res.service) == ("identified", "dns"), res.reason
    assert res.details["queries_answered"] == 1

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5.0)
        sock.sendto(_signed_query(0x5252), ("127.0.0.2", 53))
        answer, _ = sock.recvfrom(65536)
    udp = tmp_path / "tsig-udp.pcap"
    with PcapWriter(udp) as w:
        w.write(udp_packet(CLIENT, "127.0.0.2", 40002, 53, _signed_query(0x5252)))
        w.write(udp_packet("127.0.0.2", CLIENT, 53, 40002, answer))
    res = _replay(udp)[("127.0.0.2", 53, "udp")]
    assert (res.verdict, res.service) == ("identified", "dns"), res.reason
    assert res.details["replay"]["paired"] == 1  # the DNS probe's pair_key: id and question


def test_dns_gss_tsig_tkey_negotiation_is_dns(lab: object, tmp_path: Path) -> None:
    """Samba's internal DNS answers a GSS-TSIG TKEY negotiation: recognised as DNS, the TKEY
    facts (algorithm, mode, error) in the details, the client's TKEY query described."""
    query = _tcp_wrap(_tkey_query(0x4242))
    (reply,) = _talk("127.0.0.1", 53, [query], _dns_tcp_done)
    assert _dns_tcp_done(reply), "Samba did not answer the TKEY query"
    path = _write_tcp(tmp_path / "tkey.pcap", ("127.0.0.1", 53), [(True, query), (False, reply)])
    res = _replay(path)[("127.0.0.1", 53, "tcp")]
    assert (res.verdict, res.service) == ("identified", "dns"), res.reason
    assert res.details["tkey"]["algorithm"] == "gss-tsig."
    assert res.details["tkey"]["mode"] == 3  # GSS-API negotiation (RFC 2930 2.5)
    assert any("TKEY" in q for q in res.details["client_queries"])


def test_dns_passive_hook_rejects_what_is_not_dns() -> None:
    """Well-formed framing is required: junk, a text protocol and a cut message are not DNS."""
    from probes.dns import DNSProbe

    probe = DNSProbe()
    assert probe.identify_passive([b"HTTP/1.1 200 OK\r\n\r\n"], [b"GET / HTTP/1.1\r\n\r\n"]) is None
    assert probe.identify_passive([b"\x00\x30" + b"\x00" * 10], []) is None
    assert probe.identify_passive([], [b"EHLO x\r\n"]) is None
    assert not probe.client_hint(b"GET / HTTP/1.1\r\n")
    assert probe.client_hint(_tcp_wrap(_tkey_query(7))[:64])


# ------------------------------------------------------------------------------------ NTLM


def test_ntlm_challenge_of_public_ldap_sasl_binds() -> None:
    """GSS-SPNEGO/NTLM SASL binds in public captures: the CHALLENGE's facts reach the result."""
    ad = replay_paths([str(corpus_file("ldap-ad-win2019-dc01zion-invalid-credentials.pcap"))], PROBES).results
    (res,) = [r for r in ad if r.port == 389]
    assert res.service == "ldap"
    assert res.details["ntlm"]["os_version"] == "10.0.17763"
    assert res.details["ntlm"]["dns_computer"] == "DC01-Zion.matrix.local"
    assert res.details["windows_release"].startswith("Windows Server 2019")
    assert res.extrainfo is not None and "10.0.17763" in res.extrainfo

    slapd = replay_paths([str(corpus_file("ldap-openldap-sasl-ntlm.pcap"))], PROBES).results
    (res,) = [r for r in slapd if r.port == 389]
    assert res.service == "ldap"
    assert res.details["ntlm"]["target_name"] == "LOCALHOST"
    assert res.product is None  # NTLM names no product: Cyrus SASL speaks it too


def test_ntlm_challenge_of_http_www_authenticate() -> None:
    res = next(
        r
        for r in replay_paths([str(corpus_file("http-webdav-apache-2.4.52-and-ms-httpapi-2.0.pcapng"))], PROBES).results
        if r.address == "198.244.151.63"
    )
    assert res.details["ntlm"]["netbios_computer"] == "DLP-TEST-R5"
    assert res.details["ntlm"]["os_version"] == "10.0.20348"


def _lab_ldap_challenge(lab: object) -> tuple[bytes, bytes]:
    """A foreign client's SASL GSS-SPNEGO bind (message id 7) to the lab DC: (request, response)."""
    request = build_ldap_sasl_bind(7)

    def done(buf: bytes) -> bool:
        try:
            return frame_ldap_message(buf) is not None
        except ValueError:
            return True

    (reply,) = _talk("127.0.0.1", 389, [request], done)
    assert b"NTLMSSP" in reply, reply[:80]
    return request, reply


def test_ntlm_challenge_of_a_lab_ldap_sasl_bind(lab: object, tmp_path: Path) -> None:
    request, reply = _lab_ldap_challenge(lab)
    path = _write_tcp(tmp_path / "ldap-ntlm.pcap", ("127.0.0.1", 389), [(True, request), (False, reply)])
    res = _replay(path)[("127.0.0.1", 389, "tcp")]
    assert res.service == "ldap", res.reason
    assert res.details["ntlm"]["looks_like_samba"] is True  # Samba's fixed NTLM VERSION 6.1.0
    assert res.details["ntlm"]["dns_domain"].lower() == "lab.example.test"


def test_ntlm_challenge_of_a_lab_dcerpc_bind(lab: object, tmp_path: Path) -> None:
    """A DCE/RPC bind with an NTLMSSP NEGOTIATE (call id 9, not ours) to the lab's endpoint mapper."""
    request = build_ntlm_bind(call_id=9)

    def done(buf: bytes) -> bool:
        try:
            return frame_dcerpc_pdu(buf) is not None
        except ValueError:
            return True

    (reply,) = _talk("127.0.0.1", 135, [request], done)
    path = _write_tcp(tmp_path / "rpc-ntlm.pcap", ("127.0.0.1", 135), [(True, request), (False, reply)])
    res = _replay(path)[("127.0.0.1", 135, "tcp")]
    assert res.service == "msrpc", res.reason
    assert res.details["ntlm"]["dns_domain"].lower() == "lab.example.test"


@pytest.mark.parametrize(
    ("port", "greeting", "client", "server_reply"),
    [
        (25, b"220 mx.lab.example.test ESMTP Postfix\r\n", b"EHLO client.example\r\nAUTH NTLM {neg}\r\n",
         b"250-mx.lab.example.test\r\n250 AUTH NTLM\r\n334 {chal}\r\n"),
        (143, b"* OK [CAPABILITY IMAP4rev1 AUTH=NTLM] Dovecot ready.\r\n", b"a1 AUTHENTICATE NTLM\r\n{neg}\r\n",
         b"+ \r\n+ {chal}\r\n"),
        (110, b"+OK Dovecot ready.\r\n", b"AUTH NTLM\r\n{neg}\r\n", b"+ \r\n+ {chal}\r\n"),
    ],
    ids=["smtp", "imap", "pop3"],
)
def test_ntlm_challenge_of_text_protocol_auth(
    lab: object, tmp_path: Path, port: int, greeting: bytes, client: bytes, server_reply: bytes
) -> None:
    """``AUTH NTLM`` in SMTP, IMAP and POP3: the base64 CHALLENGE is read from the server's line.
    The CHALLENGE is the lab DC's real one (from an LDAP SASL bind); no lab mail server speaks NTLM,
    so the mail exchange carrying it is written here."""
    _, reply = _lab_ldap_challenge(lab)
    chal = reply[reply.find(b"NTLMSSP\x00") :]
    # the bindResponse's serverSaslCreds run to the message's end: the CHALLENGE is its tail
    text_reply = server_reply.replace(b"{chal}", base64.b64encode(chal))
    cli = client.replace(b"{neg}", negotiate_b64().encode())
    exchanges = [(False, greeting), (True, cli), (False, text_reply)]
    path = _write_tcp(tmp_path / "auth.pcap", ("192.0.2.25", port), exchanges)
    res = _replay(path)[("192.0.2.25", port, "tcp")]
    assert res.verdict == "identified", res.reason
    assert res.details["ntlm"]["looks_like_samba"] is True, res.details
    assert res.details["ntlm"]["dns_domain"].lower() == "lab.example.test"


# ------------------------------------------------------------------------------ client only


def _client_only_capture(path: Path, server: tuple[str, int], client_bytes: bytes) -> Path:
    """Only the client's packets of a connection: its SYN and its data (the server's are missing)."""
    with PcapWriter(path) as w:
        w.write(tcp_packet(CLIENT, server[0], 40003, server[1], 1000, 0, SYN, b""))
        w.write(tcp_packet(CLIENT, server[0], 40003, server[1], 1001, 5001, PSH | ACK, client_bytes))
    return path


def _smtp_done(buf: bytes) -> bool:
    lines = buf.split(b"\r\n")
    return len(lines) >= 2 and len(lines[-2]) >= 4 and lines[-2][3:4] == b" "


def test_client_only_smtp_session_is_named_from_the_client(lab: object, tmp_path: Path) -> None:
    """A real SMTP session with the lab's Postfix, of which only the client's side was captured."""
    commands = [
        b"EHLO client.example\r\n",
        b"MAIL FROM:<a@client.example>\r\n",
        b"RCPT TO:<postmaster@lab.example.test>\r\n",
        b"RSET\r\n",
        b"QUIT\r\n",
    ]
    replies = _greeted("127.0.0.1", 25, commands, _smtp_done)
    assert replies[0].startswith(b"220") and replies[1].startswith(b"250"), replies[:2]
    path = _client_only_capture(tmp_path / "smtp-client.pcap", ("127.0.0.1", 25), b"".join(commands))
    res = _replay(path)[("127.0.0.1", 25, "tcp")]
    assert (res.verdict, res.service, res.product) == ("identified", "smtp", None), res.reason
    assert res.details["only_client_seen"] is True
    assert res.details["client_commands"][:3] == ["EHLO", "MAIL", "RCPT"]
    assert res.confidence <= 3
    assert res.state == "unknown"  # the server never showed it was open
    assert "only the client" in (res.reason or "")


@pytest.mark.parametrize(
    ("port", "commands", "service"),
    [
        (143, [b"a1 CAPABILITY\r\n", b"a2 LOGOUT\r\n"], "imap"),
        (110, [b"CAPA\r\n", b"QUIT\r\n"], "pop3"),
    ],
)
def test_client_only_imap_and_pop3(lab: object, tmp_path: Path, port: int, commands: list[bytes], service: str) -> None:
    replies = _greeted("127.0.0.1", port, commands, lambda b: b.endswith(b"\r\n"))
    assert replies[0], "no greeting from Dovecot"
    path = _client_only_capture(tmp_path / "client.pcap", ("127.0.0.1", port), b"".join(commands))
    res = _replay(path)[("127.0.0.1", port, "tcp")]
    assert (res.service, res.product, res.details.get("only_client_seen")) == (service, None, True), res.reason


def test_client_only_bytes_no_probe_claims_give_no_result(tmp_path: Path) -> None:
    """A client's bytes that no protocol's commands fit: no endpoint is invented."""
    path = _client_only_capture(tmp_path / "junk.pcap", ("192.0.2.9", 25), b"\x17\x99 not a command \x00\x01\r\n")
    assert _replay(path) == {}


def test_client_only_datagrams_to_a_group_address_give_no_result(tmp_path: Path) -> None:
    """An mDNS query to 224.0.0.251 is well-formed DNS, but no one server stands behind a
    multicast address: no endpoint. The same query to a unicast address that never answered is
    named from the client's side."""
    query = dns.message.make_query("printer.local.", "PTR").to_wire()
    path = tmp_path / "mdns.pcap"
    with PcapWriter(path) as w:
        w.write(udp_packet("192.0.2.10", "224.0.0.251", 5353, 5353, query))
        w.write(udp_packet("192.0.2.10", "192.0.2.53", 40005, 53, query))
    results = _replay(path)
    assert ("224.0.0.251", 5353, "udp") not in results
    res = results[("192.0.2.53", 53, "udp")]
    assert (res.service, res.product, res.details["only_client_seen"]) == ("dns", None, True)
    assert res.details["client_queries"] == ["QUERY printer.local. PTR"]
