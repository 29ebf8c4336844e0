"""TLS facts from the bytes of a captured handshake: ServerHello, and the certificate up to TLS 1.2.

Written here rather than with scapy's TLS layer: scapy's ``TLS`` dissector wants a session to
follow, is slow to import (about a second) and raises on the truncated or partial handshakes that
captures hold. Only the record and handshake headers are decoded (RFC 8446 §5.1 and §4); cipher
suite names come from scapy's table (read from its source: :func:`suite_names`), and certificates are parsed with
``cryptography`` (through :func:`scanner.certs.cert_facts`, the function the live engine uses).
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path

from scanner.results import CertFacts

__all__ = [
    "ServerTLS",
    "cert_facts_from_der",
    "cipher_name",
    "suite_names",
    "find_server_hello",
    "looks_like_client_hello",
    "looks_like_tls_record",
    "parse_server_tls",
    "version_name",
]

_CONTENT_HANDSHAKE = 22
_CONTENT_CCS = 20
_CONTENT_ALERT = 21
_CONTENT_APPDATA = 23
_HS_SERVER_HELLO = 2
_HS_CERTIFICATE = 11
_EXT_ALPN = 16
_EXT_SUPPORTED_VERSIONS = 43
#: handshake bytes gathered at most (a certificate chain is rarely above 16 KiB)
MAX_HANDSHAKE = 128 * 1024
MAX_RECORDS = 256
MAX_CERTS = 16

_VERSIONS = {
    0x0300: "SSLv3",
    0x0301: "TLSv1",
    0x0302: "TLSv1.1",
    0x0303: "TLSv1.2",
    0x0304: "TLSv1.3",
}


def cert_facts_from_der(der: bytes) -> CertFacts | None:
    """Parse a DER certificate into :class:`CertFacts` (None when it is not a certificate)."""
    from scanner.certs import cert_facts

    try:
        return cert_facts(der)
    except Exception:  # cryptography raises ValueError and others on malformed DER
        return None


def cipher_name(code: int) -> str:
    """The IANA name of a cipher suite (``TLS_AES_128_GCM_SHA256``), or its hex code."""
    name = suite_names().get(code)
    return str(name) if name else f"0x{code:04x}"


@functools.cache
def suite_names() -> dict[int, str]:
    """scapy's table of cipher suite names (``_tls_cipher_suites``: code -> name).

    Importing ``scapy.layers.tls.crypto.suites`` costs about 0.4 s (it pulls in scapy's TLS
    session, its IP layers and the kernel's routing table), most of a small replay's run. The
    table is the names of the module's cipher suite classes (their ``val``) plus two signalling
    values assigned by subscript, so it is read from the installed module's source with
    :mod:`ast` instead (about 5 ms), and imported only when that finds nothing.
    """
    mod = sys.modules.get(_SUITES)
    if mod is not None:
        return dict(mod._tls_cipher_suites)
    try:
        got = _suite_names_from_source()
    except (OSError, SyntaxError, ValueError):
        got = {}
    if got:
        return got
    try:
        from scapy.layers.tls.crypto.suites import _tls_cipher_suites
    except Exception:  # scapy without its TLS tables
        return {}
    return dict(_tls_cipher_suites)


_SUITES = "scapy.layers.tls.crypto.suites"


def _suite_names_from_source() -> dict[int, str]:
    """The table of :func:`suite_names` from the source of scapy's suites module, not imported."""
    spec = importlib.util.find_spec("scapy")  # a top-level spec: imports nothing
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations)), "layers", "tls", "crypto", "suites.py")
    tree = ast.parse(path.read_bytes(), str(path))
    out: dict[int, str] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name != "_GenericCipherSuite":
            # class TLS_..._SHA256(_GenericCipherSuite): val = 0x1301 (registered by its metaclass)
            for item in node.body:
                if (
                    isinstance(item, ast.Assign)
                    and [t.id for t in item.targets if isinstance(t, ast.Name)] == ["val"]
                    and isinstance(item.value, ast.Constant)
                    and type(item.value.value) is int
                ):
                    out[item.value.value] = node.name
        elif (
            # _tls_cipher_suites[0x00ff] = "TLS_EMPTY_RENEGOTIATION_INFO_SCSV"
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Subscript)
            and isinstance(node.targets[0].value, ast.Name)
            and node.targets[0].value.id == "_tls_cipher_suites"
            and isinstance(node.targets[0].slice, ast.Constant)
            and type(node.targets[0].slice.value) is int
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            out[node.targets[0].slice.value] = node.value.value
    return out


