"""Kerberos and kpasswd wire format: the requests the probes send, the framers (TCP 4-byte length
prefix, UDP datagrams) and the parsers of the replies. Part of the :mod:`probes.kerberos` package
(what is sent and collected is described there).

ASN.1 is built and decoded with scapy's Kerberos layer (``scapy.layers.kerberos``: RFC 4120
KRB_AS_REQ, KRB_ERROR, KRB_AS_REP/KRB_TGS_REP), imported lazily (scapy takes ~0.6 s to import).
scapy decodes a KRB-ERROR's e-data by the error code and gives up on the whole message when a
server's e-data does not fit the structure it expects; the probe therefore decodes KRB-ERROR with a
twin of scapy's class whose e-data stays an OCTET STRING, and decodes the e-data itself (METHOD-DATA,
MS-KILE KERB-ERROR-DATA or RFC 3244 result code), each in its own guard. Framing is plain
``struct`` work: it runs on every received byte and must stay cheap and strictly bounded.
"""

from __future__ import annotations

import functools
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from scanner.api import NotThisProtocol, prefix_framer
from scanner.textproto import decode_text

__all__ = [
    "ERROR_NAMES",
    "ETYPE_NAMES",
    "KDC_REPLY_TAGS",
    "KPASSWD_RESULTS",
    "MAX_MESSAGE",
    "KdcReply",
    "KpasswdReply",
    "KrbError",
    "build_as_req",
    "build_kpasswd_probe",
    "frame_kdc_tcp",
    "frame_kdc_udp",
    "frame_kpasswd_tcp",
    "frame_kpasswd_udp",
    "parse_kdc_message",
    "parse_kpasswd_reply",
    "parse_krb_error",
    "tcp_wrap",
]

#: the largest Kerberos message the framers accept. A KRB-ERROR is a few hundred bytes; an AS-REP
#: or TGS-REP (seen in replays) carries a ticket with an AD PAC, commonly 1-20 KiB. RFC 4120
#: 7.2.2 lets a KDC refuse long requests; a reply announcing more than this is not one we read.
MAX_MESSAGE = 256 * 1024

#: first byte of a KDC's reply: the DER identifier of [APPLICATION n] (constructed: 0x60 | n):
#: AS-REP 11 (0x6b), TGS-REP 13 (0x6d), KRB-ERROR 30 (0x7e) (RFC 4120 5.4.2 and 5.9.1)
KDC_REPLY_TAGS = frozenset({0x6B, 0x6D, 0x7E})
_TAG_AS_REP, _TAG_TGS_REP, _TAG_KRB_ERROR = 0x6B, 0x6D, 0x7E
#: KRB-PRIV [APPLICATION 21] and AP-REP [APPLICATION 15]: a kpasswd success reply (RFC 3244 2)
_TAG_KRB_PRIV, _TAG_AP_REP = 0x75, 0x6F
#: kpasswd protocol versions (RFC 3244 2: 0xff80 set-password, 1 the older change-password; the
#: reply carries 1)
KPASSWD_VERSIONS = frozenset({0x0001, 0xFF80})
_KPASSWD_HEADER = 6

#: error codes of RFC 4120 7.5.9 (and RFC 6113) the probe reports by name
ERROR_NAMES: dict[int, str] = {
    2: "KDC_ERR_SERVICE_EXP",
    3: "KDC_ERR_BAD_PVNO",
    6: "KDC_ERR_C_PRINCIPAL_UNKNOWN",
    7: "KDC_ERR_S_PRINCIPAL_UNKNOWN",
    8: "KDC_ERR_PRINCIPAL_NOT_UNIQUE",
    12: "KDC_ERR_POLICY",
    13: "KDC_ERR_BADOPTION",
    14: "KDC_ERR_ETYPE_NOSUPP",
    16: "KDC_ERR_PADATA_TYPE_NOSUPP",
    18: "KDC_ERR_CLIENT_REVOKED",
    23: "KDC_ERR_KEY_EXPIRED",
    24: "KDC_ERR_PREAUTH_FAILED",
    25: "KDC_ERR_PREAUTH_REQUIRED",
    29: "KDC_ERR_SVC_UNAVAILABLE",
    37: "KRB_AP_ERR_SKEW",
    41: "KRB_AP_ERR_MODIFIED",
    52: "KRB_ERR_RESPONSE_TOO_BIG",
    60: "KRB_ERR_GENERIC",
    61: "KRB_ERR_FIELD_TOOLONG",
    68: "KDC_ERR_WRONG_REALM",
}

