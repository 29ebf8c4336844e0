"""Fuzz targets: every framer and parser of bytes, with the exceptions it may raise and real seeds.

A target is a function of one ``bytes`` argument plus the exception types that count as a clean
"not this protocol" answer. Anything else it raises is a bug (the engine would report
``probe-bug``). Seeds are real messages: the lab transcripts under ``tests/probes/data``, TCP
payloads of the public captures (``tests/data/pcaps-public``, shipped with the tests), a TLS server flight made
by the ``ssl`` module in memory, and messages built with the protocol libraries (dnspython).

Used by ``test_fuzz_parsers.py`` (hypothesis, in CI) and ``long_fuzz.py`` (a long run by hand).
A module under fuzz that fails to import fails the suite (it is never silently left out).
"""

from __future__ import annotations

import functools
import importlib
import os
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scanner.api import NotThisProtocol, Probe
from scanner.testing import run_dialogue

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "probes" / "data"
PUBLIC = REPO / "tests" / "data" / "pcaps-public"

#: cap on a seed's size (keeps examples quick)
SEED_CAP = 8192


@dataclass
class Target:
    """One function under fuzz."""

    name: str
    fn: Callable[[bytes], Any]
    ok: tuple[type[BaseException], ...] = (NotThisProtocol,)
    seeds: list[bytes] = field(default_factory=list)


def _mod(name: str) -> Any:
    """The module under fuzz (an ImportError propagates: the suite fails instead of shrinking)."""
    return importlib.import_module(name)


def _read(name: str) -> bytes:
    return (DATA / name).read_bytes()[:SEED_CAP]  # a missing seed file is an error, not an empty seed


def _text_seed(name: str) -> bytes:
    """A lab transcript (``.txt``) with LF line ends turned into CRLF, as on the wire."""
    raw = _read(name)
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@functools.lru_cache(maxsize=1)
def public_payloads() -> dict[str, list[bytes]]:
    """TCP/UDP payloads of the public captures, by file name (a missing folder is an error)."""
    from scapy.layers.inet import TCP, UDP
    from scapy.utils import rdpcap

    out: dict[str, list[bytes]] = {}
    if not (PUBLIC / "MANIFEST.tsv").is_file():
        raise FileNotFoundError(f"public captures missing: {PUBLIC}")
    for path in sorted(PUBLIC.glob("*.pcap*")):
        if path.stat().st_size > 400_000:
            continue
        try:
            pkts = rdpcap(str(path))
        except Exception:
            continue
        payloads = []
        for pkt in pkts[:200]:
            layer = TCP if TCP in pkt else UDP if UDP in pkt else None
            if layer is not None:
                data = bytes(pkt[layer].payload)
                if data:
                    payloads.append(data[:SEED_CAP])
        out[path.name] = payloads
    return out


def _public(prefix: str, contains: bytes = b"") -> list[bytes]:
    return [p for name, ps in public_payloads().items() if name.startswith(prefix) for p in ps
            if contains in p][:20]


@functools.lru_cache(maxsize=1)
def tls_server_flight() -> bytes:
    """The server's first TLS 1.2 flight (ServerHello, Certificate, ...) made in memory with ``ssl``."""
    import ssl
    import sys

    sys.path.insert(0, str(REPO / "tests" / "hostile"))
    try:
        from hostile_kit import make_self_signed
    finally:
        sys.path.pop(0)
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = make_self_signed(Path(tmp))
        sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sctx.load_cert_chain(str(cert), str(key))
        sctx.maximum_version = ssl.TLSVersion.TLSv1_2
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname, cctx.verify_mode = False, ssl.CERT_NONE
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = cctx.wrap_bio(c_in, c_out, server_side=False)
    server = sctx.wrap_bio(s_in, s_out, server_side=True)
    with_suppress = (ssl.SSLWantReadError,)
    try:
        client.do_handshake()
    except with_suppress:
        pass
    s_in.write(c_out.read())
    try:
        server.do_handshake()
    except with_suppress:
        pass
    return s_out.read()