def looks_like_tls_record(buf: bytes, any_type: bool = False) -> bool:
    """True when ``buf`` starts with a plausible TLS record header.

    Only handshake and alert records by default; ``any_type`` also accepts ChangeCipherSpec and
    application data (a flow captured after its handshake).
    """
    types = (
        (_CONTENT_CCS, _CONTENT_ALERT, _CONTENT_HANDSHAKE, _CONTENT_APPDATA)
        if any_type
        else (
            _CONTENT_HANDSHAKE,
            _CONTENT_ALERT,
        )
    )
    return (
        len(buf) >= 5
        and buf[0] in types
        and buf[1] == 3
        and buf[2] <= 4
        and 0 < int.from_bytes(buf[3:5], "big") <= 16384 + 2048
    )


def looks_like_client_hello(buf: bytes) -> bool:
    """True when ``buf`` starts with a TLS record holding a ClientHello."""
    return looks_like_tls_record(buf) and buf[0] == _CONTENT_HANDSHAKE and len(buf) >= 6 and buf[5] == 1


@dataclass(slots=True)
class ServerTLS:
    """What the server's side of a captured handshake shows."""

    #: "TLSv1.2", "TLSv1.3", ... (the supported_versions extension wins over the legacy field)
    version: str | None = None
    cipher: str | None = None
    alpn: str | None = None
    #: DER certificates of the chain, leaf first (empty for TLS 1.3: encrypted)
    certificates: list[bytes] = field(default_factory=list)
    #: the server answered with an alert instead of a ServerHello
    alert: str | None = None
    #: why something is missing (TLS 1.3 certificate encrypted, handshake cut short, ...)
    note: str | None = None

    @property
    def ok(self) -> bool:
        """A ServerHello was found."""
        return self.version is not None


def _handshake_bytes(buf: bytes) -> tuple[bytes, str | None]:
    """Concatenate the payload of the leading handshake records; also report an alert."""
    out = bytearray()
    pos = 0
    alert = None
    for _ in range(MAX_RECORDS):
        if pos + 5 > len(buf) or len(out) >= MAX_HANDSHAKE:
            break
        ctype = buf[pos]
        length = int.from_bytes(buf[pos + 3 : pos + 5], "big")
        if buf[pos + 1] != 3 or length > 16384 + 2048:
            break
        body = buf[pos + 5 : pos + 5 + length]
        if ctype == _CONTENT_HANDSHAKE:
            out += body
        elif ctype == _CONTENT_ALERT:
            if len(body) >= 2:
                alert = f"level {body[0]} description {body[1]}"
            break
        else:
            break  # ChangeCipherSpec or application data: the clear handshake is over
        pos += 5 + length
    return bytes(out), alert


