"""Decrypt a captured TLS connection with the secrets of an NSS key log, for replay.

Input: the two reassembled byte streams of one connection from its first TLS record (the client's
ClientHello, the server's ServerHello) and a :class:`~scanner.replay.keylog.KeyLog`. Output: the
application data each side sent, in order, so that replay can drive the probes' dialogues over
the plaintext as a live scan does after its handshake.

The connection is named by the ClientHello's random (RFC 8446 §4.1.2, bytes 11..43 of the
stream: record header 5, handshake header 4, legacy_version 2). The cipher suite and the version
come from the ServerHello (its ``supported_versions`` extension for TLS 1.3).

**TLS 1.3** (RFC 8446): per direction, the record keys are ``HKDF-Expand-Label(secret, "key", "",
key_len)`` and ``HKDF-Expand-Label(secret, "iv", "", 12)`` of the handshake traffic secret, then of
the application traffic secret (both from the key log); a KeyUpdate moves to
``HKDF-Expand-Label(secret, "traffic upd", "", hash_len)``. The nonce is the IV XOR the record's
sequence number (64 bits, left-padded); the additional data is the 5-byte record header; the
plaintext ends with the real content type followed by zero padding (§5.2, §5.3). Which key a
record needs is found by trying the current one, then the next (the AEAD tag tells), which covers
the switch after Finished and KeyUpdate without following the handshake state.

**TLS 1.2 and older** (RFC 5246 §6.3): ``key_block = PRF(master_secret, "key expansion",
server_random + client_random)`` cut into MAC keys, cipher keys and IVs (client first). The PRF
is P_SHA256 (P_SHA384 for the ``_SHA384`` suites), or for TLS 1.0/1.1 P_MD5 XOR P_SHA1 (RFC 2246
§5). Each direction's sequence numbers start at 0 after its ChangeCipherSpec. Supported:
AES-GCM (RFC 5288: 4-byte implicit salt + 8-byte explicit nonce), AES-CCM (RFC 6655), ChaCha20-
Poly1305 (RFC 7905: IV XOR sequence number), and AES/Camellia CBC with HMAC-SHA1/256/384 (explicit
IV from TLS 1.1; TLS 1.0's IV chaining; encrypt-then-MAC, RFC 7366, when the ServerHello has it).
The additional data of the AEADs and the MAC input are ``seq_num + type + version + length``.

Bounds: at most :data:`MAX_RECORDS` records and :data:`MAX_PLAINTEXT` bytes of plaintext per
direction; a record that does not decrypt ends that direction (with a note), never the replay.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from scanner.replay.keylog import KeyLog

__all__ = ["MAX_PLAINTEXT", "MAX_RECORDS", "Decrypted", "client_random", "decrypt_connection", "hkdf_expand_label"]

#: records decrypted per direction at most
MAX_RECORDS = 4096
#: plaintext bytes kept per direction at most (identification needs the first messages only)
MAX_PLAINTEXT = 1 << 20
_MAX_FRAGMENT = 16384 + 2048  # TLSCiphertext.length limit (RFC 5246 §6.2.3)
_HS_CLIENT_HELLO, _HS_SERVER_HELLO, _HS_CERTIFICATE = 1, 2, 11
_CT_CCS, _CT_ALERT, _CT_HANDSHAKE, _CT_APPDATA = 20, 21, 22, 23
#: ServerHello.random of a HelloRetryRequest (RFC 8446 §4.1.3)
_HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
_EXT_EXTENDED_MASTER, _EXT_ETM, _EXT_SUPPORTED_VERSIONS = 23, 22, 43
#: TLS 1.3 suites: hash, key length, AEAD ("gcm", "chacha", "ccm", "ccm8")
_TLS13_SUITES = {
    0x1301: ("sha256", 16, "gcm"),
    0x1302: ("sha384", 32, "gcm"),
    0x1303: ("sha256", 32, "chacha"),
    0x1304: ("sha256", 16, "ccm"),
    0x1305: ("sha256", 16, "ccm8"),
}


@dataclass
class Decrypted:
    """The plaintext of one TLS connection."""

    #: application data the client sent, in order
    client: bytes = b""
    #: application data the server sent, in order
    server: bytes = b""
    version: str = "?"
    cipher_code: int = 0
    #: the server's certificate read from the decrypted handshake (TLS 1.3 encrypts it)
    certificate_der: bytes | None = None
    #: records decrypted (client, server)
    records: tuple[int, int] = (0, 0)
    #: what stopped decryption early, if anything
    notes: list[str] = field(default_factory=list)


def hkdf_expand_label(secret: bytes, label: str, context: bytes, length: int, hash_name: str) -> bytes:
    """HKDF-Expand-Label of TLS 1.3 (RFC 8446 §7.1), with ``cryptography``'s HKDF-Expand."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

    full = b"tls13 " + label.encode()
    # struct HkdfLabel { uint16 length; opaque label<7..255>; opaque context<0..255>; }
    info = struct.pack("!HB", length, len(full)) + full + struct.pack("!B", len(context)) + context
    algo: hashes.HashAlgorithm = hashes.SHA384() if hash_name == "sha384" else hashes.SHA256()
    return HKDFExpand(algorithm=algo, length=length, info=info).derive(secret)


