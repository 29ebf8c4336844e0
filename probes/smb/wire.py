"""SMB wire format: NetBIOS session framing, request builders and reply parsers (pure functions).
Part of the :mod:`probes.smb` package.

Requests are built with scapy's layers (``scapy.layers.smb2``, ``scapy.layers.smb``,
``scapy.layers.spnego``, imported lazily: scapy takes a while to import), except the NetBIOS
session request, which scapy has no packet for (RFC 1002 4.3.2: two encoded names, a few lines).

Replies are parsed with small ``struct`` code instead of scapy's dissectors: those raise a bare
``struct.error`` on a truncated SMB2 header and turn a malformed tail into ``Raw`` or into fields
that point past the message without a word, so every offset would have to be checked again after
them anyway. Here every length and offset is checked where it is read and every defect raises
:class:`~scanner.api.NotThisProtocol` with a message that says what was wrong; a negotiate reply
costs ~15 us to parse (scapy: ~0.7 ms). The tests check that these parsers and scapy's dissectors
agree on the real replies of the lab's Samba.

Byte layouts: MS-SMB2 2.2 (SMB2 header, NEGOTIATE, SESSION_SETUP), MS-CIFS/MS-SMB 2.2 (SMB1 header,
NEGOTIATE, SESSION_SETUP_ANDX), RFC 1002 4.3 (NetBIOS session service), MS-SMB2 2.1 (direct TCP:
one zero byte and a 24-bit length in front of each message).
"""

from __future__ import annotations

import functools
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any

from scanner.api import NotThisProtocol, prefix_framer
from scanner.ntlm import build_negotiate, filetime_to_datetime

__all__ = [
    "CAP_EXTENDED_SECURITY",
    "DIALECTS",
    "MAX_SMB_MESSAGE",
    "NBSS_KEEPALIVE",
    "NBSS_MESSAGE",
    "NBSS_NEGATIVE",
    "NBSS_POSITIVE",
    "NBSS_RETARGET",
    "SMB1_MAGIC",
    "SMB2_MAGIC",
    "STATUS_MORE_PROCESSING_REQUIRED",
    "NetBIOSMessage",
    "SMB1Negotiate",
    "SMB1SessionSetup",
    "SMB2Header",
    "SMB2Negotiate",
    "SMB2SessionSetup",
    "build_netbios_session_request",
    "build_smb1_negotiate",
    "build_smb1_session_setup",
    "build_smb2_negotiate",
    "build_smb2_session_setup",
    "build_spnego_ntlm_negotiate",
    "dialect_name",
    "encode_netbios_name",
    "frame_netbios",
    "parse_netbios",
    "parse_smb1_negotiate",
    "parse_smb1_session_setup",
    "parse_smb2_header",
    "parse_smb2_negotiate",
    "parse_smb2_session_setup",
    "spnego_mechs",
]

# ---------------------------------------------------------------- constants

SMB2_MAGIC = b"\xfeSMB"
SMB1_MAGIC = b"\xffSMB"
#: SMB 3 transform (encrypted) and compression headers: a server only sends them after a session
#: exists, but they are SMB all the same
_OTHER_MAGICS = (b"\xfdSMB", b"\xfcSMB")

#: NetBIOS session service packet types (RFC 1002 4.3.1)
NBSS_MESSAGE = 0x00
NBSS_REQUEST = 0x81
NBSS_POSITIVE = 0x82
NBSS_NEGATIVE = 0x83
NBSS_RETARGET = 0x84
NBSS_KEEPALIVE = 0x85
_NBSS_TYPES = {
    NBSS_MESSAGE: "session message",
    NBSS_POSITIVE: "positive session response",
    NBSS_NEGATIVE: "negative session response",
    NBSS_RETARGET: "retarget session response",
    NBSS_KEEPALIVE: "session keepalive",
}
#: negative session response error codes (RFC 1002 4.3.4)
NBSS_ERRORS = {
    0x80: "not listening on called name",
    0x81: "not listening for calling name",
    0x82: "called name not present",
    0x83: "called name present, but insufficient resources",
    0x8F: "unspecified error",
}

#: the biggest SMB message we accept: our requests draw replies of a few hundred bytes (a
#: negotiate with its SPNEGO hints and contexts, a CHALLENGE in a session setup), so a length past
#: this is a lie or not SMB
MAX_SMB_MESSAGE = 64 * 1024 - 4

STATUS_SUCCESS = 0
STATUS_MORE_PROCESSING_REQUIRED = 0xC0000016
_STATUS_NAMES = {
    0x00000000: "STATUS_SUCCESS",
    0xC0000016: "STATUS_MORE_PROCESSING_REQUIRED",
    0xC0000022: "STATUS_ACCESS_DENIED",
    0xC000000D: "STATUS_INVALID_PARAMETER",
    0xC00000BB: "STATUS_NOT_SUPPORTED",
    0xC0000002: "STATUS_NOT_IMPLEMENTED",
    0xC000006D: "STATUS_LOGON_FAILURE",
    0xC0000001: "STATUS_UNSUCCESSFUL",
    0x00010002: "ERRSRV/ERRerror (DOS)",
}

#: SMB2 dialects we offer, in the order of MS-SMB2 2.2.3 (2.0.2, 2.1, 3.0, 3.0.2, 3.1.1)
DIALECTS = (0x0202, 0x0210, 0x0300, 0x0302, 0x0311)
_DIALECT_NAMES = {0x0202: "2.0.2", 0x0210: "2.1", 0x0222: "2.2.2", 0x0224: "2.2.4", 0x0300: "3.0",
                  0x0302: "3.0.2", 0x0310: "3.1.0", 0x0311: "3.1.1", 0x02FF: "2.??? (wildcard)"}

