"""tsap: ISO transport over TCP (RFC 1006 TPKT + ISO 8073 COTP) on 102/tcp, and the layer above.

Default port: 102. Client speaks first.

Sends:

1. a COTP connection request (CR, class 0) with S7-style TSAPs (calling ``0100``, called
   ``0102``) and a TPDU size of 1024; when it is refused (DR/ER), a second CR on a fresh
   connection (``Reconnect``) with libiec61850's TSAPs (``0001``/``0001``), then step 2;
2. after the connection confirm (CC), an ISO session CONNECT carrying a presentation CP, an ACSE
   AARQ and an MMS initiate-request (the bytes libiec61850's client sends) and waits a short
   while: an IEC 61850 / MMS server answers ACCEPT (then an MMS ``identify`` is sent: vendor,
   model, revision); an X.400 MTA would answer at the session/presentation layer naming MHS
   object identifiers (2.6.x);
3. when nothing answers (an S7 stack ignores session PDUs), an S7comm "setup communication"
   job on the same connection; when the peer *closes* (or refuses) on the session CONNECT, the
   same job on a fresh connection (``Reconnect``, CR/CC again); when acknowledged, SZL reads
   0x0011 (module identification: order number, firmware) and 0x001C (component identification:
   module type, station name, serial number).

Collects: the CC's TPDU size, TSAPs, class and options (or the DR reason), then the upper layer
(``details.upper_layer``: ``"mms"``, ``"s7comm"``, ``"x400"`` or None) with its evidence;
``details.reconnects`` counts the fresh connections used. A bare CC proves only the ISO
transport: the upper layer then stays None, never "S7".

Why this order: the lab showed libiec61850 closes the connection on an S7 job, while
python-snap7's S7 server stays silent on a session CONNECT and still answers S7 afterwards, so
"MMS first, S7 on silence" learns both on one connection; a stack that closes on the session
CONNECT gets S7 on a second connection. ``details.s7_untried`` says when S7 could not be asked.

An S7comm PDU where the session answer was expected is taken as the S7 answer (in a replay the
capture holds a client that spoke S7, or our own scan after the silence), and SZL answers are
only decoded as the SZL they say they are (a capture holds other clients' SZL reads).

TPKT/COTP/session framing and the small BER walker are written here (scapy has no COTP or ISO
session layer; ldap3's BER decoder only knows LDAP's tags).
"""

from __future__ import annotations

import struct
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from scanner.api import (
    Dialogue,
    Finding,
    NotThisProtocol,
    Probe,
    ProbeContext,
    Reconnect,
    Recv,
    RecvClosed,
    RecvTimeout,
    Send,
    Step,
    prefix_framer,
)

__all__ = [
    "MMS_INITIATE_CN",
    "BerItem",
    "CotpPdu",
    "MmsIdentity",
    "S7Pdu",
    "SzlResponse",
    "TSAPProbe",
    "ber_children",
    "ber_find",
    "build_cotp_cr",
    "build_cotp_dt",
    "build_mms_identify",
    "build_s7_setup",
    "build_s7_szl_read",
    "decode_oid",
    "frame_tpkt",
    "parse_component_identification",
    "parse_cotp",
    "parse_mms_identify",
    "parse_module_identification",
    "parse_s7",
    "parse_s7_setup_ack",
    "parse_session",
    "parse_szl_response",
]

#: largest TPKT (its length field is 16 bits)
MAX_TPKT = 65535
#: most DT TPDUs joined into one upper-layer message
MAX_DT_SEGMENTS = 16
#: seconds to wait for an answer to the session CONNECT before trying S7
SESSION_WAIT = 2.5
#: (calling, called) TSAPs of the first CR: what S7 clients send (PG/PC to rack 0 slot 2)
S7_TSAPS = (b"\x01\x00", b"\x01\x02")
#: (calling, called) TSAPs of the retry when the S7 TSAPs are refused: libiec61850's defaults
MMS_TSAPS = (b"\x00\x01", b"\x00\x01")