def _records(stream: bytes) -> Iterator[tuple[int, int, bytes, bytes]]:
    """(content type, version, header, fragment) of each complete record at the stream's start."""
    pos = 0
    for _ in range(MAX_RECORDS * 2):
        if pos + 5 > len(stream):
            return
        ctype, version, length = struct.unpack_from("!BHH", stream, pos)
        if ctype not in (_CT_CCS, _CT_ALERT, _CT_HANDSHAKE, _CT_APPDATA, 24) or version >> 8 != 3:
            return
        if length > _MAX_FRAGMENT or pos + 5 + length > len(stream):
            return
        yield ctype, version, stream[pos : pos + 5], stream[pos + 5 : pos + 5 + length]
        pos += 5 + length


def client_random(client: bytes) -> bytes | None:
    """The ClientHello's random at the start of a client stream (None when it is no ClientHello)."""
    if len(client) >= 43 and client[0] == _CT_HANDSHAKE and client[5] == _HS_CLIENT_HELLO:
        return client[11:43]
    return None


@dataclass
class _Hello:
    random: bytes
    suite: int
    version: int
    extensions: set[int]


def _server_hello(server: bytes) -> _Hello | None:
    """The ServerHello that settled the connection (after any HelloRetryRequest)."""
    buf = b""
    found: _Hello | None = None
    for ctype, _v, _h, frag in _records(server):
        if ctype == _CT_CCS or ctype == _CT_APPDATA:
            break
        if ctype != _CT_HANDSHAKE:
            continue
        buf += frag
        while len(buf) >= 4:
            mlen = int.from_bytes(buf[1:4], "big")
            if len(buf) < 4 + mlen:
                break
            mtype, body = buf[0], buf[4 : 4 + mlen]
            buf = buf[4 + mlen :]
            if mtype == _HS_SERVER_HELLO:
                hello = _parse_server_hello(body)
                if hello is not None and hello.random != _HRR_RANDOM:
                    found = hello
                    if hello.version == 0x0304:
                        return found  # what follows is encrypted
        if len(buf) > 1 << 18:
            break
    return found


def _parse_server_hello(body: bytes) -> _Hello | None:
    # legacy_version(2) random(32) session_id<0..32> cipher_suite(2) compression(1) extensions<..>
    if len(body) < 38:
        return None
    version = int.from_bytes(body[:2], "big")
    rnd = body[2:34]
    pos = 35 + body[34]
    if pos + 3 > len(body):
        return None
    suite = int.from_bytes(body[pos : pos + 2], "big")
    pos += 3
    exts: set[int] = set()
    if pos + 2 <= len(body):
        end = min(len(body), pos + 2 + int.from_bytes(body[pos : pos + 2], "big"))
        pos += 2
        while pos + 4 <= end:
            etype, elen = struct.unpack_from("!HH", body, pos)
            if etype == _EXT_SUPPORTED_VERSIONS and elen == 2:
                version = int.from_bytes(body[pos + 4 : pos + 6], "big")
            exts.add(etype)
            pos += 4 + elen
    return _Hello(rnd, suite, version, exts)


class _AEAD(Protocol):
    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes: ...


def _aead(kind: str, key: bytes) -> _AEAD:
    from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305

    if kind == "gcm":
        return AESGCM(key)
    if kind == "chacha":
        return ChaCha20Poly1305(key)
    return AESCCM(key, tag_length=8 if kind == "ccm8" else 16)


