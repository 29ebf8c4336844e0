"""DCE/RPC wire format: the PDU framer and reassembly, bind and ept_lookup/ept_map requests, and the
reply parsers (scapy msrpce layers under size caps). Part of the :mod:`probes.msrpc` package (what
it sends and collects is described there)."""

from __future__ import annotations

import functools
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any

from scanner.api import (
    FrameCursor,
    NotThisProtocol,
    ResumableFramer,
    prefix_framer,
)
from scanner.ntlm import NTLMChallenge, NTLMError, build_negotiate, find_ntlmssp, parse_challenge
from scanner.textproto import decode_cstring

__all__ = [
    "AuthVerifier",
    "BindReply",
    "EPM_UUID",
    "EPT_S_NOT_REGISTERED",
    "Endpoint",
    "KNOWN_INTERFACES",
    "LookupReply",
    "MAX_FRAGMENTS",
    "MAX_LOOKUPS",
    "MAX_REPLY",
    "PduHeader",
    "build_bind",
    "build_ept_lookup",
    "build_ntlm_bind",
    "frame_dcerpc_pdu",
    "frame_dcerpc_reply",
    "interface_name",
    "parse_auth_verifier",
    "parse_bind_challenge",
    "parse_bind_reply",
    "parse_ept_lookup_reply",
    "parse_ept_map_reply",
    "parse_fault",
    "parse_pdu_header",
    "parse_tower",
    "reassemble_stub",
]


EPM_UUID = uuid.UUID("e1af8308-5d1f-11c9-91a4-08002b14a0fa")
NDR_UUID = uuid.UUID("8a885d04-1ceb-11c9-9fe8-08002b104860")
#: ``ept_s_not_registered``: "no (more) entries"; Samba answers it to the call after the last entry
EPT_S_NOT_REGISTERED = 0x16C9A0D6
#: most ``ept_lookup`` calls in one dialogue
MAX_LOOKUPS = 16
#: entries asked for per ``ept_lookup`` call
MAX_ENTS = 500
#: most fragments in one reply, and most bytes in one reply (all fragments)
MAX_FRAGMENTS = 64
MAX_REPLY = 1024 * 1024
#: most endpoints kept in a finding
MAX_ENDPOINTS = 2000
#: most PDUs the replay dialogue reads from a captured server stream
MAX_REPLAY_PDUS = 64

# PDU types (C706 12.6.4)
PTYPE_REQUEST = 0
PTYPE_RESPONSE = 2
PTYPE_FAULT = 3
PTYPE_BIND = 11
PTYPE_BIND_ACK = 12
PTYPE_BIND_NAK = 13
PTYPE_ALTER_CONTEXT_RESP = 15
PTYPE_NAMES = {
    0: "request", 1: "ping", 2: "response", 3: "fault", 4: "working", 5: "nocall", 6: "reject",
    7: "ack", 8: "cl_cancel", 9: "fack", 10: "cancel_ack", 11: "bind", 12: "bind_ack",
    13: "bind_nak", 14: "alter_context", 15: "alter_context_resp", 16: "auth3", 17: "shutdown",
    18: "co_cancel", 19: "orphaned",
}
PFC_FIRST_FRAG = 0x01
PFC_LAST_FRAG = 0x02
#: sec_trailer auth_type RPC_C_AUTHN_WINNT (NTLMSSP) and auth_level RPC_C_AUTHN_LEVEL_CONNECT
#: ([MS-RPCE] 2.2.1.1.7, 2.2.1.1.8): "connect" asks for no signing or sealing of later PDUs
RPC_C_AUTHN_WINNT = 10
RPC_C_AUTHN_LEVEL_CONNECT = 2
#: call id of the NTLM bind (the first call on its own, fresh connection)
NTLM_BIND_CALL_ID = 1