#: SMB2 capabilities (MS-SMB2 2.2.4)
_SMB2_CAPS = {0x01: "DFS", 0x02: "LEASING", 0x04: "LARGE_MTU", 0x08: "MULTI_CHANNEL",
              0x10: "PERSISTENT_HANDLES", 0x20: "DIRECTORY_LEASING", 0x40: "ENCRYPTION",
              0x80: "NOTIFICATIONS"}
#: SMB1 capabilities (MS-CIFS 2.2.4.52.2, MS-SMB 2.2.4.5.2)
CAP_EXTENDED_SECURITY = 0x80000000
_SMB1_CAPS = {0x1: "RAW_MODE", 0x2: "MPX_MODE", 0x4: "UNICODE", 0x8: "LARGE_FILES", 0x10: "NT_SMBS",
              0x20: "RPC_REMOTE_APIS", 0x40: "STATUS32", 0x80: "LEVEL_II_OPLOCKS", 0x100: "LOCK_AND_READ",
              0x200: "NT_FIND", 0x1000: "DFS", 0x2000: "INFOLEVEL_PASSTHRU", 0x4000: "LARGE_READX",
              0x8000: "LARGE_WRITEX", 0x10000: "LWIO", 0x800000: "UNIX", 0x2000000: "COMPRESSED_DATA",
              0x20000000: "DYNAMIC_REAUTH", 0x40000000: "PERSISTENT_HANDLES", CAP_EXTENDED_SECURITY:
              "EXTENDED_SECURITY"}

#: negotiate context types (MS-SMB2 2.2.3.1) and the algorithm ids they carry
_CTX_NAMES = {1: "preauth_integrity", 2: "encryption", 3: "compression", 5: "netname", 6: "transport",
              7: "rdma_transform", 8: "signing"}
_HASHES = {1: "SHA-512"}
_CIPHERS = {1: "AES-128-CCM", 2: "AES-128-GCM", 3: "AES-256-CCM", 4: "AES-256-GCM"}
_SIGNING = {0: "HMAC-SHA256", 1: "AES-CMAC", 2: "AES-GMAC"}
_COMPRESSION = {0: "NONE", 1: "LZNT1", 2: "LZ77", 3: "LZ77+Huffman", 4: "Pattern_V1", 5: "LZ4"}

#: well-known SPNEGO mechanism OIDs (their names, for the details)
_MECHS = {
    "1.2.840.48018.1.2.2": "MS KRB5",
    "1.2.840.113554.1.2.2": "KRB5",
    "1.2.840.113554.1.2.2.3": "KRB5 user-to-user",
    "1.3.6.1.4.1.311.2.2.10": "NTLMSSP",
    "1.3.6.1.4.1.311.2.2.30": "NEGOEX",
}

#: most negotiate contexts read from one reply (a server sends at most 8 kinds)
MAX_CONTEXTS = 16
#: most algorithm ids read from one negotiate context
MAX_IDS = 32
#: most UTF-16 characters read from one SMB1 string (NativeOS, NativeLanMan, domain)
MAX_STRING = 256


def dialect_name(dialect: int) -> str:
    """``"3.1.1"`` for 0x0311; unknown dialects as ``"0x0abc"``."""
    return _DIALECT_NAMES.get(dialect, f"0x{dialect:04x}")


def status_name(status: int) -> str:
    """The NTSTATUS name of ``status`` when known, else its hex."""
    return _STATUS_NAMES.get(status, f"0x{status:08x}")


def _flag_names(value: int, names: dict[int, str]) -> list[str]:
    """The names of the bits set in ``value`` (unknown bits as hex)."""
    out = [name for bit, name in names.items() if value & bit]
    rest = value & ~sum(names)
    if rest:
        out.append(f"0x{rest:08x}")
    return out


# ---------------------------------------------------------------- NetBIOS session service


def encode_netbios_name(name: str, suffix: int) -> bytes:
    """RFC 1001 14.1 first-level encoding of a NetBIOS name (15 characters padded with spaces plus
    the suffix byte, each nibble as ``'A' + nibble``), as a length-prefixed label with the root
    label after it: 34 bytes."""
    raw = name.upper().encode("ascii")[:15].ljust(15, b" ") + bytes([suffix & 0xFF])
    return b"\x20" + bytes(c for b in raw for c in (0x41 + (b >> 4), 0x41 + (b & 0x0F))) + b"\x00"


def build_netbios_session_request(called: str = "*SMBSERVER", calling: str = "PORTPROOF") -> bytes:
    """A NetBIOS SESSION REQUEST (RFC 1002 4.3.2) for port 139: called name (suffix 0x20, the
    server service), calling name (suffix 0x00, the workstation). ``*SMBSERVER`` is the name every
    SMB server answers to when the client does not know its NetBIOS name."""
    body = encode_netbios_name(called, 0x20) + encode_netbios_name(calling, 0x00)
    return struct.pack(">BBH", NBSS_REQUEST, 0, len(body)) + body


def _nbss(payload: bytes) -> bytes:
    """A session message: type 0 and a 24-bit length (MS-SMB2 2.1 direct TCP uses the same four
    bytes: a zero byte and a 3-byte length)."""
    if len(payload) > 0xFFFFFF:
        raise ValueError("SMB message too long")
    return b"\x00" + len(payload).to_bytes(3, "big") + payload