def _xor_seq(iv: bytes, seq: int) -> bytes:
    return (int.from_bytes(iv, "big") ^ seq).to_bytes(len(iv), "big")


class _Sink:
    """Plaintext of one direction, bounded."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.handshake = bytearray()
        self.records = 0

    def add(self, ctype: int, data: bytes) -> bool:
        """Keep application data (and handshake bytes); False once the bound is reached."""
        self.records += 1
        if ctype == _CT_APPDATA:
            self.data += data[: MAX_PLAINTEXT - len(self.data)]
        elif ctype == _CT_HANDSHAKE and len(self.handshake) < MAX_PLAINTEXT:
            self.handshake += data
        return len(self.data) < MAX_PLAINTEXT and self.records < MAX_RECORDS


# ----------------------------------------------------------------------------- TLS 1.3


def _tls13_direction(stream: bytes, secret: bytes, suite: tuple[str, int, str], app: bytes | None,
                     sink: _Sink, notes: list[str], side: str) -> None:
    hash_name, key_len, kind = suite
    hlen = 48 if hash_name == "sha384" else 32
    # the secrets in the order the records use them: handshake, application 0, 1 (KeyUpdate), ...
    secrets = [secret] + ([app] if app is not None else [])

    def keys(s: bytes) -> tuple[_AEAD, bytes]:
        return _aead(kind, hkdf_expand_label(s, "key", b"", key_len, hash_name)), hkdf_expand_label(
            s, "iv", b"", 12, hash_name)

    current = 0
    aead, iv = keys(secrets[0])
    seq = 0
    for ctype, _v, header, frag in _records(stream):
        if ctype != _CT_APPDATA:
            continue  # ClientHello/ServerHello, the compatibility ChangeCipherSpec, a plain alert
        plain = None
        for step in range(3):  # this key, then the next one or two (Finished, KeyUpdate)
            if step:
                if current + 1 >= len(secrets):
                    if current == 0:
                        break
                    secrets.append(hkdf_expand_label(secrets[-1], "traffic upd", b"", hlen, hash_name))
                current += 1
                aead, iv = keys(secrets[current])
                seq = 0
            try:
                plain = aead.decrypt(_xor_seq(iv, seq), frag, header)
                break
            except Exception:  # cryptography's InvalidTag
                continue
        if plain is None:
            notes.append(f"{side}: a record did not decrypt with the logged secrets")
            return
        seq += 1
        inner = plain.rstrip(b"\x00")
        if not inner:
            continue
        if not sink.add(inner[-1], inner[:-1]):
            return


# ----------------------------------------------------------------------------- TLS 1.2 and older


@dataclass(frozen=True)
class _Suite12:
    kind: str  # gcm, ccm, ccm8, chacha, cbc
    key_len: int
    fixed_iv: int
    mac: str | None  # hash of the HMAC (cbc) or None
    prf: str  # sha256 or sha384
    algo: str = "aes"  # aes or camellia (cbc)


def _suite12(code: int) -> _Suite12 | None:
    """The record protection of a TLS 1.2 cipher suite, read from its IANA name."""
    from scanner.replay.tlsparse import cipher_name

    name = cipher_name(code)
    if "_WITH_" not in name:
        return None
    enc = name.split("_WITH_", 1)[1]
    prf = "sha384" if enc.endswith("_SHA384") else "sha256"
    if enc.startswith("CHACHA20_POLY1305"):
        return _Suite12("chacha", 32, 12, None, prf)
    for algo in ("AES", "CAMELLIA"):
        for bits in (128, 256):
            head = f"{algo}_{bits}_"
            if not enc.startswith(head):
                continue
            mode = enc[len(head) :]
            if mode.startswith("GCM") and algo == "AES":
                return _Suite12("gcm", bits // 8, 4, None, prf)
            if mode in ("CCM", "CCM_8") and algo == "AES":
                return _Suite12("ccm8" if mode == "CCM_8" else "ccm", bits // 8, 4, None, prf)
            if mode.startswith("CBC_"):
                mac = {"CBC_SHA": "sha1", "CBC_SHA256": "sha256", "CBC_SHA384": "sha384"}.get(mode)
                if mac is not None:
                    return _Suite12("cbc", bits // 8, 16, mac, prf, algo.lower())
    return None


def _p_hash(hash_name: str, secret: bytes, seed: bytes, length: int) -> bytes:
    out, a = b"", seed
    while len(out) < length:
        a = hmac.new(secret, a, hash_name).digest()
        out += hmac.new(secret, a + seed, hash_name).digest()
    return out[:length]


def _prf(version: int, hash_name: str, secret: bytes, label: bytes, seed: bytes, length: int) -> bytes:
    if version >= 0x0303:
        return _p_hash(hash_name, secret, label + seed, length)
    # TLS 1.0/1.1: P_MD5 over the first half of the secret XOR P_SHA1 over the second half
    half = (len(secret) + 1) // 2
    md5 = _p_hash("md5", secret[:half], label + seed, length)
    sha = _p_hash("sha1", secret[len(secret) - half :], label + seed, length)
    return bytes(x ^ y for x, y in zip(md5, sha, strict=True))


class _Cbc:
    """One direction of a CBC suite (TLS 1.0 IV chaining, explicit IVs from TLS 1.1, RFC 7366)."""

    def __init__(self, suite: _Suite12, key: bytes, iv: bytes, mac_key: bytes, version: int, etm: bool) -> None:
        from cryptography.hazmat.primitives.ciphers import algorithms

        try:  # Camellia moved to the "decrepit" module in cryptography 43
            from cryptography.hazmat.decrepit.ciphers.algorithms import Camellia
        except ImportError:
            Camellia = algorithms.Camellia  # type: ignore[misc]
        self.algo = Camellia(key) if suite.algo == "camellia" else algorithms.AES(key)
        self.iv, self.mac_key, self.mac = iv, mac_key, suite.mac or "sha1"
        self.mac_len = hashlib.new(self.mac).digest_size
        self.version, self.etm = version, etm

    def _decrypt(self, iv: bytes, data: bytes) -> bytes:
        from cryptography.hazmat.primitives.ciphers import Cipher, modes

        d = Cipher(self.algo, modes.CBC(iv)).decryptor()
        return d.update(data) + d.finalize()

    def open(self, seq: int, ctype: int, version: int, frag: bytes) -> bytes | None:
        explicit = self.version >= 0x0302
        if self.etm:
            body, tag = frag[: -self.mac_len], frag[-self.mac_len :]
            want = hmac.new(self.mac_key, struct.pack("!QBHH", seq, ctype, version, len(body)) + body, self.mac)
            if len(body) < 16 or len(body) % 16 or not hmac.compare_digest(want.digest(), tag):
                return None
            iv, data = (body[:16], body[16:]) if explicit else (self.iv, body)
            self.iv = body[-16:]
            plain = self._decrypt(iv, data)
            pad = plain[-1] if plain else 0
            return plain[: len(plain) - pad - 1] if pad + 1 <= len(plain) else None
        if len(frag) < 16 or len(frag) % 16:
            return None
        iv, data = (frag[:16], frag[16:]) if explicit else (self.iv, frag)
        self.iv = frag[-16:]
        plain = self._decrypt(iv, data)
        pad = plain[-1] if plain else 0
        if pad + 1 + self.mac_len > len(plain):
            return None
        end = len(plain) - pad - 1 - self.mac_len  # content, MAC, padding, padding length
        content, tag = plain[:end], plain[end : end + self.mac_len]
        want = hmac.new(self.mac_key, struct.pack("!QBHH", seq, ctype, version, len(content)) + content, self.mac)
        return content if hmac.compare_digest(want.digest(), tag) else None


def _tls12_direction(stream: bytes, suite: _Suite12, key: bytes, iv: bytes, mac_key: bytes, version: int,
                     etm: bool, sink: _Sink, notes: list[str], side: str) -> None:
    tag = 8 if suite.kind == "ccm8" else 16
    cbc = _Cbc(suite, key, iv, mac_key, version, etm) if suite.kind == "cbc" else None
    aead = _aead(suite.kind, key) if cbc is None else None
    active = False
    seq = 0
    for ctype, rversion, _h, frag in _records(stream):
        if ctype == _CT_CCS:
            active, seq = True, 0
            continue
        if not active:
            continue  # the handshake before ChangeCipherSpec is in the clear
        plain: bytes | None = None
        try:
            if cbc is not None:
                plain = cbc.open(seq, ctype, rversion, frag)
            elif aead is None:
                plain = None
            elif suite.kind == "chacha":
                aad = struct.pack("!QBHH", seq, ctype, rversion, len(frag) - tag)
                plain = aead.decrypt(_xor_seq(iv, seq), frag, aad)
            elif len(frag) >= 8 + tag:
                aad = struct.pack("!QBHH", seq, ctype, rversion, len(frag) - 8 - tag)
                plain = aead.decrypt(iv + frag[:8], frag[8:], aad)
        except Exception:  # InvalidTag, a bad length
            plain = None
        if plain is None:
            notes.append(f"{side}: record {sink.records + 1} did not decrypt with the logged master secret")
            return
        seq += 1
        if not sink.add(ctype, plain):
            return


# ----------------------------------------------------------------------------- the connection


def decrypt_connection(client: bytes, server: bytes, keylog: KeyLog) -> Decrypted | None:
    """Decrypt one connection; None when the key log has no secrets for it or its cipher suite is
    not supported (the caller then reports the TLS facts only, as without keys).

    ``client`` and ``server`` start with the first TLS record of each side (ClientHello and
    ServerHello).
    """
    from scanner.replay.tlsparse import version_name

    cr = client_random(client)
    if cr is None:
        return None
    secrets = keylog.get(cr)
    hello = _server_hello(server)
    if secrets is None or hello is None:
        return None
    out = Decrypted(version=version_name(hello.version), cipher_code=hello.suite)
    csink, ssink = _Sink(), _Sink()
    if hello.version == 0x0304:
        suite = _TLS13_SUITES.get(hello.suite)
        chs, shs = secrets.get("CLIENT_HANDSHAKE_TRAFFIC_SECRET"), secrets.get("SERVER_HANDSHAKE_TRAFFIC_SECRET")
        if suite is None or chs is None or shs is None:
            return None
        _tls13_direction(client, chs, suite, secrets.get("CLIENT_TRAFFIC_SECRET_0"), csink, out.notes, "client")
        _tls13_direction(server, shs, suite, secrets.get("SERVER_TRAFFIC_SECRET_0"), ssink, out.notes, "server")
        out.certificate_der = _tls13_certificate(bytes(ssink.handshake))
    else:
        master = secrets.get("CLIENT_RANDOM")
        s12 = _suite12(hello.suite)
        if master is None or s12 is None:
            return None
        mac_len = 0 if s12.mac is None else hashlib.new(s12.mac).digest_size
        iv_len = s12.fixed_iv if s12.kind != "cbc" else 16
        need = 2 * (mac_len + s12.key_len + iv_len)
        block = _prf(hello.version, s12.prf, master, b"key expansion", hello.random + cr, need)
        # client MAC, server MAC, client key, server key, client IV, server IV (RFC 5246 §6.3)
        cmac, smac = block[:mac_len], block[mac_len : 2 * mac_len]
        p = 2 * mac_len
        ckey, skey = block[p : p + s12.key_len], block[p + s12.key_len : p + 2 * s12.key_len]
        p += 2 * s12.key_len
        civ, siv = block[p : p + iv_len], block[p + iv_len : p + 2 * iv_len]
        etm = _EXT_ETM in hello.extensions and s12.kind == "cbc"
        _tls12_direction(client, s12, ckey, civ, cmac, hello.version, etm, csink, out.notes, "client")
        _tls12_direction(server, s12, skey, siv, smac, hello.version, etm, ssink, out.notes, "server")
    out.client, out.server = bytes(csink.data), bytes(ssink.data)
    out.records = (csink.records, ssink.records)
    return out


def _tls13_certificate(handshake: bytes) -> bytes | None:
    """The first certificate of a TLS 1.3 Certificate message in decrypted handshake bytes."""
    pos = 0
    for _ in range(64):
        if pos + 4 > len(handshake):
            return None
        mtype, mlen = handshake[pos], int.from_bytes(handshake[pos + 1 : pos + 4], "big")
        body = handshake[pos + 4 : pos + 4 + mlen]
        pos += 4 + mlen
        if mtype != _HS_CERTIFICATE or len(body) < 4:
            continue
        # certificate_request_context<0..255>, certificate_list<0..2^24-1>, each entry:
        # cert_data<1..2^24-1>, extensions<0..2^16-1> (RFC 8446 §4.4.2)
        p = 1 + body[0] + 3
        if p + 3 > len(body):
            return None
        clen = int.from_bytes(body[p : p + 3], "big")
        der = body[p + 3 : p + 3 + clen]
        return der if len(der) == clen and clen else None
    return None