#: Well-known RPC interfaces: UUID -> short name. From the Microsoft open specifications
#: ([MS-DRSR], [MS-NRPC], [MS-LSAD], [MS-SAMR], [MS-DNSP], [MS-OXNSPI], [MS-OXABREF], [MS-OXCRPC],
#: ...) and the interface lists published by Jean-Baptiste Marchand / Tenable (DCE Services
#: Enumeration) for the Exchange 2000/2003 MTA and System Attendant interfaces.
KNOWN_INTERFACES: dict[str, str] = {
    "e1af8308-5d1f-11c9-91a4-08002b14a0fa": "epmapper",
    "afa8bd80-7d8a-11c9-bef4-08002b102989": "mgmt",
    "0b0a6584-9e0f-11cf-a3cf-00805f68cb1b": "localepmp",
    # Active Directory / domain controller
    "e3514235-4b06-11d1-ab04-00c04fc2dcd2": "drsuapi",
    "12345678-1234-abcd-ef00-01234567cffb": "netlogon",
    "12345778-1234-abcd-ef00-0123456789ab": "lsarpc",
    "12345778-1234-abcd-ef00-0123456789ac": "samr",
    "3919286a-b10c-11d0-9ba8-00c04fd92ef5": "dssetup",
    "3dde7c30-165d-11d1-ab8f-00805f14db40": "backupkey",
    "ecec0d70-a603-11d0-96b1-00a0c91ece30": "ntdsbackup",
    "16e0cf3a-a604-11d0-96b1-00a0c91ece30": "ntdsrestore",
    "f5cc59b4-4264-101a-8c59-08002b2f8426": "frsrpc",
    "d049b186-814f-11d1-9a3c-00c04fc9b232": "frsapi",
    "68dcd486-669e-11d1-ab0c-00c04fc2dcd2": "ismserv",
    "50abc2a4-574d-40b3-9d66-ee4fd5fba076": "dnsserver",
    # Exchange
    "f5cc5a18-4264-101a-8c59-08002b2f8426": "nspi",
    "1544f5e0-613c-11d1-93df-00c04fd7bd09": "rfr",
    "a4f1db00-ca47-1067-b31f-00dd010662da": "emsmdb",
    "5261574a-4572-206e-b268-6b199213b4e4": "asyncemsmdb",
    "a4f1db00-ca47-1067-b31e-00dd010662da": "exchange-store-admin",
    "99e64010-b032-11d0-97a4-00c04fd6551d": "exchange-store-admin",
    "89742ace-a9ed-11cf-9c0c-08002be7ae86": "exchange-store-admin",
    "0e4a0156-dd5d-11d2-8c2f-00c04fb6bcde": "exchange-information-store",
    "1453c42c-0fa6-11d2-a910-00c04f990f3b": "exchange-information-store",
    "10f24e8e-0fa6-11d2-a910-00c04f990f3b": "exchange-information-store",
    "9e8ee830-4459-11ce-979b-00aa005ffebe": "exchange-mta",
    "38a94e72-a9bc-11d2-8faf-00c04fa378ff": "exchange-mta-qadmin",
    "469d6ec0-0d87-11ce-b13f-00aa003bac6c": "exchange-sa-public",
    "83d72bf0-0d89-11ce-b13f-00aa003bac6c": "exchange-sa-private",
    "f930c514-1215-11d3-99a5-00a0c9b61b04": "exchange-sa-cluster",
    "f5cc5a7c-4264-101a-8c59-08002b2f8426": "xds",
    # common Windows / Samba services
    "6bffd098-a112-3610-9833-012892020162": "browser",
    "6bffd098-a112-3610-9833-46c3f87e345a": "wkssvc",
    "4b324fc8-1670-01d3-1278-5a47bf6ee188": "srvsvc",
    "338cd001-2244-31f1-aaaa-900038001003": "winreg",
    "367abb81-9844-35f1-ad32-98f038001003": "svcctl",
    "82273fdc-e32a-18c3-3f78-827929dc23ea": "eventlog",
    "f6beaff7-1e19-4fbb-9f8f-b89e2018337c": "eventlog6",
    "8d9f4e40-a03d-11ce-8f69-08003e30051b": "ntsvcs",
    "12345678-1234-abcd-ef00-0123456789ab": "spoolss",
    "76f03f96-cdfd-44fc-a22c-64950a001209": "iremotewinspool",
    "894de0c0-0d55-11d3-a322-00c04fa321a1": "initshutdown",
    "d95afe70-a6d5-4259-822e-2c84da1ddb0d": "windowsshutdown",
    "4fc742e0-4a10-11cf-8273-00aa004ae673": "netdfs",
    "1ff70682-0a51-30e8-076d-740be8cee98b": "atsvc",
    "378e52b0-c0a9-11cf-822d-00aa0051e40f": "sasec",
    "86d35949-83c9-4044-b424-db363231fd0c": "itaskschedulerservice",
    "c681d488-d850-11d0-8c52-00c04fd90f7e": "efsrpc",
    "df1941c5-fe89-4e79-bf10-463657acf44d": "efsrpc",
    "a8e0653c-2744-4389-a61d-7373df8b2292": "fsrvp",
    "12b81e99-f207-4a4c-85d3-77b42f76fd14": "seclogon",
    "91ae6020-9e3c-11cf-8d7c-00aa00c091be": "icertpassage",
    "906b0ce0-c70b-1067-b317-00dd010662da": "msdtc",
    # DCOM
    "99fcfec4-5260-101b-bbcb-00aa0021347a": "ioxidresolver",
    "000001a0-0000-0000-c000-000000000046": "isystemactivator",
    "4d9f4ab8-7d1c-11cf-861e-0020af6e7c57": "iactivation",
    "b9e79e60-3d52-11ce-aaa1-00006901293f": "irot",
    # Samba only
    "9c54e310-a955-4885-bd31-78787147dfa6": "unixinfo",
    "885d85fb-c754-4062-a0e7-6872ce0064f4": "mdssvc",
}