def _dns_seeds() -> list[bytes]:
    import dns.message
    import dns.rrset

    q = dns.message.make_query("_ldap._tcp.lab.example.test", "SRV", use_edns=True)
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text("_ldap._tcp.lab.example.test.", 600, "IN", "SRV",
                                        "0 100 389 dc1.lab.example.test."))
    r.additional.append(dns.rrset.from_text("dc1.lab.example.test.", 600, "IN", "A", "127.0.0.1"))
    soa = dns.message.make_response(dns.message.make_query("lab.example.test", "SOA"))
    soa.answer.append(dns.rrset.from_text("lab.example.test.", 3600, "IN", "SOA",
                                          "dc1.lab.example.test. hostmaster.lab.example.test. 1 900 600 86400 3600"))
    ver = dns.message.make_response(dns.message.make_query("version.bind", "TXT", "CH"))
    ver.answer.append(dns.rrset.from_text("version.bind.", 0, "CH", "TXT", '"9.18.33-1~deb12u2-Debian"'))
    out = [m.to_wire() for m in (r, soa, ver)]
    return out + _public("dns")


HTTP_SEEDS = [
    b"HTTP/1.1 200 OK\r\nServer: Apache/2.4.57 (Debian)\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 401 Unauthorized\r\nServer: Microsoft-IIS/10.0\r\nWWW-Authenticate: NTLM\r\n"
    b"WWW-Authenticate: Negotiate\r\nX-OWA-Version: 15.2.1118.7\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.0 302 Found\r\nLocation: https://mail.lab.example.test/owa/\r\nConnection: close\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nServer: nginx/1.22.1\r\n\r\n",
]


def _probe_targets(probe_mod: str, cls: str, port: int, seeds: list[bytes], udp: bool = False) -> list[Target]:
    mod = _mod(probe_mod)
    if mod is None or not hasattr(mod, cls):
        return []
    probe: Probe = getattr(mod, cls)()

    def drive(data: bytes) -> Any:
        if udp:
            return run_dialogue(probe, [data, data[::-1]], port=port, transport="udp", max_steps=400)
        return run_dialogue(probe, data, port=port, max_steps=400)

    return [Target(f"{probe.name}.dialogue", drive, (), seeds)]