@prefix_framer
def frame_netbios(buf: bytes) -> int | None:
    """Frame one NetBIOS session packet (RFC 1002 4.3.1; on 445 the same four bytes, MS-SMB2 2.1).

    Layout: type (1 byte), then a 24-bit big-endian length (RFC 1002 gives 7 reserved bits and a
    17-bit length; direct TCP a 24-bit one: both read the same for lengths we accept). Rejects
    early: an unknown type, a length past :data:`MAX_SMB_MESSAGE`, and a session message whose
    first four bytes are not an SMB protocol id."""
    if not buf:
        return None
    kind = buf[0]
    if kind not in _NBSS_TYPES:
        raise NotThisProtocol(f"byte 0x{kind:02x} is no NetBIOS session packet type")
    if len(buf) < 4:
        return None
    length = int.from_bytes(bytes(buf[1:4]), "big")
    if length > MAX_SMB_MESSAGE:
        raise NotThisProtocol(f"NetBIOS length {length} is larger than any reply to our requests")
    if kind == NBSS_MESSAGE:
        if length < 4:
            raise NotThisProtocol(f"NetBIOS session message of {length} bytes holds no SMB header")
        if len(buf) >= 8:
            magic = bytes(buf[4:8])
            if magic not in (SMB2_MAGIC, SMB1_MAGIC, *_OTHER_MAGICS):
                raise NotThisProtocol(f"session message starts with {magic.hex()}, not an SMB protocol id")
    elif kind == NBSS_KEEPALIVE and length:
        raise NotThisProtocol("NetBIOS keepalive with a payload")
    total = 4 + length
    return total if len(buf) >= total else None


@dataclass(frozen=True, slots=True)
class NetBIOSMessage:
    """One framed NetBIOS session packet."""

    kind: int
    payload: bytes

    @property
    def kind_name(self) -> str:
        """``"session message"``, ``"positive session response"`` ..."""
        return _NBSS_TYPES.get(self.kind, f"type 0x{self.kind:02x}")

    @property
    def negative_reason(self) -> str | None:
        """For a negative session response: its error code's meaning."""
        if self.kind != NBSS_NEGATIVE:
            return None
        if not self.payload:
            return "no error code"
        code = self.payload[0]
        return NBSS_ERRORS.get(code, f"error 0x{code:02x}")


def parse_netbios(message: bytes) -> NetBIOSMessage:
    """Split one framed packet into its type and payload (checks what :func:`frame_netbios` checks)."""
    n = frame_netbios(message)
    if n is None or n != len(message):
        raise NotThisProtocol("not one whole NetBIOS session packet")
    return NetBIOSMessage(message[0], bytes(message[4:n]))


# ---------------------------------------------------------------- builders (scapy)


@functools.cache
def build_spnego_ntlm_negotiate() -> bytes:
    """A GSS-API/SPNEGO ``negTokenInit`` offering NTLMSSP with an NTLMSSP NEGOTIATE as its
    ``mechToken`` (RFC 4178 4.2.1; the NEGOTIATE from :func:`scanner.ntlm.build_negotiate`).
    Constant, so built once (scapy's ASN.1 encoder costs ~2 ms)."""
    from scapy.asn1.asn1 import ASN1_OID
    from scapy.layers.gssapi import GSSAPI_BLOB
    from scapy.layers.spnego import SPNEGO_MechType, SPNEGO_negToken, SPNEGO_negTokenInit, SPNEGO_Token

    init = SPNEGO_negTokenInit(
        mechTypes=[SPNEGO_MechType(oid=ASN1_OID("1.3.6.1.4.1.311.2.2.10"))],
        mechToken=SPNEGO_Token(value=build_negotiate()),
    )
    return bytes(GSSAPI_BLOB(innerToken=SPNEGO_negToken(token=init)))


#: placeholders in the cached NEGOTIATE template, replaced by each dialogue's own GUID and salt
_GUID_MARK = b"<portproof-guid>"
_SALT_MARK = b"<portproof-preauth-salt-32bytes>"


def build_smb2_negotiate(client_guid: bytes, salt: bytes) -> bytes:
    """An SMB2 NEGOTIATE (MS-SMB2 2.2.3, message id 0) offering :data:`DIALECTS`, signing
    enabled, and the 3.1.1 negotiate contexts a Windows client sends (preauth integrity SHA-512
    with ``salt``, the four ciphers, the three signing algorithms), in its NetBIOS frame.
    ``client_guid`` (16 bytes) and ``salt`` (32 bytes) come from the dialogue's seeded generator,
    so the request is replayable. scapy builds the request once (~3 ms) with placeholders; each
    call puts its GUID and salt in their places."""
    if len(client_guid) != 16 or len(salt) != 32:
        raise ValueError("client_guid is 16 bytes and salt 32")
    return _smb2_negotiate_template().replace(_GUID_MARK, client_guid).replace(_SALT_MARK, salt)


@functools.cache
def _smb2_negotiate_template() -> bytes:
    """The NEGOTIATE of :func:`build_smb2_negotiate` with the placeholder GUID and salt."""
    from scapy.layers.smb2 import (
        SMB2_Encryption_Capabilities,
        SMB2_Header,
        SMB2_Negotiate_Context,
        SMB2_Negotiate_Protocol_Request,
        SMB2_Preauth_Integrity_Capabilities,
        SMB2_Signing_Capabilities,
    )

    contexts = [
        SMB2_Negotiate_Context() / SMB2_Preauth_Integrity_Capabilities(HashAlgorithms=[1], Salt=_SALT_MARK),
        SMB2_Negotiate_Context() / SMB2_Encryption_Capabilities(Ciphers=[2, 1, 4, 3]),
        SMB2_Negotiate_Context() / SMB2_Signing_Capabilities(SigningAlgorithms=[2, 1, 0]),
    ]
    request = SMB2_Header(MID=0, CreditRequest=1) / SMB2_Negotiate_Protocol_Request(
        Dialects=list(DIALECTS),
        SecurityMode=1,  # signing enabled, not required
        Capabilities=0x7F,  # every capability a 3.x client may announce (MS-SMB2 2.2.3)
        ClientGUID=_GUID_MARK,
        NegotiateContexts=contexts,
    )
    raw = _nbss(bytes(request))
    if raw.count(_GUID_MARK) != 1 or raw.count(_SALT_MARK) != 1:
        raise RuntimeError("the NEGOTIATE template lost a placeholder")  # a scapy layout change
    return raw