def _parse_server_hello(body: bytes, facts: ServerTLS) -> None:
    # legacy_version(2) random(32) session_id<0..32> cipher_suite(2) compression(1) extensions<..>
    if len(body) < 38:
        facts.note = "ServerHello cut short"
        return
    version = int.from_bytes(body[0:2], "big")
    sid_len = body[34]
    pos = 35 + sid_len
    if pos + 3 > len(body):
        facts.note = "ServerHello cut short"
        facts.version = version_name(version)
        return
    facts.cipher = cipher_name(int.from_bytes(body[pos : pos + 2], "big"))
    pos += 3
    if pos + 2 <= len(body):
        ext_end = min(len(body), pos + 2 + int.from_bytes(body[pos : pos + 2], "big"))
        pos += 2
        while pos + 4 <= ext_end:
            etype = int.from_bytes(body[pos : pos + 2], "big")
            elen = int.from_bytes(body[pos + 2 : pos + 4], "big")
            data = body[pos + 4 : pos + 4 + elen]
            if etype == _EXT_SUPPORTED_VERSIONS and len(data) == 2:
                version = int.from_bytes(data, "big")
            elif etype == _EXT_ALPN and len(data) >= 3:
                # protocol_name_list<2..> of one opaque<1..255>
                n = data[2]
                facts.alpn = data[3 : 3 + n].decode("ascii", "replace")
            pos += 4 + elen
    facts.version = version_name(version)


def version_name(code: int) -> str:
    """``TLSv1.2`` for 0x0303; TLS 1.3 drafts (0x7fNN) read ``TLSv1.3 (draft NN)``."""
    if code >> 8 == 0x7F:
        return f"TLSv1.3 (draft {code & 0xFF})"
    return _VERSIONS.get(code, f"0x{code:04x}")


def _parse_certificate(body: bytes, facts: ServerTLS) -> None:
    # certificate_list<0..2^24-1> of ASN.1Cert<1..2^24-1>  (TLS 1.2 layout)
    if len(body) < 3:
        return
    end = min(len(body), 3 + int.from_bytes(body[0:3], "big"))
    pos = 3
    while pos + 3 <= end and len(facts.certificates) < MAX_CERTS:
        n = int.from_bytes(body[pos : pos + 3], "big")
        der = body[pos + 3 : pos + 3 + n]
        if len(der) < n:
            facts.note = "certificate cut short in the capture"
            break
        facts.certificates.append(der)
        pos += 3 + n


def parse_server_tls(buf: bytes) -> ServerTLS:
    """Read the server's handshake from the start of ``buf`` (the server->client byte stream).

    Never raises: what cannot be read is left None and explained in ``note``.
    """
    facts = ServerTLS()
    hs, facts.alert = _handshake_bytes(buf)
    pos = 0
    seen_hello = False
    for _ in range(64):
        if pos + 4 > len(hs):
            break
        htype = hs[pos]
        hlen = int.from_bytes(hs[pos + 1 : pos + 4], "big")
        body = hs[pos + 4 : pos + 4 + hlen]
        if htype == _HS_SERVER_HELLO and not seen_hello:
            seen_hello = True
            _parse_server_hello(body, facts)
            if facts.version is not None and facts.version.startswith("TLSv1.3"):
                facts.note = "TLS 1.3: the certificate is encrypted and cannot be read from a capture"
                break
        elif htype == _HS_CERTIFICATE and seen_hello:
            _parse_certificate(body, facts)
            break
        if len(body) < hlen:
            if facts.note is None:
                facts.note = "handshake cut short in the capture"
            break
        pos += 4 + hlen
    if not seen_hello and facts.note is None:
        facts.note = "no ServerHello in the captured bytes" + (f" (alert {facts.alert})" if facts.alert else "")
    return facts


def find_server_hello(buf: bytes, limit: int = 64 * 1024) -> int:
    """Offset of the first TLS record holding a ServerHello in ``buf`` (-1 if none).

    Used on STARTTLS flows: the text protocol never sends byte 0x16, so the first handshake record
    header after the text is where TLS begins.
    """
    pos = 0
    for _ in range(256):
        pos = buf.find(b"\x16\x03", pos, limit)
        if pos < 0:
            return -1
        if looks_like_tls_record(buf[pos : pos + 5]) and buf[pos + 5 : pos + 6] == b"\x02":
            return pos
        pos += 1
    return -1