#: encryption types (RFC 3961/3962/4757/8009 and the IANA registry)
ETYPE_NAMES: dict[int, str] = {
    1: "des-cbc-crc",
    3: "des-cbc-md5",
    16: "des3-cbc-sha1",
    17: "aes128-cts-hmac-sha1-96",
    18: "aes256-cts-hmac-sha1-96",
    19: "aes128-cts-hmac-sha256-128",
    20: "aes256-cts-hmac-sha384-192",
    23: "rc4-hmac",
    24: "rc4-hmac-exp",
    25: "camellia128-cts-cmac",
    26: "camellia256-cts-cmac",
}

#: kpasswd result codes (RFC 3244 2)
KPASSWD_RESULTS: dict[int, str] = {
    0: "KRB5_KPASSWD_SUCCESS",
    1: "KRB5_KPASSWD_MALFORMED",
    2: "KRB5_KPASSWD_HARDERROR",
    3: "KRB5_KPASSWD_AUTHERROR",
    4: "KRB5_KPASSWD_SOFTERROR",
    5: "KRB5_KPASSWD_ACCESSDENIED",
    6: "KRB5_KPASSWD_BAD_VERSION",
    7: "KRB5_KPASSWD_INITIAL_FLAG_NEEDED",
}

#: PA-DATA types named in details (RFC 4120 7.5.2, RFC 4556, RFC 6113, MS-KILE, Heimdal)
PADATA_NAMES: dict[int, str] = {
    2: "PA-ENC-TIMESTAMP",
    3: "PA-PW-SALT",
    11: "PA-ETYPE-INFO",
    15: "PA-PK-AS-REP_OLD",
    16: "PA-PK-AS-REQ",
    19: "PA-ETYPE-INFO2",
    133: "PA-FX-COOKIE",
    136: "PA-FX-FAST",
    138: "PA-ENCRYPTED-CHALLENGE",
    147: "PA-PKINIT-KX",
    149: "PA-REQ-ENC-PA-REP",
    150: "PA-AS-FRESHNESS",
    151: "PA-SPAKE",
    165: "PA-SUPPORTED-ENCTYPES",
    655: "PA-GSS",
}

#: at most this many PA-DATA / ETYPE-INFO2 entries are kept from one e-data
_MAX_ENTRIES = 32
#: text fields (e-text, names, result strings) are cut to this many characters
_MAX_TEXT = 256

#: the ticket lifetime every AS-REQ asks (the far date Windows and MIT clients send)
_TILL = "20370913024805Z"


# ------------------------------------------------------------------------------------ scapy


@functools.cache
def _scapy() -> Any:
    """scapy's Kerberos layer (imported on first use: it pulls in all of scapy)."""
    import scapy.layers.kerberos as krb

    return krb


@functools.cache
def _error_class() -> Any:
    """A twin of scapy's ``KRB_ERROR`` whose e-data ([12] OCTET STRING) is not decoded further."""
    from scapy.asn1.asn1 import ASN1_Codecs
    from scapy.asn1fields import ASN1F_SEQUENCE, ASN1F_STRING, ASN1F_optional
    from scapy.asn1packet import ASN1_Packet

    krb = _scapy()
    inner = krb.KRB_ERROR.ASN1_root.seq[0]
    names = [f.name for f in inner.seq]
    if names[-1] != "eData":  # pragma: no cover  (a scapy that changed the layout)
        raise RuntimeError(f"unexpected scapy KRB_ERROR layout: {names}")
    fields = [*inner.seq[:-1], ASN1F_optional(ASN1F_STRING("eData", None, explicit_tag=0xAC))]

    class KrbErrorRawEData(ASN1_Packet):
        """KRB-ERROR (RFC 4120 5.9.1) with the e-data kept as bytes."""

        ASN1_codec = ASN1_Codecs.BER  # type: ignore[assignment]  # scapy annotates it None
        ASN1_root = ASN1F_SEQUENCE(ASN1F_SEQUENCE(*fields), implicit_tag=krb.ASN1_Class_KRB.ERROR)

    return KrbErrorRawEData