#: interfaces that only Samba registers
SAMBA_ONLY = frozenset({"unixinfo", "mdssvc"})
#: interfaces that only Windows registers (not implemented by Samba 4.x)
WINDOWS_ONLY = frozenset(
    {"iremotewinspool", "windowsshutdown", "itaskschedulerservice", "seclogon", "ioxidresolver",
     "isystemactivator", "iactivation", "msdtc", "localepmp"}
)
EXCHANGE = frozenset(
    {"nspi", "rfr", "emsmdb", "asyncemsmdb", "exchange-store-admin", "exchange-information-store",
     "exchange-mta", "exchange-mta-qadmin", "exchange-sa-public", "exchange-sa-private",
     "exchange-sa-cluster"}
)


def interface_name(if_uuid: str) -> str | None:
    """The well-known name of an RPC interface UUID (lower-case string form), or None."""
    return KNOWN_INTERFACES.get(if_uuid.lower())


# ---------------------------------------------------------------- framing


@dataclass(frozen=True, slots=True)
class PduHeader:
    """The 16-byte common header of a connection-oriented DCE/RPC PDU (C706 12.6.3.1)."""

    rpc_vers: int
    rpc_vers_minor: int
    ptype: int
    pfc_flags: int
    little_endian: bool
    frag_len: int
    auth_len: int
    call_id: int

    @property
    def ptype_name(self) -> str:
        """The PDU type's name (``bind_ack``, ``response``, ...)."""
        return PTYPE_NAMES.get(self.ptype, f"ptype-{self.ptype}")


def parse_pdu_header(buf: bytes) -> PduHeader:
    """Parse and check the common header at the start of ``buf`` (16 bytes needed).

    Raises :class:`NotThisProtocol` when the bytes cannot be a DCE/RPC v5 PDU.
    """
    if len(buf) < 16:
        raise NotThisProtocol("shorter than a DCE/RPC header")
    vers, minor, ptype, flags = buf[0], buf[1], buf[2], buf[3]
    if vers != 5 or minor > 1:
        raise NotThisProtocol(f"not DCE/RPC v5 (version {vers}.{minor})")
    if ptype not in PTYPE_NAMES:
        raise NotThisProtocol(f"unknown DCE/RPC PDU type {ptype}")
    if buf[4] & 0xEE or buf[5] > 3:  # integer/char representation, float representation
        raise NotThisProtocol("bad DCE/RPC data representation")
    little = bool(buf[4] & 0x10)
    frag_len, auth_len, call_id = struct.unpack("<HHI" if little else ">HHI", buf[8:16])
    if frag_len < 16:
        raise NotThisProtocol(f"DCE/RPC frag_len {frag_len} shorter than the header")
    if auth_len and auth_len + 8 > frag_len - 16:
        raise NotThisProtocol("DCE/RPC auth_len larger than the fragment")
    return PduHeader(vers, minor, ptype, flags, little, frag_len, auth_len, call_id)


@prefix_framer
def frame_dcerpc_pdu(buf: bytes) -> int | None:
    """Frame one DCE/RPC PDU (one fragment) by its ``frag_len``."""
    if len(buf) < 16:
        # check what we have so garbage is rejected early
        if len(buf) >= 1 and buf[0] != 5:
            raise NotThisProtocol("not DCE/RPC v5")
        if len(buf) >= 3 and buf[2] not in PTYPE_NAMES:
            raise NotThisProtocol("unknown DCE/RPC PDU type")
        return None
    hdr = parse_pdu_header(buf)
    return hdr.frag_len if len(buf) >= hdr.frag_len else None