@functools.lru_cache(maxsize=8)  # constant requests: scapy builds each once
def build_smb2_session_setup(security_blob: bytes, message_id: int = 1) -> bytes:
    """An SMB2 SESSION_SETUP (MS-SMB2 2.2.5) carrying ``security_blob``, in its NetBIOS frame."""
    from scapy.layers.smb2 import SMB2_Header, SMB2_Session_Setup_Request

    request = SMB2_Header(MID=message_id, CreditRequest=1) / SMB2_Session_Setup_Request(
        SecurityMode=1, Buffer=[("SecurityBlob", security_blob)]
    )
    return _nbss(bytes(request))


#: SMB1 flags: canonicalized paths, case-insensitive; flags2: Unicode, NT status codes, extended
#: security (when asked), long names (MS-CIFS 2.2.3.1)
_SMB1_FLAGS = 0x18
_FLAGS2_UNICODE = 0x8000
_FLAGS2_NT_STATUS = 0x4000
_FLAGS2_EXTENDED_SECURITY = 0x0800
_FLAGS2_LONG_NAMES = 0x0001
#: the dialects of our SMB1 NEGOTIATE: NT LM 0.12 for SMB1 servers, and the two SMB2 strings that
#: make an SMB2 server answer with an SMB2 NEGOTIATE response (MS-SMB2 3.3.5.3.1)
SMB1_DIALECTS = ("NT LM 0.12", "SMB 2.002", "SMB 2.???")


def _smb1_flags2(extended_security: bool) -> int:
    flags2 = _FLAGS2_UNICODE | _FLAGS2_NT_STATUS | _FLAGS2_LONG_NAMES
    return flags2 | _FLAGS2_EXTENDED_SECURITY if extended_security else flags2


@functools.lru_cache(maxsize=8)  # constant requests: scapy builds each once
def build_smb1_negotiate(extended_security: bool = True) -> bytes:
    """An SMB1 NEGOTIATE (MS-CIFS 2.2.4.52.1) offering :data:`SMB1_DIALECTS`, in its NetBIOS frame."""
    from scapy.layers.smb import SMB_Dialect, SMB_Header, SMBNegotiate_Request

    request = SMB_Header(Flags=_SMB1_FLAGS, Flags2=_smb1_flags2(extended_security)) / SMBNegotiate_Request(
        Dialects=[SMB_Dialect(DialectString=d) for d in SMB1_DIALECTS]
    )
    return _nbss(bytes(request))


@functools.lru_cache(maxsize=8)  # constant requests: scapy builds each once
def build_smb1_session_setup(security_blob: bytes | None, max_buffer: int = 16644, mid: int = 2) -> bytes:
    """An SMB1 SESSION_SETUP_ANDX in its NetBIOS frame: with ``security_blob``, the extended
    security form (MS-SMB 2.2.4.6.1, WordCount 12) that carries SPNEGO; with None, the anonymous
    form (MS-CIFS 2.2.4.53.1, WordCount 13) with an empty account, domain and password, for
    servers without extended security. Our NativeOS and NativeLanMan are empty."""
    from scapy.layers.smb import (
        SMB_Header,
        SMBSession_Setup_AndX_Request,
        SMBSession_Setup_AndX_Request_Extended_Security,
    )

    # capabilities: Unicode, NT status, NT SMBs (+ extended security); no raw mode
    caps = 0x04 | 0x10 | 0x40
    header = SMB_Header(Flags=_SMB1_FLAGS, Flags2=_smb1_flags2(security_blob is not None), MID=mid)
    body: Any
    if security_blob is not None:
        body = SMBSession_Setup_AndX_Request_Extended_Security(
            MaxBufferSize=max_buffer, MaxMPXCount=1, ServerCapabilities=caps | CAP_EXTENDED_SECURITY,
            SecurityBlob=security_blob, NativeOS="", NativeLanMan="",
        )
    else:
        body = SMBSession_Setup_AndX_Request(
            MaxBufferSize=max_buffer, MaxMPXCount=1, ServerCapabilities=caps,
            OEMPassword=b"", UnicodePassword=b"", AccountName="", PrimaryDomain="", NativeOS="", NativeLanMan="",
        )
    return _nbss(bytes(header / body))


# ---------------------------------------------------------------- SMB2 parsers


@dataclass(frozen=True, slots=True)
class SMB2Header:
    """The fields of an SMB2 sync header (MS-SMB2 2.2.1.2) that a scanner needs."""

    status: int
    command: int
    credits: int
    flags: int
    message_id: int
    session_id: int

    @property
    def is_response(self) -> bool:
        """SMB2_FLAGS_SERVER_TO_REDIR: set on every server reply."""
        return bool(self.flags & 0x1)

    @property
    def status_name(self) -> str:
        """The NTSTATUS name when known."""
        return status_name(self.status)