# COTP TPDU codes (ISO 8073 13.x); the high nibble, except DT/ER/CR/CC/DR/DC which are full bytes
COTP_CR, COTP_CC, COTP_DR, COTP_DC, COTP_DT, COTP_ER = 0xE0, 0xD0, 0x80, 0xC0, 0xF0, 0x70
COTP_NAMES = {COTP_CR: "CR", COTP_CC: "CC", COTP_DR: "DR", COTP_DC: "DC", COTP_DT: "DT", COTP_ER: "ER"}
# COTP parameter codes
P_TPDU_SIZE, P_CALLING_TSAP, P_CALLED_TSAP, P_CHECKSUM, P_VERSION, P_OPTIONS, P_ADD_INFO = (
    0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xC6, 0xE0,
)
DR_REASONS = {
    0x00: "reason not specified", 0x01: "congestion at TSAP", 0x02: "session entity not attached",
    0x03: "address unknown", 0x80: "normal disconnect", 0x81: "remote congestion",
    0x82: "connection negotiation failed", 0x83: "duplicate source reference",
    0x84: "mismatched references", 0x85: "protocol error", 0x87: "reference overflow",
    0x88: "connection request refused", 0x8A: "header or parameter length invalid",
}
# ISO 8327 session SPDU identifiers
SPDU_NAMES = {
    0x0D: "CONNECT", 0x0E: "ACCEPT", 0x0C: "REFUSE", 0x09: "FINISH", 0x0A: "DISCONNECT",
    0x19: "ABORT", 0x1A: "ABORT-ACCEPT", 0x01: "GIVE-TOKENS/DATA", 0x08: "NOT-FINISHED",
}

#: ISO session CONNECT + presentation CP + ACSE AARQ + MMS initiate-request, as sent by the
#: libiec61850 1.5.2 client (recorded against the lab's MMS server; calling/called P/S-selectors
#: 0001, AP-title 1.1.1.999, MMS abstract syntax 1.0.9506.2.1, BER 2.1.1). Kept byte for byte:
#: it is a known-good association request, and nothing in it depends on the target.
MMS_INITIATE_CN = bytes.fromhex(
    "0db20506130100160102140200023302000134020001c19c318199a003800101a28191810400000001820400"
    "000001a423300f0201010604520100013004060251013010020103060528ca220201300406025101615e305c"
    "020101a0576055a107060528ca220203a20706052901876701a30302010ca606060429018767a70302010cbe"
    "2f282d020103a028a826800300fde881010582010583010aa416800101810305f100820c03ee1c0000040800"
    "0079ef18"
)


# ---------------------------------------------------------------- TPKT / COTP


@prefix_framer
def frame_tpkt(buf: bytes) -> int | None:
    """Frame one RFC 1006 TPKT: version 3, reserved 0, 16-bit length (at least 7: a COTP header)."""
    if len(buf) >= 1 and buf[0] != 3:
        raise NotThisProtocol(f"not a TPKT (version byte {buf[0]:#04x})")
    if len(buf) >= 2 and buf[1] != 0:
        raise NotThisProtocol("TPKT reserved byte is not 0")
    if len(buf) < 4:
        return None
    length = struct.unpack(">H", buf[2:4])[0]
    if length < 7:
        raise NotThisProtocol(f"TPKT length {length} too short for a COTP TPDU")
    return length if len(buf) >= length else None


@dataclass(slots=True)
class CotpPdu:
    """One COTP TPDU (from one TPKT)."""

    #: "CR", "CC", "DR", "DC", "DT", "ER"
    kind: str
    code: int
    dst_ref: int | None = None
    src_ref: int | None = None
    #: protocol class (0..4) and option bits (CR/CC)
    cls: int | None = None
    options: int | None = None
    #: DR: disconnect reason; ER: reject cause
    reason: int | None = None
    #: DT: end of TSDU
    eot: bool = True
    #: parameters by code (raw values), e.g. {0xC0: b"\x0a", 0xC1: b"\x01\x00"}
    params: dict[int, bytes] = field(default_factory=dict)
    #: DT: the user data; CR/CC/DR: user data after the parameters, if any
    data: bytes = b""

    @property
    def tpdu_size(self) -> int | None:
        """The TPDU size parameter, in bytes (2**code), if present and sane."""
        raw = self.params.get(P_TPDU_SIZE)
        if raw and len(raw) == 1 and 7 <= raw[0] <= 13:
            return 1 << raw[0]
        return None

    def facts(self) -> dict[str, Any]:
        """JSON-friendly facts for a finding."""
        out: dict[str, Any] = {"tpdu": self.kind}
        if self.dst_ref is not None:
            out["dst_ref"] = self.dst_ref
            out["src_ref"] = self.src_ref
        if self.cls is not None:
            out["class"] = self.cls
            out["options"] = self.options
        if self.tpdu_size:
            out["tpdu_size"] = self.tpdu_size
        if P_CALLING_TSAP in self.params:
            out["calling_tsap"] = self.params[P_CALLING_TSAP].hex()
        if P_CALLED_TSAP in self.params:
            out["called_tsap"] = self.params[P_CALLED_TSAP].hex()
        if self.reason is not None:
            out["reason"] = self.reason
            if self.kind == "DR":
                out["reason_text"] = DR_REASONS.get(self.reason, "unknown")
        other = {f"{k:#04x}": v.hex() for k, v in self.params.items() if k not in (0xC0, 0xC1, 0xC2)}
        if other:
            out["other_params"] = other
        return out