class _ReplyCursor:
    """Walks the fragments of a reply once each: ``pos`` is where the next fragment starts."""

    __slots__ = ("frags", "pos")

    def __init__(self) -> None:
        self.pos = 0
        self.frags = 0

    def feed(self, buf: bytes | bytearray) -> int | None:
        while True:
            pos = self.pos
            head = bytes(buf[pos : pos + 16])
            if len(head) < 16:
                frame_dcerpc_pdu(head)  # rejects garbage in an incomplete header at once
                hdr = None
            else:
                hdr = parse_pdu_header(head)
            if hdr is None or len(buf) < pos + hdr.frag_len:
                if pos + 16 > MAX_REPLY:
                    raise NotThisProtocol("DCE/RPC reply larger than the cap")
                return None
            self.pos = pos = pos + hdr.frag_len
            self.frags += 1
            if pos > MAX_REPLY:
                raise NotThisProtocol("DCE/RPC reply larger than the cap")
            if hdr.ptype != PTYPE_RESPONSE or hdr.pfc_flags & PFC_LAST_FRAG:
                return pos
            if self.frags >= MAX_FRAGMENTS:
                raise NotThisProtocol(f"more than {MAX_FRAGMENTS} fragments in one reply")


class ReplyFramer(ResumableFramer):
    """Frame a whole DCE/RPC reply: fragments up to the one flagged ``PFC_LAST_FRAG``.

    Only ``response`` PDUs are fragmented; any other PDU type is a message by itself. At most
    :data:`MAX_FRAGMENTS` fragments and :data:`MAX_REPLY` bytes.
    """

    def cursor(self) -> FrameCursor:
        return _ReplyCursor()


#: frame a whole (possibly fragmented) DCE/RPC reply (see :class:`ReplyFramer`)
frame_dcerpc_reply = ReplyFramer()


def _fragments(message: bytes) -> list[tuple[PduHeader, bytes]]:
    """Split a framed reply into (header, whole fragment) pairs."""
    out: list[tuple[PduHeader, bytes]] = []
    pos = 0
    while pos < len(message) and len(out) < MAX_FRAGMENTS:
        hdr = parse_pdu_header(message[pos:])
        if pos + hdr.frag_len > len(message):
            raise NotThisProtocol("truncated DCE/RPC fragment")
        out.append((hdr, message[pos : pos + hdr.frag_len]))
        pos += hdr.frag_len
    return out


def reassemble_stub(message: bytes) -> bytes:
    """The stub data of a (possibly multi-fragment) ``response``, fragments joined in order."""
    stub = bytearray()
    frags = _fragments(message)
    if not frags:
        raise NotThisProtocol("empty DCE/RPC reply")
    for hdr, frag in frags:
        if hdr.ptype != PTYPE_RESPONSE:
            raise NotThisProtocol(f"expected a response fragment, got {hdr.ptype_name}")
        end = hdr.frag_len - (hdr.auth_len + 8 if hdr.auth_len else 0)
        if end < 24:
            raise NotThisProtocol("DCE/RPC response fragment too short")
        stub += frag[24:end]
    return bytes(stub)


# ---------------------------------------------------------------- build