_COMMANDS = {0: "NEGOTIATE", 1: "SESSION_SETUP", 2: "LOGOFF", 3: "TREE_CONNECT", 4: "TREE_DISCONNECT",
             5: "CREATE", 6: "CLOSE", 7: "FLUSH", 8: "READ", 9: "WRITE", 10: "LOCK", 11: "IOCTL",
             12: "CANCEL", 13: "ECHO", 14: "QUERY_DIRECTORY", 15: "CHANGE_NOTIFY", 16: "QUERY_INFO",
             17: "SET_INFO", 18: "OPLOCK_BREAK"}


def command_name(command: int) -> str:
    """SMB2 command name (``"NEGOTIATE"``), or its number."""
    return _COMMANDS.get(command, str(command))


def parse_smb2_header(payload: bytes) -> SMB2Header:
    """Parse the 64-byte SMB2 header at the start of ``payload`` (an SMB2 message, no NetBIOS
    header). Layout: ProtocolId 4, StructureSize 2 (64), CreditCharge 2, Status 4, Command 2,
    CreditResponse 2, Flags 4, NextCommand 4, MessageId 8, AsyncId/TreeId 8, SessionId 8,
    Signature 16."""
    if len(payload) < 64:
        raise NotThisProtocol(f"SMB2 message of {len(payload)} bytes is shorter than its header")
    if payload[:4] != SMB2_MAGIC:
        raise NotThisProtocol("no SMB2 protocol id")
    size, _charge, status, command, credits, flags, _next, mid, _tree, session = struct.unpack_from(
        "<HHIHHIIQQQ", payload, 4
    )
    if size != 64:
        raise NotThisProtocol(f"SMB2 header StructureSize {size}, not 64")
    return SMB2Header(status, command, credits, flags, mid, session)


def _filetime(value: int) -> str | None:
    """A FILETIME as ISO text; 0 (not given) and out-of-range values give None."""
    if value == 0:
        return None
    moment = filetime_to_datetime(value)
    return moment.isoformat() if moment is not None else None


def _buffer(payload: bytes, offset: int, length: int, what: str) -> bytes:
    """``length`` bytes at ``offset`` (from the start of the SMB header), bounds-checked."""
    if length == 0:
        return b""
    if offset > len(payload) or length > len(payload) - offset:
        raise NotThisProtocol(f"{what}: {length} bytes at offset {offset} run past the {len(payload)}-byte message")
    return payload[offset : offset + length]


def _ids(data: bytes, at: int, count: int, names: dict[int, str], what: str) -> list[str]:
    """``count`` little-endian 16-bit algorithm ids at ``at``, by name."""
    if count > MAX_IDS or at + 2 * count > len(data):
        raise NotThisProtocol(f"{what}: {count} ids do not fit the context")
    return [names.get(v, f"0x{v:04x}") for v in struct.unpack_from(f"<{count}H", data, at)]


def _parse_context(ctype: int, data: bytes) -> Any:
    """What one negotiate context says (MS-SMB2 2.2.4.1.x)."""
    if ctype == 1:  # HashAlgorithmCount 2, SaltLength 2, HashAlgorithms, Salt
        if len(data) < 4:
            raise NotThisProtocol("preauth integrity context too short")
        count, salt_len = struct.unpack_from("<HH", data)
        hashes = _ids(data, 4, count, _HASHES, "preauth integrity")
        if 4 + 2 * count + salt_len > len(data):
            raise NotThisProtocol("preauth integrity salt runs past the context")
        return {"hashes": hashes, "salt_length": salt_len}
    if ctype in (2, 8):  # Count 2, ids
        if len(data) < 2:
            raise NotThisProtocol("context too short")
        (count,) = struct.unpack_from("<H", data)
        return _ids(data, 2, count, _CIPHERS if ctype == 2 else _SIGNING, _CTX_NAMES[ctype])
    if ctype == 3:  # Count 2, Padding 2, Flags 4, ids
        if len(data) < 8:
            raise NotThisProtocol("compression context too short")
        count, _pad, flags = struct.unpack_from("<HHI", data)
        return {"algorithms": _ids(data, 8, count, _COMPRESSION, "compression"), "flags": flags}
    if ctype == 5:
        return data.decode("utf-16-le", "replace")[:MAX_STRING]
    if ctype == 6:
        return {"flags": struct.unpack_from("<I", data)[0]} if len(data) >= 4 else {}
    return data[:64].hex()


@dataclass(frozen=True, slots=True)
class SMB2Negotiate:
    """An SMB2 NEGOTIATE response (MS-SMB2 2.2.4)."""

    header: SMB2Header
    dialect: int
    security_mode: int
    server_guid: bytes
    capabilities: int
    max_transact: int
    max_read: int
    max_write: int
    #: the server's clock (FILETIME), None when zero
    system_time: str | None
    #: the server's boot time (FILETIME), None when zero (Samba and recent Windows send zero)
    boot_time: str | None
    security_blob: bytes
    #: negotiate contexts (3.1.1): name -> what it says
    contexts: dict[str, Any] = field(default_factory=dict)

    @property
    def dialect_name(self) -> str:
        """``"3.1.1"`` ..."""
        return dialect_name(self.dialect)

    @property
    def signing_required(self) -> bool:
        """SMB2_NEGOTIATE_SIGNING_REQUIRED (0x2) in SecurityMode."""
        return bool(self.security_mode & 0x2)

    @property
    def guid_text(self) -> str:
        """The server GUID in its usual text form (the wire holds a little-endian GUID)."""
        return str(uuid.UUID(bytes_le=self.server_guid))

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable facts for a finding's details."""
        out: dict[str, Any] = {
            "dialect": self.dialect_name,
            "signing_enabled": bool(self.security_mode & 0x1),
            "signing_required": self.signing_required,
            "server_guid": self.guid_text,
            "capabilities": _flag_names(self.capabilities, _SMB2_CAPS),
            "max_transact_size": self.max_transact,
            "max_read_size": self.max_read,
            "max_write_size": self.max_write,
        }
        if self.system_time:
            out["system_time"] = self.system_time
        if self.boot_time:
            out["boot_time"] = self.boot_time
        if self.contexts:
            out["contexts"] = self.contexts
        mechs = spnego_mechs(self.security_blob)
        if mechs:
            out["security_mechs"] = mechs
        return out