# ------------------------------------------------------------------------------------ build


def build_as_req(cname: str | None, realm: str, nonce: int, etypes: tuple[int, ...] = (18, 17, 23)) -> bytes:
    """An AS-REQ (RFC 4120 5.4.1) for ``cname@realm`` asking a TGT (``krbtgt/realm``); with
    ``cname`` None the optional cname field is left out (a request that names no client).

    No PA-DATA at all: no pre-authentication, no timestamp, no key, so nothing a password could be
    guessed from. KDC options forwardable and renewable (what ``kinit`` asks); ``etypes`` lists the
    encryption types offered (the KDC's PA-ETYPE-INFO2 answers for those it also holds keys of).

    Encoded here in DER (:func:`_der_as_req`, the bytes scapy's ``KRB_AS_REQ`` gives, checked by
    tests/replay/test_fastpath.py): a replay runs this dialogue's first step on every flow no
    probe has named yet, and importing scapy's Kerberos layer costs ~0.4 s. Names outside ASCII
    go through scapy.
    """
    names = [realm, *([] if cname is None else [cname])]
    if all(n.isascii() for n in names):
        return _der_as_req(cname, realm, nonce, etypes)
    from scapy.asn1.asn1 import ASN1_GENERALIZED_TIME

    krb = _scapy()
    body = krb.KRB_KDC_REQ_BODY(
        kdcOptions="forwardable+renewable",
        cname=None if cname is None else krb.PrincipalName(nameType=1, nameString=[cname]),  # NT-PRINCIPAL
        realm=realm,
        sname=krb.PrincipalName(nameType=2, nameString=["krbtgt", realm]),  # NT-SRV-INST
        till=ASN1_GENERALIZED_TIME(_TILL),
        nonce=nonce & 0x7FFFFFFF,  # UInt32 in the RFC, but a positive INTEGER keeps every KDC happy
        etype=list(etypes),
    )
    return bytes(krb.KRB_AS_REQ(padata=None, reqBody=body))


def _der(tag: int, content: bytes) -> bytes:
    """One DER TLV: the tag byte, the definite length (short form below 128, else 0x80|n then n
    big-endian bytes), the content."""
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size + content


def _der_int(value: int) -> bytes:
    """A DER INTEGER (tag 0x02): minimal two's complement, big-endian."""
    return _der(0x02, value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True))


def _der_principal(name_type: int, names: list[str]) -> bytes:
    """PrincipalName (RFC 4120 5.2.2): SEQUENCE { name-type [0] Int32, name-string [1] SEQUENCE OF
    KerberosString (GeneralString, tag 0x1b) }."""
    strings = b"".join(_der(0x1B, n.encode("ascii")) for n in names)
    return _der(0x30, _der(0xA0, _der_int(name_type)) + _der(0xA1, _der(0x30, strings)))


def _der_as_req(cname: str | None, realm: str, nonce: int, etypes: tuple[int, ...]) -> bytes:
    """The AS-REQ of :func:`build_as_req` in DER, field by field as scapy lays it out: rtime is
    the current time (scapy's default for the field), addresses and additional-tickets are empty
    sequences."""
    rtime = time.strftime("%Y%m%d%H%M%SZ", time.gmtime()).encode()
    # KDC-REQ-BODY (RFC 4120 5.4.1): kdc-options [0] BIT STRING (no unused bits; forwardable is
    # bit 1, renewable bit 8), cname [1], realm [2], sname [3], till [5], rtime [6], nonce [7],
    # etype [8] SEQUENCE OF Int32, addresses [9], additional-tickets [11]
    body = _der(0xA0, _der(0x03, b"\x00\x40\x80\x00\x00"))
    if cname is not None:
        body += _der(0xA1, _der_principal(1, [cname]))  # NT-PRINCIPAL
    body += _der(0xA2, _der(0x1B, realm.encode("ascii")))
    body += _der(0xA3, _der_principal(2, ["krbtgt", realm]))  # NT-SRV-INST
    body += _der(0xA5, _der(0x18, _TILL.encode()))
    body += _der(0xA6, _der(0x18, rtime))
    body += _der(0xA7, _der_int(nonce & 0x7FFFFFFF))
    body += _der(0xA8, _der(0x30, b"".join(_der_int(e) for e in etypes)))
    body += _der(0xA9, _der(0x30, b"")) + _der(0xAB, _der(0x30, b""))
    # AS-REQ ::= [APPLICATION 10] KDC-REQ: pvno [1] 5, msg-type [2] 10 (krb-as-req), no padata [3],
    # req-body [4]
    req = _der(0xA1, _der_int(5)) + _der(0xA2, _der_int(10)) + _der(0xA4, _der(0x30, body))
    return _der(0x6A, _der(0x30, req))