@functools.lru_cache(maxsize=16)
def build_bind(call_id: int = 1, max_frag: int = 4280, auth_token: bytes | None = None) -> bytes:
    """A ``bind`` PDU for the EPM interface v3.0 with the NDR 2.0 transfer syntax (cached: the
    same few PDUs are asked for again and again, once per dialogue).

    With ``auth_token`` the PDU ends with an auth verifier (C706 13.2.6.1 ``sec_trailer``:
    ``auth_type`` RPC_C_AUTHN_WINNT, ``auth_level`` connect, ``auth_context_id`` 0, then the
    token); scapy's ``CommonAuthVerifier`` lays it out and computes ``auth_len`` and the padding.
    Without one the PDU is packed here with ``struct``: every replayed TCP flow no probe has named
    yet runs this dialogue's first step, and importing scapy's DCE/RPC layer costs ~0.4 s
    (tests/replay/test_fastpath.py checks the bytes against scapy's build).
    """
    if auth_token is None:
        # bind body (C706 12.6.4.3), little endian: max_xmit_frag(2) max_recv_frag(2)
        # assoc_group_id(4), p_cont_list: n_context_elem(1) reserved(1) reserved2(2), one p_cont_elem:
        # p_cont_id(2) n_transfer_syn(1) reserved(1), abstract syntax: if_uuid(16, little-endian
        # fields) if_version major(2) minor(2), one transfer syntax: uuid(16) version(4)
        body = (
            struct.pack("<HHIBBHHBB", max_frag, max_frag, 0, 1, 0, 0, 0, 1, 0)
            + EPM_UUID.bytes_le
            + struct.pack("<HH", 3, 0)
            + NDR_UUID.bytes_le
            + struct.pack("<I", 2)
        )
        # common header (C706 12.6.3.1): rpc_vers 5, minor 0, ptype, pfc_flags (first and last
        # fragment), data representation (little endian, ASCII, IEEE), frag_length, auth_length,
        # call_id
        return struct.pack(
            "<BBBB4sHHI", 5, 0, PTYPE_BIND, 0x03, b"\x10\x00\x00\x00", 16 + len(body), 0, call_id
        ) + body
    from scapy.layers.dcerpc import (
        CommonAuthVerifier,
        DceRpc5,
        DceRpc5AbstractSyntax,
        DceRpc5Bind,
        DceRpc5Context,
        DceRpc5TransferSyntax,
    )
    from scapy.packet import Raw

    ctx = DceRpc5Context(
        cont_id=0,
        abstract_syntax=DceRpc5AbstractSyntax(if_uuid=EPM_UUID, if_version=3),
        transfer_syntaxes=[DceRpc5TransferSyntax(if_uuid=NDR_UUID, if_version=2)],
    )
    header: dict[str, Any] = {"ptype": PTYPE_BIND, "pfc_flags": 0x03, "endian": "little", "call_id": call_id}
    if auth_token is not None:
        header["auth_verifier"] = CommonAuthVerifier(
            auth_type=RPC_C_AUTHN_WINNT,
            auth_level=RPC_C_AUTHN_LEVEL_CONNECT,
            auth_context_id=0,
            auth_value=Raw(auth_token),
        )
    pdu = DceRpc5(**header) / DceRpc5Bind(
        max_xmit_frag=max_frag, max_recv_frag=max_frag, assoc_group_id=0, context_elem=[ctx]
    )
    return bytes(pdu)


def build_ntlm_bind(call_id: int = NTLM_BIND_CALL_ID, max_frag: int = 4280) -> bytes:
    """A ``bind`` to EPM v3.0 carrying an NTLMSSP NEGOTIATE (:func:`scanner.ntlm.build_negotiate`:
    no domain, no workstation, a zeroed VERSION) in its auth verifier, ``auth_level`` connect.

    The server answers with a ``bind_ack`` whose verifier holds the NTLMSSP CHALLENGE. The
    handshake's third leg (an ``auth3`` PDU with the AUTHENTICATE message) is never sent.
    """
    return build_bind(call_id, max_frag, auth_token=build_negotiate())


def build_ept_lookup(call_id: int, entry_handle: bytes = b"\x00" * 20, max_ents: int = MAX_ENTS) -> bytes:
    """An ``ept_lookup`` request (opnum 2) for all entries, continuing from ``entry_handle``."""
    from scapy.layers.dcerpc import DceRpc5, DceRpc5Request, NDRContextHandle
    from scapy.layers.msrpce.raw.ept import ept_lookup_Request
    from scapy.packet import Raw

    if len(entry_handle) != 20:
        raise ValueError("an entry handle is 20 bytes")
    handle = NDRContextHandle(
        attributes=struct.unpack("<I", entry_handle[:4])[0], uuid=entry_handle[4:]
    )
    stub = bytes(
        ept_lookup_Request(
            inquiry_type=0,  # RPC_C_EP_ALL_ELTS
            object=None,
            Ifid=None,
            vers_option=1,  # RPC_C_VERS_ALL
            entry_handle=handle,
            max_ents=max_ents,
            ndr64=False,
        )
    )
    pdu = DceRpc5(ptype=PTYPE_REQUEST, pfc_flags=0x03, endian="little", call_id=call_id) / DceRpc5Request(
        alloc_hint=len(stub), cont_id=0, opnum=2
    ) / Raw(stub)
    return bytes(pdu)


# ---------------------------------------------------------------- parse