def parse_smb2_negotiate(payload: bytes) -> SMB2Negotiate:
    """Parse an SMB2 NEGOTIATE response (no NetBIOS header). Body at 64: StructureSize 2 (65),
    SecurityMode 2, DialectRevision 2, NegotiateContextCount 2, ServerGuid 16, Capabilities 4,
    MaxTransactSize 4, MaxReadSize 4, MaxWriteSize 4, SystemTime 8, ServerStartTime 8,
    SecurityBufferOffset 2, SecurityBufferLength 2, NegotiateContextOffset 4; offsets count from
    the header's first byte; contexts are 8-byte aligned (ContextType 2, DataLength 2, Reserved 4,
    Data)."""
    hdr = parse_smb2_header(payload)
    if hdr.command != 0:
        raise NotThisProtocol(f"SMB2 {command_name(hdr.command)} where a NEGOTIATE response was due")
    if not hdr.is_response:
        raise NotThisProtocol("an SMB2 NEGOTIATE request, not a response")
    if hdr.status != STATUS_SUCCESS:
        raise NotThisProtocol(f"SMB2 NEGOTIATE failed: {hdr.status_name}")
    if len(payload) < 64 + 64:
        raise NotThisProtocol(f"SMB2 NEGOTIATE response of {len(payload)} bytes is truncated")
    (size, mode, dialect, ctx_count, guid, caps, max_t, max_r, max_w, now, boot, blob_off, blob_len,
     ctx_off) = struct.unpack_from("<HHHH16sIIIIQQHHI", payload, 64)
    if size != 65:
        raise NotThisProtocol(f"NEGOTIATE response StructureSize {size}, not 65")
    blob = _buffer(payload, blob_off, blob_len, "security buffer")
    contexts: dict[str, Any] = {}
    if dialect == 0x0311 and ctx_count:
        if ctx_count > MAX_CONTEXTS:
            raise NotThisProtocol(f"{ctx_count} negotiate contexts")
        pos = ctx_off
        for i in range(ctx_count):
            pos = (pos + 7) & ~7 if i else pos
            if pos + 8 > len(payload):
                raise NotThisProtocol(f"negotiate context {i} starts past the message")
            ctype, dlen = struct.unpack_from("<HH", payload, pos)
            data = _buffer(payload, pos + 8, dlen, f"negotiate context {ctype}")
            name = _CTX_NAMES.get(ctype, f"0x{ctype:04x}")
            contexts[name] = _parse_context(ctype, data)
            pos += 8 + dlen
    return SMB2Negotiate(hdr, dialect, mode, guid, caps, max_t, max_r, max_w, _filetime(now), _filetime(boot),
                         blob, contexts)


@dataclass(frozen=True, slots=True)
class SMB2SessionSetup:
    """An SMB2 SESSION_SETUP response (MS-SMB2 2.2.6), or the error response in its place."""

    header: SMB2Header
    session_flags: int
    security_blob: bytes


def parse_smb2_session_setup(payload: bytes) -> SMB2SessionSetup:
    """Parse an SMB2 SESSION_SETUP response (no NetBIOS header): StructureSize 2 (9),
    SessionFlags 2, SecurityBufferOffset 2, SecurityBufferLength 2, Buffer. An error response
    (MS-SMB2 2.2.2: StructureSize 9, ErrorContextCount 1, Reserved 1, ByteCount 4) parses with an
    empty blob: the header's status says what went wrong."""
    hdr = parse_smb2_header(payload)
    if hdr.command != 1:
        raise NotThisProtocol(f"SMB2 {command_name(hdr.command)} where a SESSION_SETUP response was due")
    if not hdr.is_response:
        raise NotThisProtocol("an SMB2 SESSION_SETUP request, not a response")
    if len(payload) < 64 + 8:
        raise NotThisProtocol("SMB2 SESSION_SETUP response truncated")
    size, flags, blob_off, blob_len = struct.unpack_from("<HHHH", payload, 64)
    if size != 9:
        raise NotThisProtocol(f"SESSION_SETUP response StructureSize {size}, not 9")
    if hdr.status not in (STATUS_SUCCESS, STATUS_MORE_PROCESSING_REQUIRED):
        return SMB2SessionSetup(hdr, 0, b"")
    return SMB2SessionSetup(hdr, flags, _buffer(payload, blob_off, blob_len, "security buffer"))


# ---------------------------------------------------------------- SMB1 parsers


@dataclass(frozen=True, slots=True)
class SMB1Header:
    """The fields of an SMB1 header (MS-CIFS 2.2.3.1) a scanner needs."""

    command: int
    status: int
    flags: int
    flags2: int
    uid: int
    mid: int

    @property
    def unicode(self) -> bool:
        """SMB_FLAGS2_UNICODE: strings are UTF-16LE."""
        return bool(self.flags2 & _FLAGS2_UNICODE)