def tcp_wrap(message: bytes) -> bytes:
    """Prefix a message with its 4-byte big-endian length (Kerberos over TCP, RFC 4120 7.2.2;
    kpasswd over TCP, RFC 3244 2)."""
    return struct.pack(">I", len(message)) + message


def build_kpasswd_probe() -> bytes:
    """A minimal, deliberately malformed kpasswd request (RFC 3244 2), 10 bytes::

        message length (2) = 10 | version (2) = 0x0001 | AP-REQ length (2) = 2
        AP-REQ = 30 00 (an empty SEQUENCE, not an [APPLICATION 14] AP-REQ) | KRB-PRIV = 30 00

    A kpasswd server answers it with its error reply (an AP-REP length of 0 and a KRB-ERROR whose
    e-data holds a result code and a result string); there is no ticket, no key, no password in it.
    """
    return struct.pack(">HHH", 10, 1, 2) + b"\x30\x00" + b"\x30\x00"


# ------------------------------------------------------------------------------------ frame


def _prefix_length(buf: bytes, what: str) -> int | None:
    """The 4-byte TCP length prefix, checked: the top bit is reserved (RFC 4120 7.2.2: a server
    sets it only in answer to a client that asked for extensions; we never do), zero and lengths
    past :data:`MAX_MESSAGE` are not a reply we read."""
    if len(buf) < 4:
        return None
    (length,) = struct.unpack_from(">I", buf)
    if length & 0x80000000:
        raise NotThisProtocol(f"{what}: TCP length prefix with the reserved top bit set ({length:#010x})")
    if length < 2 or length > MAX_MESSAGE:
        raise NotThisProtocol(f"{what}: TCP length prefix {length} out of range")
    return length


@prefix_framer
def frame_kdc_tcp(buf: bytes) -> int | None:
    """Frame one KDC reply over TCP: 4-byte length, then an AS-REP, TGS-REP or KRB-ERROR.

    The first message byte is checked as soon as it arrives, so a text protocol is refused at once
    instead of waiting for the gigabyte its first four letters would announce.
    """
    length = _prefix_length(buf, "Kerberos")
    if length is None:
        return None
    if len(buf) > 4 and buf[4] not in KDC_REPLY_TAGS:
        raise NotThisProtocol(f"Kerberos/TCP: message starts with {buf[4]:#04x}, not a KDC reply")
    return 4 + length if len(buf) >= 4 + length else None


@prefix_framer
def frame_kdc_udp(buf: bytes) -> int | None:
    """Frame a UDP datagram (one whole KDC reply); its first byte must be a KDC reply's tag."""
    if not buf:
        return None
    if buf[0] not in KDC_REPLY_TAGS:
        raise NotThisProtocol(f"Kerberos/UDP: datagram starts with {buf[0]:#04x}, not a KDC reply")
    return len(buf)


def _check_kpasswd_start(msg: bytes, what: str) -> None:
    """A kpasswd reply starts with its own length and version 1 (RFC 3244 2), or, from a server
    that cannot even read the request, is a bare KRB-ERROR."""
    if not msg or msg[0] == _TAG_KRB_ERROR:
        return
    if len(msg) >= 4:
        version = struct.unpack_from(">H", msg, 2)[0]
        if version not in KPASSWD_VERSIONS:
            raise NotThisProtocol(f"{what}: version {version:#06x} is not kpasswd's")