@dataclass(slots=True)
class BindReply:
    """What a ``bind_ack`` / ``bind_nak`` said."""

    #: "bind_ack" or "bind_nak"
    kind: str
    #: context results: "acceptance", "user_rejection", "provider_rejection"
    results: list[str] = field(default_factory=list)
    max_xmit_frag: int | None = None
    max_recv_frag: int | None = None
    assoc_group_id: int | None = None
    #: the secondary address (the port the server says it listens on, "135")
    sec_addr: str | None = None
    #: bind_nak: the provider reject reason (number)
    reject_reason: int | None = None

    @property
    def accepted(self) -> bool:
        """True when the EPM presentation context was accepted."""
        return self.kind == "bind_ack" and bool(self.results) and self.results[0] == "acceptance"


_RESULTS = {0: "acceptance", 1: "user_rejection", 2: "provider_rejection", 3: "negotiate_ack"}


def _scapy_errors() -> tuple[type[Exception], ...]:
    """What scapy's dissectors raise on malformed bytes: its own ``Scapy_Exception``, and the
    ``struct.error``/``ValueError``/``UnicodeError`` of field decoding. Anything else (a
    ``TypeError``, ``AttributeError``, ``KeyError`` ...) is a probe bug and is reported as one."""
    from scapy.error import Scapy_Exception

    return (Scapy_Exception, struct.error, ValueError, UnicodeError)


def _layer(pkt: Any, cls: Any) -> Any:
    """The ``cls`` layer of a dissected packet (NotThisProtocol when the bytes did not hold it)."""
    layer = pkt.getlayer(cls)
    if layer is None:
        raise NotThisProtocol(f"no {cls.__name__} in the PDU")
    return layer


def _items(seq: Any, cls: Any, what: str) -> list[Any]:
    """The dissected items of a list field; a malformed part dissects as another class (``Raw``),
    which is not this protocol (reading its fields would raise AttributeError)."""
    items = list(seq or [])
    if not all(isinstance(i, cls) for i in items):
        raise NotThisProtocol(f"malformed {what}")
    return items


def _int(value: Any, what: str) -> int:
    """A dissected integer field (None when the bytes ended before it: not this protocol)."""
    if value is None:
        raise NotThisProtocol(f"{what} missing")
    return int(value)


def parse_bind_reply(message: bytes) -> BindReply:
    """Parse a ``bind_ack`` or ``bind_nak`` PDU."""
    hdr = parse_pdu_header(message)
    if hdr.ptype not in (PTYPE_BIND_ACK, PTYPE_BIND_NAK) or len(message) < hdr.frag_len:
        raise NotThisProtocol(f"expected bind_ack/bind_nak, got {hdr.ptype_name}")
    from scapy.layers.dcerpc import DceRpc5, DceRpc5BindAck, DceRpc5BindNak, DceRpc5Result

    try:
        pkt = DceRpc5(message[: hdr.frag_len])
        if hdr.ptype == PTYPE_BIND_NAK:
            nak = _layer(pkt, DceRpc5BindNak)
            return BindReply(kind="bind_nak", reject_reason=_int(nak.provider_reject_reason, "reject reason"))
        ack = _layer(pkt, DceRpc5BindAck)
        sec = ack.sec_addr.port_spec if ack.sec_addr is not None else b""
        results = _items(ack.results, DceRpc5Result, "results")[:16]
        return BindReply(
            kind="bind_ack",
            results=[_RESULTS.get(_int(r.result, "result"), str(r.result)) for r in results],
            max_xmit_frag=_int(ack.max_xmit_frag, "max_xmit_frag"),
            max_recv_frag=_int(ack.max_recv_frag, "max_recv_frag"),
            assoc_group_id=_int(ack.assoc_group_id, "assoc_group_id"),
            sec_addr=decode_cstring(bytes(sec or b"")) or None,
        )
    except _scapy_errors() as exc:
        raise NotThisProtocol(f"malformed {hdr.ptype_name}: {exc}") from None


@dataclass(frozen=True, slots=True)
class AuthVerifier:
    """The auth verifier at the end of a PDU: the 8-byte ``sec_trailer`` and the token after it."""

    #: 10 NTLMSSP (RPC_C_AUTHN_WINNT), 9 SPNEGO, 16 Kerberos, 68 Netlogon, ...
    auth_type: int
    #: 1 none .. 6 packet privacy
    auth_level: int
    auth_pad_length: int
    auth_context_id: int
    #: the security token (``auth_len`` bytes)
    token: bytes