def _smb1_split(payload: bytes, command: int, what: str) -> tuple[SMB1Header, bytes, int, bytes]:
    """Header, parameter words, the offset of the data bytes and the data bytes of an SMB1 reply.

    Layout: Protocol 4, Command 1, Status 4, Flags 1, Flags2 2, PIDHigh 2, SecurityFeatures 8,
    Reserved 2, TID 2, PIDLow 2, UID 2, MID 2 (32 bytes); WordCount 1; Words 2*WordCount;
    ByteCount 2; Bytes."""
    if len(payload) < 35:
        raise NotThisProtocol(f"SMB1 message of {len(payload)} bytes is truncated")
    if payload[:4] != SMB1_MAGIC:
        raise NotThisProtocol("no SMB1 protocol id")
    cmd, status, flags, flags2, _pidh, _sec, _res, _tid, _pidl, uid, mid = struct.unpack_from(
        "<BIBHH8sHHHHH", payload, 4
    )
    hdr = SMB1Header(cmd, status, flags, flags2, uid, mid)
    if cmd != command:
        raise NotThisProtocol(f"SMB1 command 0x{cmd:02x} where the {what} response was due")
    if not flags & 0x80:
        raise NotThisProtocol(f"an SMB1 {what} request, not a response")
    words_len = payload[32] * 2
    if 33 + words_len + 2 > len(payload):
        raise NotThisProtocol(f"SMB1 {what}: {payload[32]} parameter words run past the message")
    words = payload[33 : 33 + words_len]
    (count,) = struct.unpack_from("<H", payload, 33 + words_len)
    start = 35 + words_len
    if count > len(payload) - start:
        raise NotThisProtocol(f"SMB1 {what}: ByteCount {count} runs past the message")
    return hdr, words, start, payload[start : start + count]


def _smb1_string(payload: bytes, pos: int, end: int, unicode: bool) -> tuple[str, int]:
    """One NUL-terminated SMB1 string at ``pos`` (absolute, before ``end``); returns it and the
    position after its terminator. Unicode strings are aligned on an even offset from the SMB
    header's start (MS-CIFS 2.2.1.1); a missing terminator ends the string at ``end``."""
    if unicode:
        if pos % 2:
            pos += 1
        stop = pos
        while stop + 1 < end and payload[stop : stop + 2] != b"\x00\x00":
            stop += 2
        text = payload[pos:stop].decode("utf-16-le", "replace")
        return text[:MAX_STRING], min(stop + 2, end)
    stop = payload.find(b"\x00", pos, end)
    stop = end if stop < 0 else stop
    return payload[pos:stop].decode("latin-1")[:MAX_STRING], min(stop + 1, end)


@dataclass(frozen=True, slots=True)
class SMB1Negotiate:
    """An SMB1 NEGOTIATE response (MS-CIFS 2.2.4.52.2, MS-SMB 2.2.4.5.2)."""

    header: SMB1Header
    #: index into our :data:`SMB1_DIALECTS` (0xFFFF: none accepted)
    dialect_index: int
    security_mode: int = 0
    max_mpx: int = 0
    max_vcs: int = 0
    max_buffer: int = 0
    max_raw: int = 0
    capabilities: int = 0
    system_time: str | None = None
    #: minutes west of UTC
    timezone: int = 0
    server_guid: bytes | None = None
    security_blob: bytes = b""
    #: non-extended security: the domain and server names the server gives
    domain: str | None = None
    server_name: str | None = None

    @property
    def dialect(self) -> str | None:
        """The dialect string chosen from ours, None when none was."""
        if 0 <= self.dialect_index < len(SMB1_DIALECTS):
            return SMB1_DIALECTS[self.dialect_index]
        return None

    @property
    def extended_security(self) -> bool:
        """CAP_EXTENDED_SECURITY: the server takes SPNEGO in the session setup."""
        return bool(self.capabilities & CAP_EXTENDED_SECURITY)

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable facts for a finding's details."""
        out: dict[str, Any] = {"dialect": self.dialect or f"index {self.dialect_index}"}
        if self.dialect is None:
            return out
        out.update(
            signing_enabled=bool(self.security_mode & 0x4),
            signing_required=bool(self.security_mode & 0x8),
            user_security=bool(self.security_mode & 0x1),
            encrypt_passwords=bool(self.security_mode & 0x2),
            capabilities=_flag_names(self.capabilities, _SMB1_CAPS),
            max_mpx_count=self.max_mpx,
            max_buffer_size=self.max_buffer,
            max_raw_size=self.max_raw,
            timezone_minutes_west=self.timezone,
        )
        if self.system_time:
            out["system_time"] = self.system_time
        if self.server_guid is not None:
            out["server_guid"] = str(uuid.UUID(bytes_le=self.server_guid))
        mechs = spnego_mechs(self.security_blob)
        if mechs:
            out["security_mechs"] = mechs
        if self.domain:
            out["domain"] = self.domain
        if self.server_name:
            out["server_name"] = self.server_name
        return out


