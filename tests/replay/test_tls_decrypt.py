"""TLS keys kept and used (issue 16 item 3): key log, pcapng Decryption Secrets Blocks, decryption.

Sessions are made by OpenSSL itself (Python's ``ssl`` with memory BIOs, both ends in this
process, so every byte on the "wire" is known) for each cipher family decryption supports, then
decrypted with the key log OpenSSL wrote. The lab half records a live scan of the real servers with
``--record``'s recorder and checks that replay names the same products inside TLS and that
tshark decrypts the recording with the keys the file carries.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from scanner.replay import replay_paths
from scanner.replay.keylog import KeyLog, KeyLogCapture, dsb_block, parse_dsb
from scanner.replay.pcapwriter import PcapNgWriter, PcapRecorder, PcapWriter, TCPConversation
from scanner.replay.reader import CaptureReader
from scanner.replay.tlsdecrypt import client_random, decrypt_connection, hkdf_expand_label

GREETING = b"220 mail.example.test ESMTP Postfix (Debian/GNU)\r\n"
EHLO_REPLY = b"250-mail.example.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
#: OpenSSL's SSL_OP_NO_ENCRYPT_THEN_MAC (Python has no name for it)
OP_NO_ENCRYPT_THEN_MAC = 1 << 19


@pytest.fixture(scope="module")
def cert_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A throw-away self-signed ECDSA certificate for the in-process server."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tls-decrypt.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .sign(key, hashes.SHA256())
    )
    d = tmp_path_factory.mktemp("cert")
    (d / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "k.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(d / "c.pem"), str(d / "k.pem")


@dataclass
class Session:
    #: (from_client, bytes) in the order they crossed
    wire: list[tuple[bool, bytes]]
    keylog: bytes
    version: str
    cipher: str

    def side(self, client: bool) -> bytes:
        return b"".join(d for c, d in self.wire if c == client)


def _session(
    certs: tuple[str, str], tmp: Path, version: ssl.TLSVersion, ciphers: str | None = None, no_etm: bool = False,
    messages: tuple[bytes, bytes, bytes] = (GREETING, b"EHLO portproof.invalid\r\n", EHLO_REPLY),
) -> Session:
    """A TLS session between two OpenSSL ends in memory: the server greets, the client sends one
    message, the server replies. Returns the bytes on the wire and the client's key log."""
    keylog = tmp / f"keys-{len(list(tmp.iterdir()))}.log"
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(*certs)
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname, cctx.verify_mode = False, ssl.CERT_NONE
    for ctx in (sctx, cctx):
        ctx.minimum_version = ctx.maximum_version = version
        if ciphers is not None:
            ctx.set_ciphers(ciphers + ":@SECLEVEL=0")
    if no_etm:
        cctx.options |= OP_NO_ENCRYPT_THEN_MAC
    cctx.keylog_filename = str(keylog)
    cin, cout, sin, sout = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = cctx.wrap_bio(cin, cout)
    s = sctx.wrap_bio(sin, sout, server_side=True)
    wire: list[tuple[bool, bytes]] = []

    def pump() -> None:
        for _ in range(4):
            d = cout.read()
            if d:
                wire.append((True, d))
                sin.write(d)
            d = sout.read()
            if d:
                wire.append((False, d))
                cin.write(d)

    done = [False, False]
    for _ in range(20):
        for i, obj in enumerate((c, s)):
            if not done[i]:
                try:
                    obj.do_handshake()
                    done[i] = True
                except ssl.SSLWantReadError:
                    pass
        pump()
        if all(done):
            break
    assert all(done), "handshake did not finish"

    def read(obj: ssl.SSLObject, n: int) -> bytes:
        got = b""
        for _ in range(10):
            try:
                got += obj.read(65536)
            except ssl.SSLWantReadError:
                pass
            if len(got) >= n:
                break
            pump()
        return got

    greeting, request, reply = messages
    s.write(greeting)
    pump()
    assert read(c, len(greeting)) == greeting
    c.write(request)
    pump()
    assert read(s, len(request)) == request
    s.write(reply)
    pump()
    assert read(c, len(reply)) == reply
    return Session(wire, keylog.read_bytes(), c.version() or "?", (c.cipher() or ("?",))[0])