def _cotp_params(raw: bytes) -> dict[int, bytes]:
    params: dict[int, bytes] = {}
    pos = 0
    while pos + 2 <= len(raw) and len(params) < 32:
        code, plen = raw[pos], raw[pos + 1]
        if pos + 2 + plen > len(raw):
            raise NotThisProtocol("COTP parameter runs past the header")
        params[code] = raw[pos + 2 : pos + 2 + plen]
        pos += 2 + plen
    return params


def parse_cotp(tpkt: bytes) -> CotpPdu:
    """Parse the COTP TPDU inside one framed TPKT."""
    if len(tpkt) < 7 or tpkt[0] != 3:
        raise NotThisProtocol("not a TPKT")
    length = struct.unpack(">H", tpkt[2:4])[0]
    if length != len(tpkt):
        raise NotThisProtocol("TPKT length does not match the message")
    li = tpkt[4]
    if li < 2 or 5 + li > len(tpkt):
        raise NotThisProtocol(f"COTP length indicator {li} does not fit the TPKT")
    hdr = tpkt[5 : 5 + li]
    rest = tpkt[5 + li :]
    code = hdr[0]
    kind_code = code if code in (COTP_DT, COTP_ER) else code & 0xF0
    if kind_code == COTP_DT:
        return CotpPdu(kind="DT", code=code, eot=bool(hdr[1] & 0x80), data=rest)
    if kind_code in (COTP_CR, COTP_CC, COTP_DR, COTP_DC):
        if li < 6 and kind_code != COTP_DC:
            raise NotThisProtocol("COTP header too short")
        if li < 5:
            raise NotThisProtocol("COTP header too short")
        dst, src = struct.unpack(">HH", hdr[1:5])
        pdu = CotpPdu(kind=COTP_NAMES[kind_code], code=code, dst_ref=dst, src_ref=src, data=rest)
        if kind_code in (COTP_CR, COTP_CC):
            pdu.cls, pdu.options = hdr[5] >> 4, hdr[5] & 0x0F
            pdu.params = _cotp_params(hdr[6:])
        elif kind_code == COTP_DR:
            pdu.reason = hdr[5]
            pdu.params = _cotp_params(hdr[6:])
        return pdu
    if kind_code == COTP_ER:
        if li < 4:
            raise NotThisProtocol("COTP ER too short")
        return CotpPdu(kind="ER", code=code, dst_ref=struct.unpack(">H", hdr[1:3])[0], reason=hdr[3])
    raise NotThisProtocol(f"unknown COTP TPDU code {code:#04x}")


def build_cotp_cr(
    src_ref: int, calling_tsap: bytes = b"\x01\x00", called_tsap: bytes = b"\x01\x02", tpdu_size: int = 0x0A
) -> bytes:
    """A TPKT carrying a COTP CR (class 0) with TPDU-size, calling and called TSAP parameters."""
    params = bytes([P_TPDU_SIZE, 1, tpdu_size])
    params += bytes([P_CALLING_TSAP, len(calling_tsap)]) + calling_tsap
    params += bytes([P_CALLED_TSAP, len(called_tsap)]) + called_tsap
    hdr = bytes([COTP_CR]) + struct.pack(">HHB", 0, src_ref & 0xFFFF, 0) + params
    cotp = bytes([len(hdr)]) + hdr
    return struct.pack(">BBH", 3, 0, 4 + len(cotp)) + cotp


def build_cotp_dt(payload: bytes) -> bytes:
    """A TPKT carrying one COTP DT TPDU (last data unit) with ``payload``."""
    if len(payload) > MAX_TPKT - 7:
        raise ValueError("payload too large for one TPKT")
    return struct.pack(">BBH", 3, 0, 7 + len(payload)) + b"\x02\xf0\x80" + payload


# ---------------------------------------------------------------- BER (bounded walker)


@dataclass(frozen=True, slots=True)
class BerItem:
    """One BER TLV: the identifier octet, whether constructed, and the value bytes."""

    tag: int
    constructed: bool
    value: bytes