def build_targets() -> list[Target]:
    """Every fuzz target that exists in the tree now."""
    from scanner import textproto as tp

    smtp_seed, imap_seed = _text_seed("smtp-postfix-3.7.11.txt"), _text_seed("imap-dovecot-2.3.19.1.txt")
    pop3_seed, nntp_seed = _text_seed("pop3-dovecot-2.3.19.1.txt"), _text_seed("nntp-inn-2.7.1.txt")
    text_seeds = [s for s in (smtp_seed, imap_seed, pop3_seed, nntp_seed) if s] + _public("smtp")[:10]
    t: list[Target] = [
        Target("textproto.frame_line", tp.frame_line, seeds=text_seeds),
        Target("textproto.frame_smtp_reply", tp.frame_smtp_reply, seeds=text_seeds),
        Target("textproto.frame_dot_block", tp.frame_dot_block, seeds=text_seeds),
        Target("textproto.frame_imap_tagged", tp.frame_imap_tagged(b"a1"), seeds=[imap_seed]),
        Target("textproto.split_lines", tp.split_lines, (), text_seeds),
        Target("textproto.decode_text", tp.decode_text, (), text_seeds),
    ]
    smtp = _mod("probes.smtp")
    if smtp:
        def smtp_all(data: bytes) -> Any:
            n = smtp.frame_reply(data)
            reply = smtp.parse_reply(data[:n] if n else data)
            return smtp.identify(reply, smtp.parse_ehlo(reply))

        t += [Target("smtp.frame_reply", smtp.frame_reply, seeds=[smtp_seed]),
              Target("smtp.parse_reply+parse_ehlo+identify", smtp_all, seeds=[smtp_seed])]
    pop3 = _mod("probes.pop3")
    if pop3:
        t += [Target("pop3.parse_status", pop3.parse_status, seeds=[pop3_seed]),
              Target("pop3.parse_capa", lambda d: pop3.identify(d.decode("latin-1"), pop3.parse_capa(d)), (),
                     [pop3_seed])]
    imap = _mod("probes.imap")
    if imap:
        t += [Target("imap.parse_greeting", imap.parse_greeting, seeds=[imap_seed]),
              Target("imap.parse_response", lambda d: imap.parse_response(d, "a1"), seeds=[imap_seed]),
              Target("imap.identify", lambda d: imap.identify(d.decode("latin-1"), imap.capabilities_from(
                  d.decode("latin-1")), imap.parse_id([d.decode("latin-1")])), (), [imap_seed])]
    nntp = _mod("probes.nntp")
    if nntp:
        t += [Target("nntp.parse_status", nntp.parse_status, seeds=[nntp_seed]),
              Target("nntp.parse_capabilities", nntp.parse_capabilities, (), [nntp_seed])]
    t += _probe_targets("probes.smtp", "SMTPProbe", 25, [smtp_seed])
    t += _probe_targets("probes.imap", "IMAPProbe", 143, [imap_seed])
    t += _probe_targets("probes.pop3", "POP3Probe", 110, [pop3_seed])
    t += _probe_targets("probes.nntp", "NNTPProbe", 119, [nntp_seed])

    ldap = _mod("probes.ldap")
    ldap_seeds = [p.read_bytes()[:SEED_CAP] for p in sorted((DATA / "ldap").glob("*.bin"))] if (
        DATA / "ldap").is_dir() else []
    ldap_seeds += _public("ldap", b"\x30")[:10]
    if ldap:
        def ldap_all(data: bytes) -> Any:
            n = ldap.frame_ldap_message(data)
            info = ldap.parse_ldap_message(data[:n] if n else data)
            try:
                return ldap.classify_root_dse(ldap.parse_root_dse(info))
            except NotThisProtocol:
                return ldap.refusal_finding(info)

        t += [Target("ldap.frame_ldap_message", ldap.frame_ldap_message, seeds=ldap_seeds),
              Target("ldap.parse+classify", ldap_all, seeds=ldap_seeds)]
        t += _probe_targets("probes.ldap", "LDAPProbe", 389, ldap_seeds)

    dnsp = _mod("probes.dns")
    if dnsp:
        dns_seeds = _dns_seeds()
        tcp_seeds = [struct.pack("!H", len(s)) + s for s in dns_seeds]
        t += [Target("dns.frame_dns_tcp", dnsp.frame_dns_tcp, seeds=tcp_seeds),
              Target("dns.frame_dns_udp", dnsp.frame_dns_udp, seeds=dns_seeds),
              Target("dns.parse_dns_reply+identify", lambda d: dnsp.identify([dnsp.parse_dns_reply(d)]),
                     seeds=dns_seeds)]
        t += _probe_targets("probes.dns", "DNSProbe", 53, tcp_seeds)
        t += _probe_targets("probes.dns", "DNSProbe", 53, dns_seeds, udp=True)
        t[-1].name = "dns.dialogue-udp"

    msrpc = _mod("probes.msrpc")
    if msrpc:
        rpc_seeds = [_read("msrpc-samba-4.17-dc.bin"), _read("msrpc-samba-4.17-dcerpcd.bin"),
                     _read("msrpc-samba-4.17-dc-ntlm.bin"), _read("msrpc-samba-4.17-dcerpcd-ntlm.bin")]
        rpc_seeds += _public("msrpc", b"\x05\x00")[:10]

        def rpc_all(data: bytes) -> Any:
            n = msrpc.frame_dcerpc_reply(data)
            msg = data[:n] if n else data
            out = []
            for fn in (msrpc.parse_pdu_header, msrpc.parse_bind_reply, msrpc.parse_fault,
                       msrpc.parse_ept_lookup_reply, msrpc.reassemble_stub, msrpc.parse_tower,
                       msrpc.parse_auth_verifier, msrpc.parse_bind_challenge):
                try:
                    out.append(fn(msg))
                except NotThisProtocol:
                    pass
            return out

        t += [Target("msrpc.frame_dcerpc_pdu", msrpc.frame_dcerpc_pdu, seeds=rpc_seeds),
              Target("msrpc.frame_dcerpc_reply", msrpc.frame_dcerpc_reply, seeds=rpc_seeds),
              Target("msrpc.parsers", rpc_all, seeds=rpc_seeds)]
        t += _probe_targets("probes.msrpc", "MSRPCProbe", 135, rpc_seeds)

    smb = _mod("probes.smb")
    if smb:
        smb_seeds = [_read("smb-samba-4.17-dc-445.bin"), _read("smb-samba-4.17-dc-139.bin"),
                     _read("smb-samba-4.17-smb1-only.bin"), _read("smb-samba-4.17-smb1-plain.bin")]
        smb_seeds += _public("msrpc-epm-win2016", b"SMB")[:10]

        def smb_all(data: bytes) -> Any:
            n = smb.frame_netbios(data)
            out: list[Any] = [smb.parse_netbios(data[:n]) if n else None]
            payload = data[4:n] if n else data[4:]  # parsed as an SMB message even when unframed
            out.append(smb.spnego_mechs(payload))
            for fn in (smb.parse_smb2_header, smb.parse_smb2_negotiate, smb.parse_smb2_session_setup,
                       smb.parse_smb1_negotiate, smb.parse_smb1_session_setup):
                try:
                    out.append(fn(payload))
                except NotThisProtocol:
                    pass
            return out

        t += [Target("smb.frame_netbios", smb.frame_netbios, seeds=smb_seeds),
              Target("smb.parsers", smb_all, seeds=smb_seeds)]
        t += _probe_targets("probes.smb", "SMBProbe", 445, smb_seeds)

    http = _mod("probes.http")
    if http:
        http_seeds = HTTP_SEEDS + _public("http", b"HTTP/")[:10]

        def http_all(data: bytes) -> Any:
            n = http.frame_http_response(data)
            resp = http.parse_http_response(data[:n] if n else data)
            return http.parse_auth_schemes(resp), http.ntlm_from_headers(resp), http.exchange_facts(resp)

        t += [Target("http.frame_http_response", http.frame_http_response, seeds=http_seeds),
              Target("http.parse_http_response", http_all, seeds=http_seeds)]
        t += _probe_targets("probes.http", "HTTPProbe", 80, http_seeds)

    ntlm = _mod("scanner.ntlm")
    if ntlm:
        blobs = []
        for p in _public("", b"NTLMSSP\x00\x02\x00\x00\x00"):
            blobs.append(p[p.find(b"NTLMSSP\x00\x02"):])
        t += [Target("ntlm.parse_challenge", ntlm.parse_challenge, seeds=blobs),
              Target("ntlm.find_ntlmssp", ntlm.find_ntlmssp, seeds=blobs),
              Target("ntlm.frame_ldap_message", ntlm.frame_ldap_message, seeds=ldap_seeds),
              Target("ntlm.parse_ldap_bind_response", ntlm.parse_ldap_bind_response, seeds=ldap_seeds)]

    tsap = _mod("probes.tsap")
    if tsap:
        tsap_seeds = [_read("tsap-libiec61850-1.5.2-mms.bin"), _read("tsap-python-snap7-3.3.0-s7.bin")]

        def tsap_all(data: bytes) -> Any:
            n = tsap.frame_tpkt(data)
            pdu = tsap.parse_cotp(data[:n] if n else data)
            out: list[Any] = [pdu]
            payload = getattr(pdu, "payload", None) or getattr(pdu, "data", b"") or data[7:]
            for fn in (tsap.parse_session, tsap.parse_mms_identify, tsap.parse_s7, tsap.parse_s7_setup_ack,
                       tsap.parse_szl_response, tsap.ber_children, tsap.decode_oid):
                try:
                    out.append(fn(payload))
                except NotThisProtocol:
                    pass
            return out

        t += [Target("tsap.frame_tpkt", tsap.frame_tpkt, seeds=tsap_seeds),
              Target("tsap.parsers", tsap_all, seeds=tsap_seeds)]
        t += _probe_targets("probes.tsap", "TSAPProbe", 102, tsap_seeds)

    resvc = _mod("probes.resvc")
    if resvc:
        seeds = [b"220 mail.lab.example.test Microsoft Routing Server ready\r\n"]
        t += [Target("resvc.frame+parse", lambda d: resvc.parse_resvc_banner(d[: resvc.frame_resvc_banner(d) or None]),
                     seeds=seeds)]
        t += _probe_targets("probes.resvc", "ResvcProbe", 691, seeds)

    krb = _mod("probes.kerberos")
    if krb:
        # lab (Samba 4.17 AD DC) KDC and kpasswd streams (4-byte TCP prefixes) + the Windows DC's TGS-REP
        kdc_seeds = [_read("kerberos-samba-4.17-dc.bin"), *_public("multi-win10", b"\x6d\x82")[:4]]
        kpw_seeds = [_read("kpasswd-samba-4.17-dc.bin")]

        def krb_all(data: bytes) -> Any:
            out: list[Any] = []
            for framer in (krb.frame_kdc_tcp, krb.frame_kpasswd_tcp):
                try:
                    n = framer(data)
                except NotThisProtocol:
                    n = None
                msg = data[4:n] if n else data[4:]
                for fn in (krb.parse_kdc_message, krb.parse_kpasswd_reply):
                    for candidate in (msg, data):  # framed, and the whole input as a datagram
                        try:
                            out.append(fn(candidate))
                        except NotThisProtocol:
                            pass
            return out

        t += [Target("kerberos.frame_kdc_tcp", krb.frame_kdc_tcp, seeds=kdc_seeds),
              Target("kerberos.frame_kpasswd_tcp", krb.frame_kpasswd_tcp, seeds=kpw_seeds),
              Target("kerberos.parsers", krb_all, seeds=kdc_seeds + kpw_seeds),
              Target("kerberos.passive", lambda d: (krb.KerberosProbe().identify_passive([d], []),
                                                    krb.KpasswdProbe().identify_passive([d], [])), (),
                     kdc_seeds + kpw_seeds)]
        t += _probe_targets("probes.kerberos", "KerberosProbe", 88, kdc_seeds)
        t += _probe_targets("probes.kerberos", "KpasswdProbe", 464, kpw_seeds)
        t += _probe_targets("probes.kerberos", "KerberosProbe", 88, [s[4:] for s in kdc_seeds], udp=True)
        t[-1].name = "kerberos.dialogue-udp"

    tlsp = _mod("scanner.replay.tlsparse")
    if tlsp:
        flight = tls_server_flight()
        tls_seeds = [flight, *_public("https", b"\x16\x03")[:5]]
        t += [Target("tls.parse_server_tls", tlsp.parse_server_tls, (), tls_seeds),
              Target("tls.find_server_hello", tlsp.find_server_hello, (), tls_seeds),
              Target("tls.looks_like", lambda d: (tlsp.looks_like_tls_record(d), tlsp.looks_like_client_hello(d)),
                     (), tls_seeds)]
    layers = _mod("scanner.replay.layers")
    if layers:
        frame = (b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00"
                 b"\x45\x00\x00\x2c\x00\x01\x00\x00\x40\x06\x00\x00\x7f\x00\x00\x01\x7f\x00\x00\x02"
                 b"\x00\x19\xc0\x00\x00\x00\x00\x01\x00\x00\x00\x00\x50\x18\x20\x00\x00\x00\x00\x00"
                 b"220 ")

        def link_all(data: bytes) -> Any:
            out = []
            for linktype in (1, 101, 113, 276, 0, 12, 228, 229):
                try:
                    etype, off = layers.link_to_ip(linktype, data)
                    ip = layers.parse_ip(etype, data, off)
                    payload = getattr(ip, "payload", b"")
                    out.append(layers.parse_tcp(payload) if getattr(ip, "proto", 0) == 6 else ip)
                    out.append(layers.parse_udp(payload))
                except layers.Undecodable:
                    pass
            return out

        t += [Target("layers.link+ip+tcp/udp", link_all, (layers.Undecodable,), [frame])]
    reader = _mod("scanner.replay.reader")
    if reader:
        pcap_seeds = [p.read_bytes()[:SEED_CAP] for p in sorted(PUBLIC.glob("*.pcap*"))
                      if p.stat().st_size < 5000][:6]
        pcap_seeds.append(_tiny_pcap(frame if layers else b"\x00" * 60))
        t += [Target("pcap.CaptureReader", _read_capture, (), pcap_seeds)]
    registry = _mod("scanner.registry")
    if registry:
        probes = registry.load_probes()

        def passive_hooks(data: bytes) -> Any:
            """Every registered probe's passive hooks (pcap replay): none may raise on any bytes."""
            out = []
            for probe in probes:
                out += [probe.client_hint(data[:64]), probe.pair_key(data)]
                out += [probe.identify_passive([data], [data]), probe.identify_passive([], [data])]
            return out

        hook_seeds = [s for seeds in public_payloads().values() for s in seeds[:2]][:40]
        t += [Target("probes.passive_hooks", passive_hooks, (), hook_seeds)]
    return t


def _tiny_pcap(frame: bytes) -> bytes:
    """A classic pcap file (Ethernet) with two copies of ``frame``."""
    head = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    rec = struct.pack("<IIII", 1, 0, len(frame), len(frame)) + frame
    return head + rec + rec


def _read_capture(data: bytes) -> Any:
    """Write ``data`` to a file and read it as a capture: it must never raise, and any error
    must name the file and a record number."""
    from scanner.replay.reader import CaptureReader

    fd, path = tempfile.mkstemp(suffix=".pcap")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        r = CaptureReader(path)
        records = []
        for i, rec in enumerate(r):
            records.append(rec)
            if i > 2000:
                raise AssertionError("more than 2000 records from a fuzzed file of a few KB")
        for e in r.errors:
            assert e.file == path and isinstance(e.record, int) and e.record >= 0 and e.message, e
            assert path in str(e)
        return records
    finally:
        os.unlink(path)
