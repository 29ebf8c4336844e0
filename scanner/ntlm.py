"""NTLMSSP information gathering, pure and read-only (part of the stable plugin API).

A server that offers NTLM authentication answers a client's NEGOTIATE message with a CHALLENGE
(MS-NLMP 2.2.1.2) that names the machine and its domain (NetBIOS and DNS), the forest, the server's
clock and, in its VERSION field, the Windows major/minor/build numbers. That is what makes a
Windows server (Exchange, AD, IIS) identifiable to the build over SMTP ``AUTH NTLM``, IMAP
``AUTHENTICATE NTLM``, POP3 ``AUTH NTLM``, NNTP ``AUTHINFO GENERIC NTLM``, HTTP
``WWW-Authenticate: NTLM``, LDAP SASL binds and DCE/RPC binds.

Only two message kinds exist here: :func:`build_negotiate` (what we send) and
:func:`parse_challenge` (what we read). No AUTHENTICATE message is ever built: probes stop after the
challenge and never send credentials.

Why not a library: ldap3's ``NtlmClient.parse_challenge_message`` needs a credentialled client
object, does no bounds checking (slices past the end silently truncate) and raises on AV ids it
does not know; impacket is not a dependency. The layout is small and fixed, so it is parsed here
with explicit checks; every malformed blob raises :class:`NTLMError` (a ``ValueError`` and a
:class:`~scanner.api.NotThisProtocol`), never anything else.

The LDAP helpers at the end wrap the NEGOTIATE in an LDAP SASL bind and read the CHALLENGE back from
the bind response's ``serverSaslCreds``, using ldap3's ASN.1 definitions and pyasn1's BER codec.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import struct
from dataclasses import dataclass, field
from typing import Any

from scanner.api import Finding, NotThisProtocol

__all__ = [
    "NTLMChallenge",
    "NTLMError",
    "NTLMSSP_SIGNATURE",
    "LDAPBindResult",
    "build_ldap_sasl_bind",
    "build_negotiate",
    "filetime_to_datetime",
    "find_ntlmssp",
    "record_challenge_b64",
    "negotiate_b64",
    "parse_challenge_b64",
    "frame_ldap_message",
    "parse_challenge",
    "parse_ldap_bind_response",
    "windows_name",
]

NTLMSSP_SIGNATURE = b"NTLMSSP\x00"

#: NEGOTIATE flags (MS-NLMP 2.2.2.5)
NEGOTIATE_UNICODE = 0x00000001
NEGOTIATE_OEM = 0x00000002
REQUEST_TARGET = 0x00000004
NEGOTIATE_NTLM = 0x00000200
NEGOTIATE_ALWAYS_SIGN = 0x00008000
NEGOTIATE_EXTENDED_SESSIONSECURITY = 0x00080000
NEGOTIATE_TARGET_INFO = 0x00800000
NEGOTIATE_VERSION = 0x02000000
NEGOTIATE_128 = 0x20000000
NEGOTIATE_KEY_EXCH = 0x40000000
NEGOTIATE_56 = 0x80000000

#: what we ask for: the flags a Windows client sends (0xe2088207 without SIGN/SEAL), with VERSION so
#: the server fills in its own version, and REQUEST_TARGET so it names its domain.
DEFAULT_FLAGS = (
    NEGOTIATE_UNICODE
    | NEGOTIATE_OEM
    | REQUEST_TARGET
    | NEGOTIATE_NTLM
    | NEGOTIATE_ALWAYS_SIGN
    | NEGOTIATE_EXTENDED_SESSIONSECURITY
    | NEGOTIATE_VERSION
    | NEGOTIATE_128
    | NEGOTIATE_KEY_EXCH
    | NEGOTIATE_56
)

#: AV_PAIR ids (MS-NLMP 2.2.2.1)
_AV_EOL = 0
_AV_NAMES = {
    1: "netbios_computer",
    2: "netbios_domain",
    3: "dns_computer",
    4: "dns_domain",
    5: "dns_tree",
}
_AV_FLAGS = 6
_AV_TIMESTAMP = 7
_AV_TARGET_NAME = 9

#: the biggest CHALLENGE accepted (real ones are 200-400 bytes)
MAX_CHALLENGE = 16 * 1024
#: most AV pairs read from a target-info block (Windows sends 7-8)
MAX_AV_PAIRS = 64
_CHALLENGE_MIN = 48  # up to and including TargetInfoFields; the VERSION field is optional

_FILETIME_EPOCH = _dt.datetime(1601, 1, 1, tzinfo=_dt.UTC)


def filetime_to_datetime(ticks: int) -> _dt.datetime | None:
    """A Windows FILETIME (100 ns ticks since 1601-01-01 UTC) as an aware datetime; None when it is
    out of the range ``datetime`` can hold (hostile values)."""
    try:
        return _FILETIME_EPOCH + _dt.timedelta(microseconds=ticks // 10)
    except OverflowError:
        return None


class NTLMError(NotThisProtocol, ValueError):
    """A blob is not a well-formed NTLMSSP CHALLENGE (truncated, bad offsets, huge lengths...)."""


# Windows builds as reported in the NTLM VERSION field. NTLM cannot tell a server from a client
# edition of the same build, so both are named.
_WINDOWS_BUILDS: dict[tuple[int, int, int], str] = {
    (5, 0, 2195): "Windows 2000",
    (5, 1, 2600): "Windows XP",
    (5, 2, 3790): "Windows Server 2003 / Windows XP x64",
    (6, 0, 6000): "Windows Vista",
    (6, 0, 6001): "Windows Server 2008 / Windows Vista SP1",
    (6, 0, 6002): "Windows Server 2008 SP2 / Windows Vista SP2",
    (6, 0, 6003): "Windows Server 2008 SP2 / Windows Vista SP2",
    (6, 1, 7600): "Windows Server 2008 R2 / Windows 7",
    (6, 1, 7601): "Windows Server 2008 R2 SP1 / Windows 7 SP1",
    (6, 2, 9200): "Windows Server 2012 / Windows 8",
    (6, 3, 9600): "Windows Server 2012 R2 / Windows 8.1",
    (10, 0, 10240): "Windows 10 1507",
    (10, 0, 10586): "Windows 10 1511",
    (10, 0, 14393): "Windows Server 2016 / Windows 10 1607",
    (10, 0, 15063): "Windows 10 1703",
    (10, 0, 16299): "Windows Server 1709 / Windows 10 1709",
    (10, 0, 17134): "Windows Server 1803 / Windows 10 1803",
    (10, 0, 17763): "Windows Server 2019 / Windows 10 1809",
    (10, 0, 18362): "Windows Server 1903 / Windows 10 1903",
    (10, 0, 18363): "Windows Server 1909 / Windows 10 1909",
    (10, 0, 19041): "Windows Server 2004 / Windows 10 2004",
    (10, 0, 19042): "Windows Server 20H2 / Windows 10 20H2",
    (10, 0, 19043): "Windows 10 21H1",
    (10, 0, 19044): "Windows 10 21H2",
    (10, 0, 19045): "Windows 10 22H2",
    (10, 0, 20348): "Windows Server 2022",
    (10, 0, 22000): "Windows 11 21H2",
    (10, 0, 22621): "Windows 11 22H2",
    (10, 0, 22631): "Windows 11 23H2",
    (10, 0, 25398): "Windows Server 23H2",
    (10, 0, 26100): "Windows Server 2025 / Windows 11 24H2",
}


def windows_name(major: int, minor: int, build: int) -> str | None:
    """Name the Windows release of an NTLM VERSION triple, or None when the build is not known.

    Samba reports ``6.1.0`` (build 0, which no Windows release has): that gives None here, and
    :attr:`NTLMChallenge.looks_like_samba` says so instead.
    """
    return _WINDOWS_BUILDS.get((major, minor, build))


@dataclass(frozen=True, slots=True)
class NTLMChallenge:
    """What an NTLMSSP CHALLENGE message says about the server that sent it.

    Names are ``None`` when the server left them out. ``os_version`` is ``(major, minor, build)``
    from the VERSION field, present only when the server negotiated NEGOTIATE_VERSION.
    """

    #: negotiated flags (MS-NLMP 2.2.2.5)
    flags: int
    #: TargetName: the NetBIOS domain (or the server name for a stand-alone server)
    target_name: str | None = None
    netbios_computer: str | None = None
    netbios_domain: str | None = None
    dns_computer: str | None = None
    dns_domain: str | None = None
    #: the forest's DNS name
    dns_tree: str | None = None
    #: the server's clock (MsvAvTimestamp), UTC
    timestamp: _dt.datetime | None = None
    #: (major, minor, build) from the VERSION field
    os_version: tuple[int, int, int] | None = None
    #: NTLM revision from the VERSION field (15 for NTLMv2-capable servers)
    ntlm_revision: int | None = None
    #: MsvAvFlags when present
    av_flags: int | None = None
    #: AV ids seen that this module does not name (kept for the record, never fatal)
    unknown_av_ids: tuple[int, ...] = field(default_factory=tuple)

    @property
    def windows_version(self) -> str | None:
        """The Windows release named by :attr:`os_version` (None when unknown or absent)."""
        if self.os_version is None:
            return None
        return windows_name(*self.os_version)

    @property
    def os_version_text(self) -> str | None:
        """``"10.0.17763"`` style text of :attr:`os_version`."""
        if self.os_version is None:
            return None
        return "{}.{}.{}".format(*self.os_version)

    @property
    def looks_like_samba(self) -> bool:
        """True for Samba's fixed VERSION field (6.1 build 0, which no Windows release sends)."""
        return self.os_version == (6, 1, 0)

    def host_facts(self) -> dict[str, str]:
        """The facts other probes on the same host may use, under the keys the probes share:
        ``ntlm_netbios_domain``, ``ntlm_netbios_computer``, ``ntlm_dns_domain``,
        ``ntlm_dns_computer``, ``ntlm_dns_tree`` and ``windows_version`` (absent ones left out)."""
        facts = {
            f"ntlm_{key}": value
            for key in ("netbios_domain", "netbios_computer", "dns_domain", "dns_computer", "dns_tree")
            if (value := getattr(self, key))
        }
        if self.windows_version:
            facts["windows_version"] = self.windows_version
        return facts

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable facts (for a Finding's details); absent names are left out."""
        out: dict[str, Any] = {}
        for name in ("target_name", "netbios_computer", "netbios_domain", "dns_computer", "dns_domain",
                     "dns_tree"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.timestamp is not None:
            out["timestamp"] = self.timestamp.isoformat()
        if self.os_version is not None:
            out["os_version"] = self.os_version_text
            if self.windows_version:
                out["windows_version"] = self.windows_version
        if self.looks_like_samba:
            out["looks_like_samba"] = True
        out["flags"] = f"0x{self.flags:08x}"
        return out

    def summary(self) -> str:
        """One line for extrainfo: ``DC1.lab.example.test (LAB), Windows Server 2019 ...``."""
        parts: list[str] = []
        host = self.dns_computer or self.netbios_computer
        if host:
            parts.append(host)
        domain = self.netbios_domain or self.target_name
        if domain:
            parts.append(f"domain {domain}")
        if self.windows_version:
            parts.append(f"{self.windows_version} (build {self.os_version_text})")
        elif self.looks_like_samba:
            parts.append("NTLM version 6.1.0 (Samba)")
        elif self.os_version is not None:
            parts.append(f"NTLM version {self.os_version_text}")
        return ", ".join(parts)


def build_negotiate(flags: int = DEFAULT_FLAGS) -> bytes:
    """Build an NTLMSSP NEGOTIATE message (MS-NLMP 2.2.1.1) that supplies no domain or workstation.

    With NEGOTIATE_VERSION set, the 8-byte VERSION field is sent zeroed except for the NTLM
    revision (15), so nothing about the scanning host is disclosed.
    """
    if not 0 <= flags <= 0xFFFFFFFF:
        raise ValueError("flags must fit in 32 bits")
    msg = NTLMSSP_SIGNATURE + struct.pack("<II", 1, flags)
    msg += struct.pack("<HHI", 0, 0, 0) * 2  # DomainNameFields, WorkstationFields: empty
    if flags & NEGOTIATE_VERSION:
        msg += bytes(7) + b"\x0f"
    return msg


def negotiate_b64() -> str:
    """The NEGOTIATE in base64, as text protocols carry it (SMTP ``AUTH NTLM <b64>``, IMAP
    ``AUTHENTICATE NTLM`` continuation, POP3 ``AUTH NTLM``, NNTP ``AUTHINFO GENERIC NTLM``, HTTP
    ``Authorization: NTLM <b64>``). After the challenge, cancel with ``*`` (SASL abort)."""
    return base64.b64encode(build_negotiate()).decode("ascii")


def parse_challenge_b64(text: str | bytes) -> NTLMChallenge:
    """Parse a base64 CHALLENGE from a text protocol's continuation (``334 <b64>``, ``+ <b64>``,
    ``381 <b64>``: pass only the base64 part). Raises :class:`NTLMError` when it is not one."""
    try:
        blob = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NTLMError("challenge is not base64") from exc
    return parse_challenge(find_ntlmssp(blob))


def record_challenge_b64(finding: Finding, source: str, text: str | bytes) -> NTLMChallenge | None:
    """Parse a base64 CHALLENGE from a text protocol's reply and record it on ``finding``: its
    facts in ``details["ntlm"]``, evidence from ``source``, the summary as extrainfo; a malformed
    one goes to ``details["ntlm_error"]``. Returns the challenge (None when malformed)."""
    try:
        chal = parse_challenge_b64(text)
    except NTLMError as exc:
        finding.details["ntlm_error"] = str(exc)
        return None
    finding.details["ntlm"] = chal.as_dict()
    finding.add(source, chal.summary())
    finding.extrainfo = chal.summary() or finding.extrainfo
    return chal


def find_ntlmssp(data: bytes) -> bytes:
    """Return ``data`` from the first NTLMSSP signature on (the token inside a SPNEGO, DCE/RPC
    auth verifier or SMB security blob); raise :class:`NTLMError` when there is none."""
    start = data.find(NTLMSSP_SIGNATURE)
    if start < 0:
        raise NTLMError("no NTLMSSP signature")
    return data[start:]


def _field(blob: bytes, at: int, what: str) -> bytes:
    """Read a (len, maxlen, offset) security buffer at ``at`` and return its bytes, bounds-checked."""
    length, _maxlen, offset = struct.unpack_from("<HHI", blob, at)
    if length == 0:
        return b""
    if offset < 32 or offset > len(blob) or length > len(blob) - offset:
        raise NTLMError(f"{what}: {length} bytes at offset {offset} run past the {len(blob)}-byte message")
    return blob[offset : offset + length]


def _utf16(raw: bytes, what: str) -> str:
    """Decode UTF-16LE text strictly (names must decode; an odd length is malformed)."""
    if len(raw) % 2:
        raise NTLMError(f"{what}: odd UTF-16 length {len(raw)}")
    try:
        return raw.decode("utf-16-le")
    except UnicodeDecodeError as exc:
        raise NTLMError(f"{what}: bad UTF-16") from exc


def parse_challenge(blob: bytes) -> NTLMChallenge:
    """Parse an NTLMSSP CHALLENGE message (MS-NLMP 2.2.1.2) that starts at ``blob[0]``.

    Use :func:`find_ntlmssp` first for a token wrapped in SPNEGO or a DCE/RPC verifier. Raises
    :class:`NTLMError` on anything malformed: wrong signature or type, fields past the end, huge
    lengths, AV pairs that overrun, bad UTF-16.
    """
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise NTLMError("not bytes")
    blob = bytes(blob)
    if len(blob) > MAX_CHALLENGE:
        raise NTLMError(f"CHALLENGE of {len(blob)} bytes is larger than {MAX_CHALLENGE}")
    if len(blob) < _CHALLENGE_MIN:
        raise NTLMError(f"CHALLENGE too short ({len(blob)} bytes)")
    if blob[:8] != NTLMSSP_SIGNATURE:
        raise NTLMError("no NTLMSSP signature")
    (msg_type,) = struct.unpack_from("<I", blob, 8)
    if msg_type != 2:
        raise NTLMError(f"NTLMSSP message type {msg_type}, not CHALLENGE (2)")
    (flags,) = struct.unpack_from("<I", blob, 20)
    unicode = bool(flags & NEGOTIATE_UNICODE)

    target_raw = _field(blob, 12, "TargetName")
    target_name: str | None = None
    if target_raw:
        target_name = _utf16(target_raw, "TargetName") if unicode else target_raw.decode("latin-1")

    info = _field(blob, 40, "TargetInfo")
    # The payload starts at the lowest field offset; the VERSION field (8 bytes at 48) exists only
    # when there is room for it before the payload and the flag says so.
    os_version: tuple[int, int, int] | None = None
    revision: int | None = None
    payload_start = min(
        [struct.unpack_from("<I", blob, at)[0] for at, raw in ((16, target_raw), (44, info)) if raw]
        or [len(blob)]
    )
    if flags & NEGOTIATE_VERSION and len(blob) >= 56 and payload_start >= 56:
        major, minor, build = struct.unpack_from("<BBH", blob, 48)
        os_version = (major, minor, build)
        revision = blob[55]

    names: dict[str, str] = {}
    timestamp: _dt.datetime | None = None
    av_flags: int | None = None
    unknown: list[int] = []
    pos = 0
    for _ in range(MAX_AV_PAIRS):
        if pos == len(info):
            break  # some servers omit MsvAvEOL
        if pos + 4 > len(info):
            raise NTLMError("truncated AV_PAIR header")
        av_id, av_len = struct.unpack_from("<HH", info, pos)
        pos += 4
        if av_len > len(info) - pos:
            raise NTLMError(f"AV_PAIR {av_id} of {av_len} bytes runs past the target info")
        value = info[pos : pos + av_len]
        pos += av_len
        if av_id == _AV_EOL:
            break
        if av_id in _AV_NAMES:
            names[_AV_NAMES[av_id]] = _utf16(value, _AV_NAMES[av_id])
        elif av_id == _AV_TIMESTAMP:
            if av_len != 8:
                raise NTLMError(f"MsvAvTimestamp of {av_len} bytes")
            (ticks,) = struct.unpack("<Q", value)
            timestamp = filetime_to_datetime(ticks)
            if timestamp is None:
                raise NTLMError("MsvAvTimestamp out of range")
        elif av_id == _AV_FLAGS:
            if av_len != 4:
                raise NTLMError(f"MsvAvFlags of {av_len} bytes")
            (av_flags,) = struct.unpack("<I", value)
        elif av_id != _AV_TARGET_NAME and len(unknown) < MAX_AV_PAIRS:
            unknown.append(av_id)
    else:
        raise NTLMError(f"more than {MAX_AV_PAIRS} AV pairs")

    return NTLMChallenge(
        flags=flags,
        target_name=target_name,
        timestamp=timestamp,
        os_version=os_version,
        ntlm_revision=revision,
        av_flags=av_flags,
        unknown_av_ids=tuple(unknown),
        **names,
    )


# ------------------------------------------------------------------------------------------------
# LDAP SASL bind carrying the NEGOTIATE (for the ldap probe and the lab test)

#: biggest LDAP message :func:`frame_ldap_message` accepts
MAX_LDAP_MESSAGE = 1024 * 1024


@dataclass(frozen=True, slots=True)
class LDAPBindResult:
    """The parts of an LDAP BindResponse that matter for NTLM information gathering."""

    message_id: int
    #: LDAP resultCode (14 = saslBindInProgress, the expected answer to a NEGOTIATE)
    result_code: int
    diagnostic_message: str
    #: the parsed CHALLENGE, when ``serverSaslCreds`` carried one
    challenge: NTLMChallenge | None
    #: why ``challenge`` is None although credentials were present (malformed blob)
    challenge_error: str | None = None


def build_ldap_sasl_bind(message_id: int, mechanism: str = "GSS-SPNEGO", token: bytes | None = None) -> bytes:
    """Build an LDAPMessage with a SASL BindRequest whose credentials are an NTLMSSP NEGOTIATE.

    ``mechanism`` is ``"GSS-SPNEGO"`` or ``"NTLM"``: Active Directory and Samba both accept a raw
    NTLMSSP token under GSS-SPNEGO (they sniff the signature), so no SPNEGO wrapping is needed.
    ``token`` defaults to :func:`build_negotiate`. Encoded with ldap3's ASN.1 definitions.
    """
    from ldap3.operation.bind import bind_operation
    from ldap3.protocol.rfc4511 import LDAPMessage, MessageID, ProtocolOp
    from pyasn1.codec.ber import encoder

    if not 0 <= message_id <= 2**31 - 1:
        raise ValueError("message_id out of range")
    credentials = token if token is not None else build_negotiate()
    request = bind_operation(3, "SASL", "", None, mechanism, credentials)
    message = LDAPMessage()
    message["messageID"] = MessageID(message_id)
    message["protocolOp"] = ProtocolOp().setComponentByName("bindRequest", request)
    return bytes(encoder.encode(message))


def frame_ldap_message(buf: bytes) -> int | None:
    """Frame one BER-encoded LDAPMessage (a SEQUENCE with a definite length)."""
    if not buf:
        return None
    if buf[0] != 0x30:
        raise NTLMError("an LDAPMessage starts with a SEQUENCE tag (0x30)")
    if len(buf) < 2:
        return None
    first = buf[1]
    if first < 0x80:
        return 2 + first if len(buf) >= 2 + first else None
    count = first & 0x7F
    if count == 0 or count > 4:
        raise NTLMError("indefinite or oversized BER length")
    if len(buf) < 2 + count:
        return None
    length = int.from_bytes(buf[2 : 2 + count], "big")
    if length > MAX_LDAP_MESSAGE:
        raise NTLMError(f"LDAP message of {length} bytes")
    total = 2 + count + length
    return total if len(buf) >= total else None


def parse_ldap_bind_response(message: bytes) -> LDAPBindResult:
    """Decode one framed LDAPMessage holding a BindResponse and parse its ``serverSaslCreds``.

    Raises :class:`NTLMError` when the message is not a BindResponse (or not BER at all). A
    malformed CHALLENGE inside a valid response is reported in ``challenge_error`` instead.
    """
    from ldap3.protocol.rfc4511 import LDAPMessage
    from pyasn1.codec.ber import decoder
    from pyasn1.error import PyAsn1Error

    try:
        decoded, _rest = decoder.decode(message, asn1Spec=LDAPMessage())
        op = decoded["protocolOp"]
        if op.getName() != "bindResponse":
            raise NTLMError(f"LDAP {op.getName()}, not a bindResponse")
        response = op.getComponent()
        creds_field = response["serverSaslCreds"]
        creds = bytes(creds_field) if creds_field.hasValue() else b""
        result = LDAPBindResult(
            message_id=int(decoded["messageID"]),
            result_code=int(response["resultCode"]),
            diagnostic_message=bytes(response["diagnosticMessage"]).decode("utf-8", "replace"),
            challenge=None,
        )
    except NTLMError:
        raise
    except (PyAsn1Error, ValueError, TypeError, KeyError, IndexError) as exc:
        raise NTLMError(f"not a BER LDAPMessage: {exc}") from exc
    if not creds:
        return result
    try:
        challenge = parse_challenge(find_ntlmssp(creds))
    except NTLMError as exc:
        return LDAPBindResult(
            result.message_id, result.result_code, result.diagnostic_message, None, str(exc)
        )
    return LDAPBindResult(result.message_id, result.result_code, result.diagnostic_message, challenge)