def ber_children(data: bytes, limit: int = 256) -> list[BerItem]:
    """Split ``data`` into consecutive BER TLVs (single-octet tags, definite lengths only)."""
    items: list[BerItem] = []
    pos = 0
    while pos < len(data) and len(items) < limit:
        if pos + 2 > len(data):
            raise NotThisProtocol("truncated BER item")
        tag = data[pos]
        if tag & 0x1F == 0x1F:
            raise NotThisProtocol("multi-octet BER tags are not used here")
        first = data[pos + 1]
        pos += 2
        if first < 0x80:
            length = first
        else:
            n = first & 0x7F
            if n == 0 or n > 3 or pos + n > len(data):
                raise NotThisProtocol("unsupported BER length")
            length = int.from_bytes(data[pos : pos + n], "big")
            pos += n
        if pos + length > len(data):
            raise NotThisProtocol("BER length runs past the data")
        items.append(BerItem(tag, bool(tag & 0x20), data[pos : pos + length]))
        pos += length
    return items


def ber_find(data: bytes, tag: int, depth: int = 10) -> list[BerItem]:
    """Every item with ``tag`` inside ``data``, searching constructed items (bounded depth)."""
    found: list[BerItem] = []
    try:
        items = ber_children(data)
    except NotThisProtocol:
        return found
    for item in items:
        if item.tag == tag:
            found.append(item)
        if item.constructed and depth > 0 and len(found) < 64:
            found.extend(ber_find(item.value, tag, depth - 1))
    return found[:64]


