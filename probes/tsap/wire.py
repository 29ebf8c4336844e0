"""ISO-TSAP wire format: TPKT/COTP, a bounded BER walker, the ISO session and MMS identify, S7comm
setup and SZL reads, and their parsers. Part of the :mod:`probes.tsap` package (what it sends and
collects is described there)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from scanner.api import (
    NotThisProtocol,
    prefix_framer,
)
from scanner.textproto import decode_cstring

__all__ = [
    "BerItem",
    "CotpPdu",
    "MMS_INITIATE_CN",
    "MmsIdentity",
    "S7Pdu",
    "SzlResponse",
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
        mlfb = decode_cstring(rec[2:22]).strip()
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
        text = decode_cstring(rec[2:]).strip()
        if name and text and text.isprintable():
            out[name] = text
    return out