@prefix_framer
def frame_kpasswd_tcp(buf: bytes) -> int | None:
    """Frame one kpasswd reply over TCP: 4-byte length, then the kpasswd message, whose own
    2-byte length must agree (or a bare KRB-ERROR)."""
    length = _prefix_length(buf, "kpasswd")
    if length is None:
        return None
    head = bytes(buf[4:8])
    _check_kpasswd_start(head, "kpasswd/TCP")
    if len(head) >= 2 and head[0] != _TAG_KRB_ERROR and struct.unpack_from(">H", head)[0] != length:
        raise NotThisProtocol("kpasswd/TCP: inner length disagrees with the TCP length prefix")
    return 4 + length if len(buf) >= 4 + length else None


@prefix_framer
def frame_kpasswd_udp(buf: bytes) -> int | None:
    """Frame a UDP datagram (one whole kpasswd reply)."""
    if not buf:
        return None
    _check_kpasswd_start(bytes(buf[:4]), "kpasswd/UDP")
    return len(buf)


# ------------------------------------------------------------------------------------ parse


def _text(value: Any) -> str:
    """A decoded ASN.1 string value (bytes or str) as text, bounded."""
    raw = getattr(value, "val", value)
    if raw is None:
        return ""
    if isinstance(raw, bytes):
        return decode_text(raw[:_MAX_TEXT])
    return str(raw)[:_MAX_TEXT]


def _int(value: Any) -> int | None:
    raw = getattr(value, "val", value)
    return int(raw) if isinstance(raw, int) else None


def _principal(name: Any) -> str:
    """``PrincipalName`` as ``a/b`` text (bounded), '' when absent."""
    if name is None:
        return ""
    try:
        return "/".join(_text(s) for s in list(name.nameString)[:8])[:_MAX_TEXT]
    except (AttributeError, TypeError):
        return ""