def decode_oid(value: bytes) -> str:
    """Decode the value of a BER OBJECT IDENTIFIER."""
    if not value or len(value) > 64:
        raise NotThisProtocol("bad OID")
    arcs: list[int] = []
    n = 0
    for b in value:
        n = (n << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(n)
            n = 0
    if not arcs:
        raise NotThisProtocol("bad OID")
    first = arcs[0]
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(str(a) for a in head + arcs[1:])


# ---------------------------------------------------------------- ISO session / MMS


def parse_session(payload: bytes) -> tuple[str, bytes]:
    """The ISO 8327 SPDU type name and the user data that follows its parameters.

    Only the first SPDU is read; its parameters are skipped. For ``GIVE-TOKENS/DATA`` (the
    category-0 pair ``01 00 01 00``) the user data is what follows both SPDUs.
    """
    if len(payload) < 2:
        raise NotThisProtocol("session SPDU too short")
    si = payload[0]
    if si not in SPDU_NAMES:
        raise NotThisProtocol(f"unknown session SPDU {si:#04x}")
    if si == 0x01:
        if payload[:4] != b"\x01\x00\x01\x00":
            raise NotThisProtocol("unexpected session data SPDUs")
        return SPDU_NAMES[si], payload[4:]
    pos, length = 2, payload[1]
    if length == 0xFF:
        if len(payload) < 4:
            raise NotThisProtocol("session SPDU too short")
        length, pos = struct.unpack(">H", payload[2:4])[0], 4
    if pos + length > len(payload):
        raise NotThisProtocol("session SPDU length runs past the data")
    body = payload[pos : pos + length]
    # parameters (PI/PGI, length, value); user data is PGI 0xC1 (session user data)
    # or 0xC2 (extended user data)
    i = 0
    user = b""
    for _ in range(64):
        if i + 2 > len(body):
            break
        pi, plen, j = body[i], body[i + 1], i + 2
        if plen == 0xFF:
            if i + 4 > len(body):
                break
            plen, j = struct.unpack(">H", body[i + 2 : i + 4])[0], i + 4
        if pi in (0xC1, 0xC2):
            user = body[j : j + plen]
        i = j + plen
    return SPDU_NAMES[si], user


@dataclass(slots=True)
class MmsIdentity:
    """The answer to an MMS ``identify`` request."""

    vendor: str | None = None
    model: str | None = None
    revision: str | None = None


def build_mms_identify(invoke_id: int) -> bytes:
    """Session GIVE-TOKENS + DATA, presentation user data (context 3), MMS identify request."""
    inv = invoke_id & 0x7F
    req = bytes([0xA0, 0x07, 0xA0, 0x05, 0x02, 0x01, inv, 0x82, 0x00])
    pdv = bytes([0x30, 3 + len(req), 0x02, 0x01, 0x03]) + req
    return b"\x01\x00\x01\x00" + bytes([0x61, len(pdv)]) + pdv


def parse_mms_identify(payload: bytes) -> MmsIdentity:
    """Parse the session DATA carrying an MMS identify response (confirmed-ResponsePDU [1])."""
    kind, user = parse_session(payload)
    if kind != "GIVE-TOKENS/DATA":
        raise NotThisProtocol(f"expected session data, got {kind}")
    for resp in ber_find(user, 0xA1):
        for item in ber_children(resp.value):
            if item.tag == 0xA2:  # identify response
                fields = {c.tag: c.value.decode("latin-1") for c in ber_children(item.value)}
                return MmsIdentity(fields.get(0x80), fields.get(0x81), fields.get(0x82))
    raise NotThisProtocol("no MMS identify response")


# ---------------------------------------------------------------- S7comm


@dataclass(slots=True)
class S7Pdu:
    """An S7comm PDU (protocol id 0x32)."""

    rosctr: int
    pdu_ref: int
    params: bytes
    data: bytes
    error_class: int = 0
    error_code: int = 0


def parse_s7(payload: bytes) -> S7Pdu:
    """Parse the S7comm header (10 bytes, 12 for ack/ack-data), parameters and data."""
    if len(payload) < 10 or payload[0] != 0x32:
        raise NotThisProtocol("not S7comm (protocol id 0x32)")
    rosctr = payload[1]
    if rosctr not in (1, 2, 3, 7):
        raise NotThisProtocol(f"unknown S7comm ROSCTR {rosctr}")
    ref, plen, dlen = struct.unpack(">HHH", payload[4:10])
    pos, ecls, ecode = 10, 0, 0
    if rosctr in (2, 3):
        if len(payload) < 12:
            raise NotThisProtocol("S7comm ack header too short")
        ecls, ecode, pos = payload[10], payload[11], 12
    if pos + plen + dlen > len(payload):
        raise NotThisProtocol("S7comm lengths run past the PDU")
    return S7Pdu(rosctr, ref, payload[pos : pos + plen], payload[pos + plen : pos + plen + dlen], ecls, ecode)


def build_s7_setup(pdu_ref: int, pdu_size: int = 480) -> bytes:
    """S7comm job "setup communication" (function 0xF0): max AmQ 1/1, PDU size."""
    params = struct.pack(">BBHHH", 0xF0, 0, 1, 1, pdu_size)
    return struct.pack(">BBHHHH", 0x32, 1, 0, pdu_ref & 0xFFFF, len(params), 0) + params


def parse_s7_setup_ack(payload: bytes) -> dict[str, int]:
    """The negotiated values of a setup-communication Ack_Data."""
    pdu = parse_s7(payload)
    if pdu.rosctr != 3 or len(pdu.params) < 8 or pdu.params[0] != 0xF0:
        raise NotThisProtocol("not an S7comm setup-communication acknowledgement")
    amq_calling, amq_called, size = struct.unpack(">HHH", pdu.params[2:8])
    return {
        "pdu_size": size, "max_amq_calling": amq_calling, "max_amq_called": amq_called,
        "error_class": pdu.error_class, "error_code": pdu.error_code,
    }


def build_s7_szl_read(pdu_ref: int, szl_id: int, index: int = 0) -> bytes:
    """S7comm userdata request: CPU functions, read SZL ``szl_id``/``index``."""
    params = bytes([0x00, 0x01, 0x12, 0x04, 0x11, 0x44, 0x01, 0x00])
    data = bytes([0xFF, 0x09]) + struct.pack(">HHH", 4, szl_id, index)
    return struct.pack(">BBHHHH", 0x32, 7, 0, pdu_ref & 0xFFFF, len(params), len(data)) + params + data


@dataclass(slots=True)
class SzlResponse:
    """A read-SZL answer: its id, index, record length and records."""

    szl_id: int
    index: int
    record_length: int
    records: list[bytes] = field(default_factory=list)


# default record lengths where a server leaves LENTHDR at 0
_SZL_RECORD_LEN = {0x0011: 28, 0x001C: 34}


def parse_szl_response(payload: bytes) -> SzlResponse:
    """Parse an S7comm userdata response to read-SZL."""
    pdu = parse_s7(payload)
    if pdu.rosctr != 7 or len(pdu.params) < 8:
        raise NotThisProtocol("not an S7comm userdata response")
    # params: head 00 01 12, length, method, type|group (group 4: CPU functions), subfunction 1
    if pdu.params[5] & 0x0F != 4 or pdu.params[6] != 1:
        raise NotThisProtocol("not a read-SZL response")
    data = pdu.data
    if len(data) < 4:
        raise NotThisProtocol("SZL response without data")
    ret, size = data[0], struct.unpack(">H", data[2:4])[0]
    if ret != 0xFF:
        raise NotThisProtocol(f"SZL read refused (return code {ret:#04x})")
    body = data[4 : 4 + size]
    if len(body) < 8:
        raise NotThisProtocol("SZL response too short")
    szl_id, index, lenthdr, count = struct.unpack(">HHHH", body[:8])
    rec_len = lenthdr or _SZL_RECORD_LEN.get(szl_id, 0)
    records: list[bytes] = []
    if rec_len:
        rest = body[8:]
        n = min(count or len(rest) // rec_len, len(rest) // rec_len, 256)
        records = [rest[i * rec_len : (i + 1) * rec_len] for i in range(n)]
    return SzlResponse(szl_id, index, rec_len, records)


def _text(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("latin-1").strip()


def parse_module_identification(szl: SzlResponse) -> dict[str, str]:
    """SZL 0x0011 (module identification): order number (MLFB) and firmware, as the server gives them.

    Siemens' layout has 28-byte records (index, MLFB[20], BGTyp, Ausbg, Ausbe): index 1 is the
    module, index 7 the firmware (``Ausbg`` = 'V' + major, ``Ausbe`` = minor, patch).
    python-snap7's server sends one 26-byte record (index, MLFB[20], reserved, V1, V2, V3).
    """
    out: dict[str, str] = {}
    for rec in szl.records:
        if len(rec) < 22:
            continue
        idx = struct.unpack(">H", rec[:2])[0]
        mlfb = _text(rec[2:22])
        if idx == 1 and mlfb:
            out["order_number"] = mlfb
        if len(rec) == 28 and idx == 7 and rec[24] == 0x56:
            out["firmware"] = f"V{rec[25]}.{rec[26]}.{rec[27]}"
        elif len(rec) == 26 and idx == 1:
            out["firmware"] = f"V{rec[23]}.{rec[24]}.{rec[25]}"
    return out


# SZL 0x001C record indexes (in order, as real CPUs send them)
_SZL_1C_FIELDS = {
    1: "station_name", 2: "module_name", 3: "plant_id", 4: "copyright", 5: "serial_number",
    7: "module_type", 8: "memory_card_serial", 9: "oem_id", 10: "location",
}
_SZL_1C_ORDER = [1, 2, 3, 4, 5, 7, 8, 9, 10, 11]


def parse_component_identification(szl: SzlResponse) -> dict[str, str]:
    """SZL 0x001C (component identification): station name, module name and type, serial, ...

    Records are an index and 32 text bytes. A record whose index is 0 (python-snap7 leaves them
    so) is taken by its position in Siemens' order (1, 2, 3, 4, 5, 7, 8, ...).
    """
    out: dict[str, str] = {}
    for pos, rec in enumerate(szl.records[: len(_SZL_1C_ORDER)]):
        if len(rec) < 4:
            continue
        idx = struct.unpack(">H", rec[:2])[0] or _SZL_1C_ORDER[pos]
        name = _SZL_1C_FIELDS.get(idx)
        text = _text(rec[2:])
        if name and text and text.isprintable():
            out[name] = text
    return out


# ---------------------------------------------------------------- probe


def _recv_tsdu(first_timeout: float | None = None) -> Generator[Step, Any, CotpPdu]:
    """Receive one TPDU; for DT, join segments up to end-of-TSDU (bounded)."""
    msg = yield Recv(frame_tpkt, max_size=MAX_TPKT + 1, timeout=first_timeout)
    pdu = parse_cotp(msg)
    if pdu.kind != "DT":
        return pdu
    data = bytearray(pdu.data)
    for _ in range(MAX_DT_SEGMENTS):
        if pdu.eot:
            break
        pdu = parse_cotp((yield Recv(frame_tpkt, max_size=MAX_TPKT + 1)))
        if pdu.kind != "DT":
            raise NotThisProtocol(f"{pdu.kind} inside a segmented TSDU")
        data += pdu.data
    else:
        raise NotThisProtocol("too many DT segments")
    return CotpPdu(kind="DT", code=COTP_DT, eot=True, data=bytes(data))


class TSAPProbe(Probe):
    """ISO-TSAP (RFC 1006) on 102: COTP CR/CC, then MMS (IEC 61850), S7comm or X.400 above it."""

    name = "tsap"
    services = ("tsap",)
    ports = (102,)
    server_first = False
    rarity = 6
    summary = "RFC 1006 TPKT/COTP connect, then tells MMS/IEC 61850, Siemens S7comm and X.400 apart"

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        """CR -> CC, then session CONNECT (MMS), S7 on silence or on a fresh connection; see the module doc."""
        finding = Finding(service="tsap", confidence=8)
        finding.details["upper_layer"] = None
        cc = yield from self._connect(ctx, finding, S7_TSAPS)
        if cc is None:
            # refused (DR/ER) at the S7 TSAPs: an MMS stack may want its own TSAPs (S7 refused,
            # MMS on a fresh connection: the "vice versa" of the session CONNECT case below)
            yield Reconnect()
            finding.details["reconnects"] = 1
            cc = yield from self._connect(ctx, finding, MMS_TSAPS)
            if cc is None:
                return finding
            return (yield from self._mms_then_s7(ctx, finding, fresh_connection_for_s7=False))
        return (yield from self._mms_then_s7(ctx, finding, fresh_connection_for_s7=True))

    def _connect(
        self, ctx: ProbeContext, finding: Finding, tsaps: tuple[bytes, bytes]
    ) -> Generator[Step, Any, CotpPdu | None]:
        """COTP CR with ``tsaps`` (calling, called) -> CC; None when refused or closed."""
        src_ref = ctx.rng.randint(1, 0xFFFE)
        yield Send(build_cotp_cr(src_ref, calling_tsap=tsaps[0], called_tsap=tsaps[1]))
        try:
            cc = parse_cotp((yield Recv(frame_tpkt, max_size=MAX_TPKT + 1)))
        except RecvClosed:
            if finding.details.get("cotp") is None:
                raise  # nothing seen yet: the port is not ISO-TSAP as far as we know
            finding.details["cotp_closed"] = True
            return None
        first = finding.details.get("cotp") is None
        facts = cc.facts()
        if first:
            finding.details["cotp"] = facts
        else:
            finding.details["cotp_retry"] = facts
        finding.add(f"COTP {cc.kind}", repr(facts))
        if cc.kind in ("DR", "ER"):
            finding.extrainfo = f"ISO transport, connection refused ({cc.kind})"
            finding.details["cotp_closed"] = False
            ctx.found(finding)
            return None
        if cc.kind != "CC":
            raise NotThisProtocol(f"answer to a COTP CR is a {cc.kind}")
        if cc.dst_ref != src_ref and not ctx.replay:
            facts["ref_mismatch"] = True
        finding.details.pop("cotp_closed", None)
        finding.extrainfo = "ISO transport (COTP CC), upper layer unknown"
        ctx.found(finding)
        return cc

    def _mms_then_s7(self, ctx: ProbeContext, finding: Finding, fresh_connection_for_s7: bool) -> Dialogue:
        """Session CONNECT (MMS); S7 on silence, or on a fresh connection when the peer refuses it."""
        yield Send(build_cotp_dt(MMS_INITIATE_CN))
        try:
            reply = yield from _recv_tsdu(first_timeout=SESSION_WAIT)
        except RecvTimeout:
            reply = None
        except RecvClosed:
            reply = CotpPdu(kind="closed", code=-1)
        if reply is not None and reply.kind == "DT" and reply.data[:1] == b"\x32":
            # S7comm where a session SPDU was expected: a capture of a client that spoke S7 (or
            # of our own scan after the silence) shows the S7 answer right after the CC
            return (yield from self._s7_answer(ctx, finding, reply))
        if reply is not None and reply.kind == "DT":
            return (yield from self._session_path(ctx, finding, reply.data))
        if reply is not None:
            # the session CONNECT was refused (DR/ER) or the connection closed: S7 stacks that
            # only know S7comm do that; S7 is asked on a fresh connection
            finding.details["after_session_connect"] = reply.kind
            if reply.kind != "closed":
                finding.add(f"COTP {reply.kind} after session CONNECT", repr(reply.facts()))
            if not fresh_connection_for_s7:
                finding.details["s7_untried"] = True
                return finding
            yield Reconnect()
            finding.details["reconnects"] = finding.details.get("reconnects", 0) + 1
            cc = yield from self._connect(ctx, finding, S7_TSAPS)
            if cc is None:
                finding.details["s7_untried"] = True
                return finding
        # -- silence (or a fresh connection): try S7comm
        yield Send(build_cotp_dt(build_s7_setup(pdu_ref=ctx.rng.randint(1, 0xFFFF))))
        try:
            s7 = yield from _recv_tsdu()
        except (RecvTimeout, RecvClosed):
            finding.details["after_s7_setup"] = "no answer"
            return finding
        return (yield from self._s7_answer(ctx, finding, s7))

    def _s7_answer(self, ctx: ProbeContext, finding: Finding, s7: CotpPdu) -> Dialogue:
        """The answer to an S7 setup communication: on an Ack_Data, read the SZLs."""
        if s7.kind != "DT":
            finding.details["after_s7_setup"] = s7.kind
            return finding
        try:
            setup = parse_s7_setup_ack(s7.data)
        except NotThisProtocol:
            finding.details["after_s7_setup"] = s7.data[:64].hex()
            return finding
        return (yield from self._s7_path(ctx, finding, s7.data, setup))

    def _session_path(self, ctx: ProbeContext, finding: Finding, payload: bytes) -> Dialogue:
        """The peer answered the session CONNECT: MMS (then identify), X.400, or plain ISO session."""
        spdu, user = parse_session(payload)
        finding.details["session"] = spdu
        finding.add(f"ISO session {spdu}", payload[:96].hex())
        oids = []
        for item in ber_find(user, 0x06):
            try:
                oids.append(decode_oid(item.value))
            except NotThisProtocol:
                continue
        if oids:
            finding.details["oids"] = sorted(set(oids))
        if any(o.startswith("2.6.") for o in oids):
            # MHS object identifiers (X.400/X.419: id-ac-mts-transfer ...): recognised from the
            # published layouts only; no X.400 MTA exists in the lab.
            finding.details["upper_layer"] = "x400"
            finding.extrainfo = "X.400 (MHS application context)"
            finding.confidence = 6
            return finding
        init = ber_find(user, 0xA9)  # MMS initiate-ResponsePDU
        err = ber_find(user, 0xAA)  # MMS initiate-ErrorPDU
        if spdu != "ACCEPT" or not (init or err):
            finding.extrainfo = f"ISO session ({spdu}), upper layer unknown"
            return finding
        finding.details["upper_layer"] = "mms"
        finding.confidence = 9
        finding.extrainfo = "MMS (ISO 9506), IEC 61850 style"
        if init:
            fields = {i.tag: i.value for i in ber_children(init[0].value)}
            detail = {}
            if 0x80 in fields:
                detail["local_detail_called"] = int.from_bytes(fields[0x80][:4], "big")
            if 0x83 in fields:
                detail["data_structure_nesting_level"] = int.from_bytes(fields[0x83][:2], "big")
            if 0xA4 in fields:
                sub = {i.tag: i.value for i in ber_children(fields[0xA4])}
                if 0x80 in sub:
                    detail["version"] = int.from_bytes(sub[0x80][:2], "big")
            finding.details["mms_initiate"] = detail
            finding.add("MMS initiate-Response", init[0].value[:64].hex())
        else:
            finding.details["mms_initiate"] = {"error": True}
            return finding
        ctx.found(finding)
        yield Send(build_cotp_dt(build_mms_identify(invoke_id=1)))
        try:
            ident_pdu = yield from _recv_tsdu()
            ident = parse_mms_identify(ident_pdu.data)
        except (RecvTimeout, RecvClosed, NotThisProtocol):
            return finding
        finding.details["mms_identify"] = {
            k: v for k, v in (("vendor", ident.vendor), ("model", ident.model), ("revision", ident.revision)) if v
        }
        finding.add("MMS identify", f"{ident.vendor} / {ident.model} / {ident.revision}")
        name = " ".join(x for x in (ident.vendor, ident.model) if x)
        finding.product = name or None
        finding.version = ident.revision
        finding.confidence = 10 if name else 9
        return finding

    def _s7_path(self, ctx: ProbeContext, finding: Finding, raw: bytes, setup: dict[str, int]) -> Dialogue:
        """S7comm answered setup communication: read module and component identification."""
        finding.details["upper_layer"] = "s7comm"
        finding.details["s7_setup"] = setup
        finding.add("S7comm setup communication Ack_Data", raw[:64].hex())
        finding.confidence = 9
        finding.extrainfo = "S7comm"
        ctx.found(finding)
        identity: dict[str, str] = {}
        for szl_id in (0x0011, 0x001C):
            yield Send(build_cotp_dt(build_s7_szl_read(ctx.rng.randint(1, 0xFFFF), szl_id)))
            try:
                pdu = yield from _recv_tsdu()
                szl = parse_szl_response(pdu.data)
            except (RecvTimeout, RecvClosed):
                break
            except NotThisProtocol as exc:
                finding.details[f"szl_{szl_id:04x}_error"] = str(exc)
                continue
            if szl.szl_id != szl_id:
                # a capture of another client's SZL reads: record which, never decode one SZL as another
                finding.details.setdefault("szl_other", []).append(f"{szl.szl_id:#06x}/{szl.index:#06x}")
                continue
            part = (
                parse_module_identification(szl) if szl_id == 0x0011 else parse_component_identification(szl)
            )
            if part:
                finding.add(f"SZL {szl_id:#06x}", repr(part))
            identity.update(part)
        if identity:
            finding.details["module"] = identity
            model = identity.get("module_type") or identity.get("module_name")
            finding.product = f"S7 {model}" if model else None
            finding.version = identity.get("firmware")
            extra = [identity[k] for k in ("order_number", "station_name") if k in identity]
            finding.extrainfo = ", ".join(["S7comm", *extra])
            finding.confidence = 10 if model else 9
        return finding