def parse_auth_verifier(message: bytes) -> AuthVerifier | None:
    """The auth verifier of the first PDU in ``message``, or None when ``auth_len`` is 0.

    Layout ([MS-RPCE] 2.2.2.11): the last ``auth_len + 8`` bytes of the fragment are
    ``auth_type`` (1), ``auth_level`` (1), ``auth_pad_length`` (1), reserved (1),
    ``auth_context_id`` (4, in the PDU's byte order), then the token. A few ``struct`` reads,
    bounded by :func:`parse_pdu_header` (``auth_len + 8`` fits in the body); the token is left for
    the bounds-checked NTLM parser rather than scapy's NTLM dissector, which trusts the offsets.
    """
    hdr = parse_pdu_header(message)
    if len(message) < hdr.frag_len:
        raise NotThisProtocol("truncated DCE/RPC PDU")
    if not hdr.auth_len:
        return None
    at = hdr.frag_len - hdr.auth_len - 8
    auth_type, level, pad, _reserved, context_id = struct.unpack_from(
        "<BBBBI" if hdr.little_endian else ">BBBBI", message, at
    )
    return AuthVerifier(auth_type, level, pad, context_id, bytes(message[at + 8 : hdr.frag_len]))


def parse_bind_challenge(message: bytes) -> tuple[AuthVerifier, NTLMChallenge]:
    """The NTLMSSP CHALLENGE in a ``bind_ack`` or ``alter_context_resp``'s auth verifier.

    The token is a raw NTLMSSP message (auth_type 10) or one wrapped in SPNEGO (auth_type 9):
    :func:`scanner.ntlm.find_ntlmssp` finds either. Raises :class:`NotThisProtocol` for another
    PDU type and :class:`scanner.ntlm.NTLMError` (a subclass) when there is no verifier or the
    CHALLENGE is malformed (offsets past the end, bad UTF-16, ...).
    """
    hdr = parse_pdu_header(message)
    if hdr.ptype not in (PTYPE_BIND_ACK, PTYPE_ALTER_CONTEXT_RESP):
        raise NotThisProtocol(f"expected bind_ack/alter_context_resp, got {hdr.ptype_name}")
    verifier = parse_auth_verifier(message)
    if verifier is None:
        raise NTLMError(f"{hdr.ptype_name} without an auth verifier")
    return verifier, parse_challenge(find_ntlmssp(verifier.token))


def parse_fault(message: bytes) -> int:
    """The status code of a ``fault`` PDU."""
    hdr = parse_pdu_header(message)
    if hdr.ptype != PTYPE_FAULT or len(message) < 28 or hdr.frag_len < 28:
        raise NotThisProtocol("not a DCE/RPC fault")
    return int(struct.unpack("<I" if hdr.little_endian else ">I", message[24:28])[0])


@dataclass(slots=True)
class Endpoint:
    """One entry registered with the endpoint mapper."""

    #: interface UUID (string form) and version "major.minor"
    interface: str
    version: str
    #: well-known interface name, if known
    name: str | None = None
    annotation: str = ""
    #: "ncacn_ip_tcp", "ncacn_np", "ncalrpc", "ncacn_http", "ncadg_ip_udp", ...
    protseq: str | None = None
    #: TCP/UDP port, pipe name or LRPC endpoint name
    endpoint: str | None = None
    #: host address or NetBIOS name in the tower, if any
    host: str | None = None
    #: object UUID, when not nil
    object: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (None values left out)."""
        return {k: getattr(self, k) for k in self.__slots__ if getattr(self, k) not in (None, "")}


# floor-3 protocol id -> protocol sequence (C706 appendix I, [MS-RPCE] 2.2.1.1.x)
_PROTSEQ = {
    0x07: "ncacn_ip_tcp", 0x08: "ncadg_ip_udp", 0x0F: "ncacn_np", 0x10: "ncalrpc",
    0x1F: "ncacn_http", 0x11: "ncacn_nb", 0x12: "ncacn_nb_nb",
}


def _str(value: Any) -> str:
    """A tower floor's or annotation's value as text: a C string (bytes) or scapy's decoded value."""
    return decode_cstring(value) if isinstance(value, bytes) else str(value)