@dataclass(frozen=True, slots=True)
class KrbError:
    """A decoded KRB-ERROR (RFC 4120 5.9.1); e-data is read as far as its structure is known."""

    error_code: int
    realm: str
    sname: str
    #: the server's clock (KerberosTime, ``YYYYmmddHHMMSSZ``) and microseconds
    stime: str
    susec: int | None
    crealm: str | None = None
    cname: str | None = None
    e_text: str | None = None
    e_data: bytes = b""
    #: which optional fields the KDC filled in (ctime, cusec, crealm, cname, e-text, e-data):
    #: implementations differ in that choice
    present: tuple[str, ...] = ()
    #: PA-DATA types of a METHOD-DATA e-data (RFC 4120 5.9.1, 7.5.2), in order
    padata_types: tuple[int, ...] = ()
    #: PA-ETYPE-INFO2 entries: (etype, salt or None)
    etype_info2: tuple[tuple[int, str | None], ...] = ()
    #: MS-KILE 2.2.1 KERB-ERROR-DATA data-type, and the NTSTATUS of a KERB-EXT-ERROR (2.2.2)
    kerb_error_data_type: int | None = None
    ntstatus: int | None = None
    #: RFC 3244 result code and string when the e-data is a kpasswd result
    result_code: int | None = None
    result_string: str | None = None

    @property
    def error_name(self) -> str:
        """The RFC 4120 name of the error code (or ``error <n>``)."""
        return ERROR_NAMES.get(self.error_code, f"error {self.error_code}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready facts (no e-data bytes beyond a short hex head)."""
        out: dict[str, Any] = {
            "error_code": self.error_code,
            "error": self.error_name,
            "realm": self.realm,
            "sname": self.sname,
            "stime": self.stime,
            "fields": list(self.present),
        }
        if self.susec is not None:
            out["susec"] = self.susec
        for key in ("crealm", "cname", "e_text", "result_string", "kerb_error_data_type"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.e_data:
            out["e_data_len"] = len(self.e_data)
        if self.padata_types:
            out["padata"] = [PADATA_NAMES.get(t, str(t)) for t in self.padata_types]
        if self.etype_info2:
            out["etype_info2"] = [ETYPE_NAMES.get(e, str(e)) for e, _ in self.etype_info2]
        if self.ntstatus is not None:
            out["ntstatus"] = f"{self.ntstatus:#010x}"
        if self.result_code is not None:
            out["result_code"] = self.result_code
            out["result"] = KPASSWD_RESULTS.get(self.result_code, str(self.result_code))
        return out


@dataclass(frozen=True, slots=True)
class KdcReply:
    """An AS-REP or TGS-REP (RFC 4120 5.4.2), seen in replays: who and what, never the keys."""

    msg_type: str
    crealm: str
    cname: str
    ticket_realm: str
    ticket_sname: str
    ticket_etype: int | None
    ticket_kvno: int | None
    enc_etype: int | None
    padata_types: tuple[int, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready facts."""
        out: dict[str, Any] = {
            "message": self.msg_type,
            "crealm": self.crealm,
            "ticket_realm": self.ticket_realm,
            "ticket_sname": self.ticket_sname,
        }
        if self.ticket_etype is not None:
            out["ticket_etype"] = ETYPE_NAMES.get(self.ticket_etype, str(self.ticket_etype))
        if self.ticket_kvno is not None:
            out["ticket_kvno"] = self.ticket_kvno
        if self.enc_etype is not None:
            out["enc_part_etype"] = ETYPE_NAMES.get(self.enc_etype, str(self.enc_etype))
        if self.padata_types:
            out["padata"] = [PADATA_NAMES.get(t, str(t)) for t in self.padata_types]
        return out


def _decode(cls: Any, msg: bytes, what: str) -> Any:
    """Decode ``msg`` whole with a scapy ASN.1 class; anything left over or any decoding error is
    not this protocol (scapy raises many exception types on hostile input)."""
    try:
        pkt = cls(msg)
    except NotThisProtocol:
        raise
    except Exception as exc:  # scapy's BER decoder raises many types on garbage
        raise NotThisProtocol(f"{what}: ASN.1 decoding failed: {type(exc).__name__}") from None
    rest = pkt.payload
    if rest is not None and len(bytes(rest)):
        raise NotThisProtocol(f"{what}: {len(bytes(rest))} bytes after the message")
    return pkt


def _method_data(e_data: bytes) -> tuple[tuple[int, ...], tuple[tuple[int, str | None], ...]]:
    """PA-DATA types and PA-ETYPE-INFO2 entries of a METHOD-DATA e-data (RFC 4120 5.9.1: the
    e-data of KDC_ERR_PREAUTH_REQUIRED is a METHOD-DATA); empty when it is not one."""
    krb = _scapy()
    try:
        md = krb.MethodData(e_data)
        seq = list(md.seq)[:_MAX_ENTRIES]
        types = tuple(int(pa.padataType.val) for pa in seq)
    except Exception:  # not a METHOD-DATA
        return (), ()
    entries: list[tuple[int, str | None]] = []
    for pa in seq:
        if int(pa.padataType.val) != 19:
            continue
        try:
            value = pa.padataValue
            info = value if hasattr(value, "seq") else krb.ETYPE_INFO2(bytes(value.val))
            for entry in list(info.seq)[:_MAX_ENTRIES]:
                salt = _text(entry.salt) if entry.salt is not None else None
                entries.append((int(entry.etype.val), salt))
        except Exception:  # a malformed ETYPE-INFO2 entry names no etype
            continue
    return types, tuple(entries)


@functools.cache
def _kerb_error_data_class() -> Any:
    """MS-KILE 2.2.1 KERB-ERROR-DATA with the data-value kept as bytes."""
    from scapy.asn1.asn1 import ASN1_Codecs
    from scapy.asn1fields import ASN1F_INTEGER, ASN1F_SEQUENCE, ASN1F_STRING, ASN1F_optional
    from scapy.asn1packet import ASN1_Packet

    class KerbErrorData(ASN1_Packet):
        """KERB-ERROR-DATA ::= SEQUENCE { data-type [1] INTEGER, data-value [2] OCTET STRING OPTIONAL }"""

        ASN1_codec = ASN1_Codecs.BER  # type: ignore[assignment]  # scapy annotates it None
        ASN1_root = ASN1F_SEQUENCE(
            ASN1F_INTEGER("dataType", None, explicit_tag=0xA1),
            ASN1F_optional(ASN1F_STRING("dataValue", None, explicit_tag=0xA2)),
        )

    return KerbErrorData


def _kerb_error_data(e_data: bytes) -> tuple[int | None, int | None]:
    """MS-KILE 2.2.1 KERB-ERROR-DATA ``{data-type [1] INTEGER, data-value [2] OCTET STRING}``;
    data-type 3 (KERB_ERR_TYPE_EXTENDED) holds a KERB-EXT-ERROR (2.2.2) whose first 4 bytes are an
    NTSTATUS, little-endian. Returns (data-type, NTSTATUS), Nones when it is not one."""
    try:
        ked = _kerb_error_data_class()(e_data)
        if ked.payload is not None and len(bytes(ked.payload)):
            return None, None
        data_type = int(ked.dataType.val)
        value = ked.dataValue.val if ked.dataValue is not None else b""
    except Exception:  # not a KERB-ERROR-DATA
        return None, None
    status = struct.unpack_from("<I", value)[0] if data_type == 3 and len(value) >= 4 else None
    return data_type, status


def parse_krb_error(msg: bytes) -> KrbError:
    """Decode a KRB-ERROR (RFC 4120 5.9.1); :class:`NotThisProtocol` when it is not one."""
    if not msg or msg[0] != _TAG_KRB_ERROR:
        raise NotThisProtocol("not a KRB-ERROR (tag)")
    pkt = _decode(_error_class(), msg, "KRB-ERROR")
    try:
        return _krb_error_fields(pkt)
    except (AttributeError, TypeError, ValueError):
        raise NotThisProtocol("KRB-ERROR without its mandatory fields") from None


def _krb_error_fields(pkt: Any) -> KrbError:
    """The facts of a decoded KRB-ERROR (raises AttributeError/TypeError when one is missing)."""
    if _int(pkt.pvno) != 5 or _int(pkt.msgType) != 30:
        raise NotThisProtocol(f"KRB-ERROR with pvno {_int(pkt.pvno)} msg-type {_int(pkt.msgType)}")
    code = _int(pkt.errorCode)
    if code is None:
        raise NotThisProtocol("KRB-ERROR without an error code")
    present = tuple(
        name
        for name, attr in (
            ("ctime", "ctime"),
            ("cusec", "cusec"),
            ("crealm", "crealm"),
            ("cname", "cname"),
            ("e-text", "eText"),
            ("e-data", "eData"),
        )
        if getattr(pkt, attr) is not None
    )
    e_data = bytes(pkt.eData.val) if pkt.eData is not None else b""
    padata: tuple[int, ...] = ()
    etype_info2: tuple[tuple[int, str | None], ...] = ()
    data_type = ntstatus = result_code = None
    result_string = None
    if e_data:
        if e_data[0] == 0x30:  # a SEQUENCE: METHOD-DATA or KERB-ERROR-DATA
            padata, etype_info2 = _method_data(e_data)
            if not padata:
                data_type, ntstatus = _kerb_error_data(e_data)
        elif len(e_data) >= 2:
            # RFC 3244 2: a kpasswd error's e-data is result code (2 bytes) + result string
            result_code = struct.unpack_from(">H", e_data)[0]
            result_string = decode_text(e_data[2 : 2 + _MAX_TEXT]).rstrip("\n")
    return KrbError(
        error_code=code,
        realm=_text(pkt.realm),
        sname=_principal(pkt.sname),
        stime=_text(pkt.stime),
        susec=_int(pkt.susec),
        crealm=_text(pkt.crealm) if pkt.crealm is not None else None,
        cname=_principal(pkt.cname) if pkt.cname is not None else None,
        e_text=_text(pkt.eText) if pkt.eText is not None else None,
        e_data=e_data,
        present=present,
        padata_types=padata,
        etype_info2=etype_info2,
        kerb_error_data_type=data_type,
        ntstatus=ntstatus,
        result_code=result_code,
        result_string=result_string,
    )


def _parse_kdc_rep(msg: bytes) -> KdcReply:
    """An AS-REP or TGS-REP: names, realms and encryption types; the encrypted parts are left
    alone (never kept)."""
    krb = _scapy()
    as_rep = msg[0] == _TAG_AS_REP
    pkt = _decode(krb.KRB_AS_REP if as_rep else krb.KRB_TGS_REP, msg, "KDC-REP")
    try:
        return _kdc_rep_fields(pkt, as_rep)
    except (AttributeError, TypeError, ValueError):
        # scapy leaves a mandatory field None when the message lacks it
        raise NotThisProtocol("KDC-REP without its mandatory fields") from None


def _kdc_rep_fields(pkt: Any, as_rep: bool) -> KdcReply:
    """The facts of a decoded AS-REP/TGS-REP (raises AttributeError/TypeError when one is missing)."""
    if _int(pkt.pvno) != 5 or _int(pkt.msgType) not in (11, 13):
        raise NotThisProtocol("KDC-REP with a wrong pvno or msg-type")
    ticket = pkt.ticket
    padata: tuple[int, ...] = ()
    if pkt.padata is not None:
        try:
            padata = tuple(int(pa.padataType.val) for pa in list(pkt.padata)[:_MAX_ENTRIES])
        except (AttributeError, TypeError, ValueError):
            padata = ()
    return KdcReply(
        msg_type="AS-REP" if as_rep else "TGS-REP",
        crealm=_text(pkt.crealm),
        cname=_principal(pkt.cname),
        ticket_realm=_text(ticket.realm),
        ticket_sname=_principal(ticket.sname),
        ticket_etype=_int(ticket.encPart.etype),
        ticket_kvno=_int(ticket.encPart.kvno),
        enc_etype=_int(pkt.encPart.etype),
        padata_types=padata,
    )


def parse_kdc_message(msg: bytes) -> KrbError | KdcReply:
    """Decode one KDC reply (UDP datagram, or TCP message without its 4-byte prefix)."""
    if not msg:
        raise NotThisProtocol("empty Kerberos message")
    if msg[0] == _TAG_KRB_ERROR:
        return parse_krb_error(msg)
    if msg[0] in (_TAG_AS_REP, _TAG_TGS_REP):
        return _parse_kdc_rep(msg)
    raise NotThisProtocol(f"{msg[0]:#04x} does not start a KDC reply")


@dataclass(frozen=True, slots=True)
class KpasswdReply:
    """A kpasswd reply (RFC 3244 2): header fields and the KRB-ERROR it carries, if any."""

    #: False for a bare KRB-ERROR without the kpasswd header
    framed: bool
    version: int | None
    ap_rep_len: int | None
    error: KrbError | None = None
    #: True when the reply carries an AP-REP and a KRB-PRIV (a success reply: never expected)
    priv: bool = False
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready facts."""
        out: dict[str, Any] = {"framed": self.framed}
        if self.version is not None:
            out["version"] = self.version
        if self.ap_rep_len is not None:
            out["ap_rep_len"] = self.ap_rep_len
        if self.error is not None:
            out["error"] = self.error.as_dict()
        if self.priv:
            out["krb_priv"] = True
        return out


def parse_kpasswd_reply(msg: bytes) -> KpasswdReply:
    """Decode a kpasswd reply (without the TCP prefix)::

        message length (2) | version (2) = 0x0001 | AP-REP length (2) | AP-REP | KRB-PRIV or KRB-ERROR

    An AP-REP length of 0 means the rest is a KRB-ERROR whose e-data is the result (RFC 3244 2).
    """
    if msg[:1] == bytes([_TAG_KRB_ERROR]):
        err = parse_krb_error(msg)
        # a bare KRB-ERROR is kpasswd's only when it names the password-change service
        # (kadmin/changepw, RFC 3244 2); any KDC answers junk with a KRB-ERROR of its own
        if err.sname.lower() != "kadmin/changepw":
            raise NotThisProtocol(f"a KRB-ERROR for {err.sname!r}, not kadmin/changepw")
        return KpasswdReply(framed=False, version=None, ap_rep_len=None, error=err)
    if len(msg) < _KPASSWD_HEADER:
        raise NotThisProtocol("kpasswd reply shorter than its header")
    length, version, ap_rep_len = struct.unpack_from(">HHH", msg)
    if length != len(msg):
        raise NotThisProtocol(f"kpasswd reply length {length} for {len(msg)} bytes")
    if version not in KPASSWD_VERSIONS:
        raise NotThisProtocol(f"kpasswd version {version:#06x}")
    body = msg[_KPASSWD_HEADER:]
    if ap_rep_len == 0:
        return KpasswdReply(framed=True, version=version, ap_rep_len=0, error=parse_krb_error(body))
    if ap_rep_len >= len(body) or body[0] != _TAG_AP_REP or body[ap_rep_len] != _TAG_KRB_PRIV:
        raise NotThisProtocol("kpasswd reply with an AP-REP but no KRB-PRIV after it")
    return KpasswdReply(framed=True, version=version, ap_rep_len=ap_rep_len, priv=True)