def parse_smb1_negotiate(payload: bytes) -> SMB1Negotiate:
    """Parse an SMB1 NEGOTIATE response (no NetBIOS header). NT LM 0.12 (WordCount 17):
    DialectIndex 2, SecurityMode 1, MaxMpxCount 2, MaxNumberVcs 2, MaxBufferSize 4, MaxRawSize 4,
    SessionKey 4, Capabilities 4, SystemTime 8, ServerTimeZone 2, ChallengeLength 1; then the
    data bytes: ServerGUID 16 and a SPNEGO blob (extended security), or the challenge, the domain
    and the server name. Other word counts (1: no dialect or a core dialect) give the index only."""
    hdr, words, start, data = _smb1_split(payload, 0x72, "NEGOTIATE")
    if hdr.status not in (STATUS_SUCCESS,):
        raise NotThisProtocol(f"SMB1 NEGOTIATE failed: {status_name(hdr.status)}")
    if len(words) < 2:
        raise NotThisProtocol("SMB1 NEGOTIATE response without a dialect index")
    (index,) = struct.unpack_from("<H", words)
    if len(words) != 34:
        return SMB1Negotiate(hdr, index)
    (_i, mode, mpx, vcs, max_buf, max_raw, _key, caps, now, tz, chal_len) = struct.unpack_from(
        "<HBHHIIIIQhB", words
    )
    guid: bytes | None = None
    blob = b""
    domain = server = None
    if caps & CAP_EXTENDED_SECURITY:
        if len(data) < 16:
            raise NotThisProtocol("extended security NEGOTIATE response without a server GUID")
        guid, blob = data[:16], data[16:]
    else:
        if chal_len > len(data):
            raise NotThisProtocol("challenge runs past the NEGOTIATE response")
        end = start + len(data)
        # Samba and Windows push these strings unaligned (STR_NOALIGN) right after the challenge
        pos = start + chal_len
        if hdr.unicode:
            domain, pos = _smb1_string_noalign(payload, pos, end)
            server, _ = _smb1_string_noalign(payload, pos, end)
        else:
            domain, pos = _smb1_string(payload, pos, end, False)
            server, _ = _smb1_string(payload, pos, end, False)
    return SMB1Negotiate(hdr, index, mode, mpx, vcs, max_buf, max_raw, caps, _filetime(now), tz, guid, blob,
                         domain or None, server or None)


def _smb1_string_noalign(payload: bytes, pos: int, end: int) -> tuple[str, int]:
    """An unaligned UTF-16LE NUL-terminated string (the NEGOTIATE response's names)."""
    stop = pos
    while stop + 1 < end and payload[stop : stop + 2] != b"\x00\x00":
        stop += 2
    return payload[pos:stop].decode("utf-16-le", "replace")[:MAX_STRING], min(stop + 2, end)


@dataclass(frozen=True, slots=True)
class SMB1SessionSetup:
    """An SMB1 SESSION_SETUP_ANDX response: the server's self-description and, with extended
    security, its SPNEGO blob."""

    header: SMB1Header
    action: int
    security_blob: bytes
    native_os: str | None
    native_lanman: str | None
    primary_domain: str | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable facts for a finding's details."""
        out: dict[str, Any] = {"status": status_name(self.header.status)}
        for key in ("native_os", "native_lanman", "primary_domain"):
            value = getattr(self, key)
            if value:
                out[key] = value
        if self.action & 1:
            out["logged_on_as_guest"] = True
        return out


def parse_smb1_session_setup(payload: bytes) -> SMB1SessionSetup:
    """Parse an SMB1 SESSION_SETUP_ANDX response (no NetBIOS header). Extended security
    (WordCount 4): AndXCommand 1, AndXReserved 1, AndXOffset 2, Action 2, SecurityBlobLength 2;
    data: SecurityBlob, NativeOS, NativeLanMan (and sometimes PrimaryDomain). Plain (WordCount 3):
    AndX 4, Action 2; data: NativeOS, NativeLanMan, PrimaryDomain. An error (WordCount 0) parses
    with no strings: the header's status says what went wrong."""
    hdr, words, start, data = _smb1_split(payload, 0x73, "SESSION_SETUP_ANDX")
    end = start + len(data)
    if len(words) == 0:
        return SMB1SessionSetup(hdr, 0, b"", None, None, None)
    if len(words) == 8:
        _cmd, _res, _off, action, blob_len = struct.unpack_from("<BBHHH", words)
        if blob_len > len(data):
            raise NotThisProtocol("security blob runs past the SESSION_SETUP_ANDX response")
        blob = data[:blob_len]
        pos = start + blob_len
    elif len(words) == 6:
        _cmd, _res, _off, action = struct.unpack_from("<BBHH", words)
        blob, pos = b"", start
    else:
        raise NotThisProtocol(f"SESSION_SETUP_ANDX response with {len(words) // 2} parameter words")
    strings: list[str] = []
    for _ in range(3):
        if pos >= end:
            break
        text, pos = _smb1_string(payload, pos, end, hdr.unicode)
        strings.append(text)
    strings += [""] * (3 - len(strings))
    return SMB1SessionSetup(hdr, action, blob, strings[0] or None, strings[1] or None, strings[2] or None)


# ---------------------------------------------------------------- SPNEGO


def spnego_mechs(blob: bytes) -> list[str]:
    """The mechanism OIDs a SPNEGO ``negTokenInit`` offers (a negotiate reply's security blob), by
    name where known; [] when the blob is empty or not a negTokenInit. Decoded with scapy's
    SPNEGO layer; a blob scapy cannot read gives [] (it is only reported, never decisive)."""
    if not blob or len(blob) > 4096 or blob[:1] != b"\x60":
        return []
    return list(_spnego_mechs(bytes(blob)))


@functools.lru_cache(maxsize=64)
def _spnego_mechs(blob: bytes) -> tuple[str, ...]:
    """:func:`spnego_mechs`, cached: a server sends the same blob every time and scapy's ASN.1
    decoder costs ~1 ms."""
    from scapy.layers.gssapi import GSSAPI_BLOB
    from scapy.layers.spnego import SPNEGO_negTokenInit

    try:
        token = GSSAPI_BLOB(blob)
        init = token.getlayer(SPNEGO_negTokenInit)
        if init is None:
            return ()
        oids = [str(m.oid.val) for m in (init.mechTypes or [])[:MAX_IDS]]
    except Exception:  # scapy's ASN.1 decoder raises many kinds of exception on junk
        return ()
    return tuple(f"{_MECHS[o]} ({o})" if o in _MECHS else o for o in oids)