def _write_capture(sess: Session, path: Path, port: int = 465, secrets: bytes | None = None) -> None:
    """The session as a TCP connection in a capture (pcapng with a DSB when ``secrets`` is given)."""
    with (PcapNgWriter(path) if secrets is not None else PcapWriter(path)) as w:
        if secrets is not None:
            assert isinstance(w, PcapNgWriter)
            w.write_secrets(secrets)
        conv = TCPConversation(w, ("127.0.0.1", 40123), ("127.0.0.1", port), ts=1_700_000_000.0)
        for from_client, data in sess.wire:
            conv.send(from_client, data, ts=1_700_000_000.1)
        conv.close(reset=False, ts=1_700_000_000.2)


CASES = [
    # (id, version, OpenSSL cipher string, EtM off, expected cipher name)
    ("tls13", ssl.TLSVersion.TLSv1_3, None, False, "TLS_AES_256_GCM_SHA384"),
    ("tls12-aes128-gcm", ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-GCM-SHA256", False, None),
    ("tls12-aes256-gcm-sha384", ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES256-GCM-SHA384", False, None),
    ("tls12-chacha20", ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-CHACHA20-POLY1305", False, None),
    ("tls12-aes128-ccm", ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-CCM", False, None),
    ("tls12-aes128-ccm8", ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-CCM8", False, None),
    ("tls12-cbc-sha1-etm", ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-SHA", False, None),
    ("tls12-cbc-sha1-mac-then-encrypt", ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-SHA", True, None),
    ("tls12-cbc-sha384", ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES256-SHA384", True, None),
    ("tls12-camellia-cbc", ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-CAMELLIA128-SHA256", False, None),
    ("tls11-cbc", ssl.TLSVersion.TLSv1_1, "ECDHE-ECDSA-AES256-SHA", True, None),
    ("tls10-cbc-iv-chaining", ssl.TLSVersion.TLSv1, "ECDHE-ECDSA-AES128-SHA", True, None),
]


@pytest.mark.parametrize(("version", "ciphers", "no_etm", "name"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decrypts_openssl_sessions(
    cert_files: tuple[str, str], tmp_path: Path, version: ssl.TLSVersion, ciphers: str | None, no_etm: bool,
    name: str | None,
) -> None:
    try:
        sess = _session(cert_files, tmp_path, version, ciphers, no_etm)
    except (ssl.SSLError, ValueError) as exc:  # a cipher or version this OpenSSL build refuses
        pytest.skip(f"OpenSSL will not negotiate it here: {exc}")
    if ciphers is not None:
        assert sess.cipher == ciphers
    keys = KeyLog()
    assert keys.add_text(sess.keylog) >= 1
    dec = decrypt_connection(sess.side(True), sess.side(False), keys)
    assert dec is not None
    assert dec.notes == []
    assert dec.server == GREETING + EHLO_REPLY
    assert dec.client == b"EHLO portproof.invalid\r\n"
    if name is not None:
        from scanner.replay.tlsparse import cipher_name

        assert cipher_name(dec.cipher_code) == name
    if version == ssl.TLSVersion.TLSv1_3:
        # TLS 1.3 encrypts the certificate: it is read from the decrypted handshake
        assert dec.certificate_der is not None and b"tls-decrypt.test" in dec.certificate_der


def test_wrong_or_missing_secrets(cert_files: tuple[str, str], tmp_path: Path) -> None:
    for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
        sess = _session(cert_files, tmp_path, version, None if version == ssl.TLSVersion.TLSv1_3 else
                        "ECDHE-ECDSA-AES128-GCM-SHA256")
        other = _session(cert_files, tmp_path, version, None if version == ssl.TLSVersion.TLSv1_3 else
                         "ECDHE-ECDSA-AES128-GCM-SHA256")
        keys = KeyLog()
        keys.add_text(other.keylog)
        assert decrypt_connection(sess.side(True), sess.side(False), keys) is None  # not its secrets
        # the right client random with damaged secrets: nothing decrypts, and it says so
        cr = client_random(sess.side(True))
        assert cr is not None
        bad = KeyLog()
        bad.add_text(sess.keylog)
        entry = bad.keys[cr]
        for label in list(entry):
            entry[label] = bytes(b ^ 1 for b in entry[label])
        dec = decrypt_connection(sess.side(True), sess.side(False), bad)
        assert dec is not None and dec.client == dec.server == b"" and dec.notes


def test_damaged_streams_never_raise(cert_files: tuple[str, str], tmp_path: Path) -> None:
    """Cut or flipped bytes anywhere: decryption stops with a note (or finds nothing), never raises."""
    import random

    rng = random.Random(16)
    for version, ciphers in ((ssl.TLSVersion.TLSv1_3, None), (ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-SHA")):
        sess = _session(cert_files, tmp_path, version, ciphers)
        keys = KeyLog()
        keys.add_text(sess.keylog)
        cli, srv = sess.side(True), sess.side(False)
        for cut in range(0, len(srv), 37):
            dec = decrypt_connection(cli, srv[:cut], keys)
            assert dec is None or len(dec.server) <= len(GREETING + EHLO_REPLY)
        for _ in range(300):
            pos = rng.randrange(len(srv))
            bad = srv[:pos] + bytes([srv[pos] ^ (1 << rng.randrange(8))]) + srv[pos + 1 :]
            side = rng.random() < 0.5
            dec = decrypt_connection(bad if side else cli, srv if side else bad, keys)
            if dec is not None and dec.notes:
                assert all(isinstance(n, str) for n in dec.notes)
    assert decrypt_connection(b"\x16\x03\x01\xff\xff" + bytes(64), b"\x16\x03\x03\x00\x01\x02", KeyLog()) is None
    assert decrypt_connection(b"", b"", keys) is None


def test_hkdf_expand_label_rfc8448() -> None:
    # RFC 8448 §3 (simple 1-RTT handshake): the server's handshake traffic secret and the record
    # key and IV derived from it
    secret = bytes.fromhex("b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38")
    assert hkdf_expand_label(secret, "key", b"", 16, "sha256") == bytes.fromhex("3fce516009c21727d0f2e4e86ee403bc")
    assert hkdf_expand_label(secret, "iv", b"", 12, "sha256") == bytes.fromhex("5d313eb2671276ee13000b30")


def test_keylog_parsing_is_strict_and_bounded() -> None:
    keys = KeyLog()
    cr = "ab" * 32
    text = (
        "# comment\n"
        f"CLIENT_RANDOM {cr} {'11' * 48}\n"
        f"SERVER_TRAFFIC_SECRET_0 {cr} {'22' * 32}\n"
        f"EXPORTER_SECRET {cr} {'33' * 32}\n"  # not used for decryption: not kept
        "CLIENT_RANDOM zz 00\n"
        "\x1b[2Jgarbage\n"
    )
    assert keys.add_text(text) == 2
    assert keys.bad == 2
    assert keys.get(bytes.fromhex(cr)) == {"CLIENT_RANDOM": b"\x11" * 48, "SERVER_TRAFFIC_SECRET_0": b"\x22" * 32}


def test_dsb_round_trip_and_reader_hook(tmp_path: Path) -> None:
    text = b"CLIENT_RANDOM " + b"ab" * 32 + b" " + b"11" * 48 + b"\n"
    block = dsb_block(text)
    assert len(block) % 4 == 0 and block[:4] == b"\x0a\x00\x00\x00"
    assert parse_dsb(block[8:-4]) == text
    path = tmp_path / "k.pcapng"
    with PcapNgWriter(path) as w:
        w.write_secrets(text)
        TCPConversation(w, ("127.0.0.1", 40000), ("127.0.0.1", 443), ts=1.0).close(reset=True, ts=2.0)
        w.write_secrets(text.replace(b"ab", b"cd"))
    got: list[bytes] = []
    reader = CaptureReader(str(path), on_secrets=got.append)
    records = list(reader)
    assert reader.format == "pcapng" and reader.errors == []
    assert len(records) == 4 and records[0].ts == pytest.approx(1.0)
    assert got == [text, text.replace(b"ab", b"cd")]


def test_replay_decrypts_with_dsb_or_tls_keylog(cert_files: tuple[str, str], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from probes.smtp import SMTPProbe
    from scanner.cli import main

    sess = _session(cert_files, tmp_path, ssl.TLSVersion.TLSv1_3)
    plain, with_dsb = tmp_path / "plain.pcap", tmp_path / "dsb.pcapng"
    _write_capture(sess, plain)
    _write_capture(sess, with_dsb, secrets=sess.keylog)

    (without,) = replay_paths([str(plain)], [SMTPProbe()]).results
    assert without.service == "smtp" and without.product is None  # port inference only
    (res,) = replay_paths([str(with_dsb)], [SMTPProbe()]).results
    assert (res.service, res.product, res.verdict) == ("smtp", "Postfix", "identified")
    assert res.tls is not None and res.tls.mode == "implicit" and res.tls.version == "TLSv1.3"
    assert res.tls.certificate is not None  # from the decrypted TLS 1.3 handshake
    assert res.details["replay"]["tls_decrypted"]["server_records"] >= 3

    keyfile = tmp_path / "sslkeylog.txt"
    keyfile.write_bytes(sess.keylog)
    assert main(["replay", str(plain), "--tls-keylog", str(keyfile), "-o", "jsonl", "--probe", "smtp"]) == 0
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert (line["service"], line["product"]) == ("smtp", "Postfix")


def test_starttls_dialogue_continues_over_the_plaintext(cert_files: tuple[str, str], tmp_path: Path) -> None:
    """SMTP STARTTLS: the clear part, then the TLS session; with the keys, the reply to the
    EHLO sent inside TLS is read (here it is the only place that names the product)."""
    from probes.smtp import SMTPProbe

    sess = _session(cert_files, tmp_path, ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-CHACHA20-POLY1305",
                    messages=(b"", b"EHLO portproof.invalid\r\n", b"250-smtp.example.test\r\n250 8BITMIME\r\n"))
    path = tmp_path / "starttls.pcapng"
    with PcapNgWriter(path) as w:
        w.write_secrets(sess.keylog)
        conv = TCPConversation(w, ("127.0.0.1", 40200), ("127.0.0.1", 25), ts=1.0)
        conv.send(False, b"220 smtp.example.test ESMTP\r\n", ts=1.1)
        conv.send(True, b"EHLO portproof.invalid\r\n", ts=1.2)
        conv.send(False, b"250-smtp.example.test\r\n250-STARTTLS\r\n250 8BITMIME\r\n", ts=1.3)
        conv.send(True, b"STARTTLS\r\n", ts=1.4)
        conv.send(False, b"220 2.0.0 Ready to start TLS\r\n", ts=1.5)
        for from_client, data in sess.wire:
            conv.send(from_client, data, ts=1.6)
        conv.close(reset=True, ts=2.0)
    (res,) = replay_paths([str(path)], [SMTPProbe()]).results
    assert res.service == "smtp" and res.tls is not None and res.tls.mode == "starttls"
    assert res.details["replay"].get("tls_decrypted"), res.details["replay"]
    assert res.details["replay"].get("tls_decrypt_notes") is None
    # the EHLO reply inside TLS was read (it differs from the one in the clear)
    assert "8BITMIME" in res.details["extensions_tls"] and "STARTTLS" not in res.details["extensions_tls"]


def test_editcap_injected_secrets_are_read(cert_files: tuple[str, str], tmp_path: Path) -> None:
    """Wireshark's own writer of DSBs (``editcap --inject-secrets``) is read as ours is."""
    from probes.smtp import SMTPProbe

    if shutil.which("editcap") is None:
        pytest.skip("editcap (wireshark-common) not installed")
    sess = _session(cert_files, tmp_path, ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-GCM-SHA256")
    plain, injected, keyfile = tmp_path / "p.pcap", tmp_path / "i.pcapng", tmp_path / "keys.txt"
    _write_capture(sess, plain)
    keyfile.write_bytes(sess.keylog)
    subprocess.run(["editcap", "--inject-secrets", f"tls,{keyfile}", str(plain), str(injected)],
                   check=True, capture_output=True, timeout=60)
    (res,) = replay_paths([str(injected)], [SMTPProbe()]).results
    assert (res.service, res.product) == ("smtp", "Postfix")


def test_keylog_capture_stays_in_memory() -> None:
    cap = KeyLogCapture()
    try:
        if os.path.exists("/proc/self/fd"):
            assert cap.in_memory and cap.path.startswith("/proc/self/fd/")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.keylog_filename = cap.path  # OpenSSL appends there, as during --record
        with open(cap.path, "a") as f:
            f.write("CLIENT_RANDOM " + "ab" * 32 + " " + "11" * 48 + "\npartial")
        drained = cap.drain()
        assert drained.endswith(b"\n") and b"CLIENT_RANDOM" in drained and b"partial" not in drained
        assert cap.drain() == b""
        ctx.keylog_filename = None
    finally:
        cap.close()
    assert cap.drain() == b""


# ---------------------------------------------------------------- the real lab

LAB_TLS_PORTS = [25, 110, 119, 143, 379, 443, 465, 563, 636, 993, 995, 3269]


@pytest.mark.lab
def test_lab_recording_replays_inside_tls(lab: object, tmp_path: Path) -> None:
    """``--record`` keeps the keys: replay names each TLS port's product as the live scan did, and
    tshark decrypts the recording with the secrets it carries."""
    from scanner.engine import scan_sync
    from scanner.registry import load_probes

    recorded = tmp_path / "x.pcapng"
    rec = PcapRecorder(recorded)
    try:
        live = scan_sync(["127.0.0.1"], "T:" + ",".join(map(str, LAB_TLS_PORTS)), recorder=rec)
    finally:
        rec.close()
    assert recorded.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    live_tls = {r.port: r for r in live if r.tls is not None and r.tls.error is None}
    assert {465, 563, 636, 993, 995, 443, 3269} <= set(live_tls), sorted(live_tls)
    assert {p for p, r in live_tls.items() if r.tls and r.tls.mode == "starttls"} >= {25, 110, 143}
    report = replay_paths([str(recorded)], load_probes())
    assert report.errors == []
    got = {r.port: r for r in report.results}
    for port, r in live_tls.items():
        rep = got[port]
        assert (rep.service, rep.product, rep.version) == (r.service, r.product, r.version), port
        assert rep.tls is not None and rep.tls.mode == r.tls.mode, port  # type: ignore[union-attr]
        assert rep.details["replay"].get("tls_decrypted"), (port, rep.details["replay"])
        assert rep.tls.certificate is not None, port
        if r.tls.mode == "starttls":  # type: ignore[union-attr]
            # what the dialogue read after the upgrade, in the live scan and from the capture
            for key in ("extensions_tls", "auth_tls"):
                assert rep.details.get(key) == r.details.get(key), (port, key)
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    for proto, port in (("http", 443), ("imap", 993), ("pop", 995), ("smtp", 465), ("ldap", 636), ("smtp", 25)):
        out = subprocess.run(
            ["tshark", "-r", str(recorded), "-Y", f"tls && {proto} && tcp.port == {port}"],
            capture_output=True, timeout=120, check=True,
        ).stdout
        assert out.strip(), f"tshark shows no decrypted {proto} on port {port}"