def parse_tower(tower: bytes) -> Endpoint:
    """Parse a protocol tower (C706 appendix L) into an :class:`Endpoint`."""
    from scapy.layers.msrpce.ept import prot_and_addr_t, protocol_tower_t

    try:
        floors = _items(protocol_tower_t(tower).floors, prot_and_addr_t, "tower floors")
        if len(floors) < 3 or floors[0].protocol_identifier != 0x0D:
            raise NotThisProtocol("protocol tower without an interface floor")
        f0 = floors[0]
        if_uuid = str(f0.uuid).lower()
        version = f"{_int(f0.version, 'interface version')}.{int(f0.rhs) if isinstance(f0.rhs, int) else 0}"
        ep = Endpoint(interface=if_uuid, version=version, name=interface_name(if_uuid))
        if floors[2].protocol_identifier == 0x0C and len(floors) >= 4:  # ncalrpc
            ep.protseq = "ncalrpc"
            ep.endpoint = _str(floors[3].rhs)
        elif len(floors) >= 4:
            pid = _int(floors[3].protocol_identifier, "protocol identifier")
            ep.protseq = _PROTSEQ.get(pid, f"protocol-{pid:#x}")
            ep.endpoint = _str(floors[3].rhs)
            if len(floors) >= 5:
                ep.host = _str(floors[4].rhs)
        return ep
    except _scapy_errors() as exc:
        raise NotThisProtocol(f"malformed protocol tower: {exc}") from None


@dataclass(slots=True)
class LookupReply:
    """One ``ept_lookup`` answer."""

    entry_handle: bytes
    status: int
    entries: list[Endpoint] = field(default_factory=list)

    @property
    def handle_is_null(self) -> bool:
        """True when the server says there is nothing more to ask for."""
        return self.entry_handle == b"\x00" * 20


def parse_ept_lookup_reply(message: bytes) -> LookupReply:
    """Parse an ``ept_lookup`` response (all fragments) into entries, handle and status."""
    stub = reassemble_stub(message)
    if len(stub) < 28:
        raise NotThisProtocol("ept_lookup response too short")
    handle = stub[:20]
    status = int(struct.unpack("<I", stub[-4:])[0])
    num_ents = int(struct.unpack("<I", stub[20:24])[0])
    if num_ents == 0:
        return LookupReply(handle, status)
    if num_ents > MAX_ENDPOINTS:
        raise NotThisProtocol(f"ept_lookup claims {num_ents} entries")
    from scapy.layers.msrpce.raw.ept import ept_lookup_Response

    try:
        resp = ept_lookup_Response(stub, ndr64=False)
        raw_entries = resp.valueof("entries") or []
        entries: list[Endpoint] = []
        for raw in list(raw_entries)[:MAX_ENDPOINTS]:
            tower = raw.valueof("tower")
            octets = bytes(tower.tower_octet_string) if tower is not None else b""
            ep = parse_tower(octets)
            # (scapy 2.8's valueof() fails on NDRVarStrLenField: read the varying array's value)
            annotation = raw.annotation
            ep.annotation = _str(getattr(annotation, "value", annotation) or b"")
            obj = uuid.UUID(bytes_le=bytes(raw.object)[:16]) if len(bytes(raw.object)) >= 16 else None
            if obj is not None and obj.int:
                ep.object = str(obj)
            entries.append(ep)
    except _scapy_errors() as exc:
        raise NotThisProtocol(f"malformed ept_lookup response: {exc}") from None
    return LookupReply(handle, status, entries)


def parse_ept_map_reply(message: bytes) -> tuple[int, list[Endpoint]]:
    """Parse an ``ept_map`` response (status, towers), NDR 2.0 or NDR64 (whichever parses).

    A captured client may have negotiated either transfer syntax; the response itself does not
    say which, so both decodings are tried and the one giving well-formed towers wins.
    """
    stub = reassemble_stub(message)
    if len(stub) < 28:
        raise NotThisProtocol("ept_map response too short")
    from scapy.layers.msrpce.raw.ept import ept_map_Response

    last = "no towers"
    for ndr64 in (False, True):
        try:
            resp = ept_map_Response(stub, ndr64=ndr64)
            towers = [t for t in (resp.valueof("ITowers") or []) if t is not None][:MAX_ENDPOINTS]
            if int(resp.num_towers) != len(towers):
                continue
            eps = [parse_tower(bytes(t.tower_octet_string)) for t in towers]
            return int(resp.status), eps
        except NotThisProtocol as exc:
            last = str(exc)
        except _scapy_errors() as exc:
            last = f"{type(exc).__name__}: {exc}"
    raise NotThisProtocol(f"malformed ept_map response: {last}")


