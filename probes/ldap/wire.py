"""LDAP wire format: the requests the probe sends (ldap3's rfc4511 types, BER by pyasn1), the BER
framer, and the parsers of the replies (LDAPMessage, rootDSE, OpenLDAP's monitor version). Part of
the :mod:`probes.ldap` package (what it sends and collects is described there)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from scanner.api import (
    NotThisProtocol,
    prefix_framer,
)
from scanner.textproto import decode_text

__all__ = [
    "LDAPMessageInfo",
    "MAX_MESSAGE",
    "ROOT_DSE_ATTRIBUTES",
    "RootDSE",
    "STARTTLS_OID",
    "build_root_dse_request",
    "build_search_request",
    "build_starttls_request",
    "build_unbind_request",
    "dn_to_dns_name",
    "frame_ldap_message",
    "frame_ldap_or_rest",
    "parse_ldap_message",
    "parse_monitor_version",
    "parse_root_dse",
    "site_from_server_name",
    "windows_generation",
]


#: the largest LDAP message the framer accepts (longer BER lengths are not a sane rootDSE reply)
MAX_MESSAGE = 16 * 1024 * 1024
#: the largest single reply the dialogue buffers (a Windows rootDSE with ``+`` is ~10 KiB)
MAX_RECV = 1024 * 1024
#: most messages read for one search (entries + references + done)
MAX_SEARCH_MESSAGES = 64

#: the StartTLS extended operation (RFC 4511 §4.14)
STARTTLS_OID = "1.3.6.1.4.1.1466.20037"
#: unsolicited "notice of disconnection" (RFC 4511 §4.4.1), sent with message id 0
NOTICE_OF_DISCONNECTION_OID = "1.3.6.1.4.1.1466.20036"

#: rootDSE attributes that decide the product (plus ``*`` and ``+`` for everything else)
ROOT_DSE_ATTRIBUTES: tuple[str, ...] = (
    "namingContexts",
    "defaultNamingContext",
    "rootDomainNamingContext",
    "configurationNamingContext",
    "schemaNamingContext",
    "dnsHostName",
    "serverName",
    "dsServiceName",
    "ldapServiceName",
    "supportedLDAPVersion",
    "supportedControl",
    "supportedExtension",
    "supportedCapabilities",
    "supportedSASLMechanisms",
    "domainFunctionality",
    "forestFunctionality",
    "domainControllerFunctionality",
    "isGlobalCatalogReady",
    "isSynchronized",
    "highestCommittedUSN",
    "currentTime",
    "vendorName",
    "vendorVersion",
    "objectClass",
    "structuralObjectClass",
    "configContext",
    "monitorContext",
    "subschemaSubentry",
    "*",
    "+",
)

# Active Directory capability OIDs ([MS-ADTS] 3.1.1.3.4.3). They accumulate: each Windows Server
# release keeps the older ones and adds its own, so the newest one present is a lower bound.
CAP_AD = "1.2.840.113556.1.4.800"  # LDAP_CAP_ACTIVE_DIRECTORY_OID (AD DS)
CAP_AD_V51 = "1.2.840.113556.1.4.1670"  # Windows Server 2003
CAP_LDAP_INTEG = "1.2.840.113556.1.4.1791"  # signing and sealing (2003)
CAP_ADAM = "1.2.840.113556.1.4.1851"  # ADAM / AD LDS
CAP_ADAM_DIGEST = "1.2.840.113556.1.4.1880"
CAP_PARTIAL_SECRETS = "1.2.840.113556.1.4.1920"  # RODC
CAP_AD_V60 = "1.2.840.113556.1.4.1935"  # Windows Server 2008
CAP_AD_V61_R2 = "1.2.840.113556.1.4.2080"  # Windows Server 2008 R2
CAP_AD_W8 = "1.2.840.113556.1.4.2237"  # Windows Server 2012
CAPABILITY_NAMES: dict[str, str] = {
    CAP_AD: "LDAP_CAP_ACTIVE_DIRECTORY_OID",
    CAP_AD_V51: "LDAP_CAP_ACTIVE_DIRECTORY_V51_OID",
    CAP_LDAP_INTEG: "LDAP_CAP_ACTIVE_DIRECTORY_LDAP_INTEG_OID",
    CAP_ADAM: "LDAP_CAP_ACTIVE_DIRECTORY_ADAM_OID",
    CAP_ADAM_DIGEST: "LDAP_CAP_ACTIVE_DIRECTORY_ADAM_DIGEST",
    CAP_PARTIAL_SECRETS: "LDAP_CAP_ACTIVE_DIRECTORY_PARTIAL_SECRETS_OID",
    CAP_AD_V60: "LDAP_CAP_ACTIVE_DIRECTORY_V60_OID",
    CAP_AD_V61_R2: "LDAP_CAP_ACTIVE_DIRECTORY_V61_R2_OID",
    CAP_AD_W8: "LDAP_CAP_ACTIVE_DIRECTORY_W8_OID",
}

# Windows Server releases in order, with the domainControllerFunctionality each one reports
# ([MS-ADTS] 6.1.4.2: DS_BEHAVIOR_WIN2000 = 0, WIN2003 = 2, ... WIN2016 = 7, WIN2025 = 10; 2019
# and 2022 added no level) and the newest capability OID it introduced.
_WINDOWS_RELEASES: tuple[tuple[str, int, str | None], ...] = (
    ("2000", 0, None),
    ("2003", 2, CAP_AD_V51),
    ("2003 R2", 2, None),
    ("2008", 3, CAP_AD_V60),
    ("2008 R2", 4, CAP_AD_V61_R2),
    ("2012", 5, CAP_AD_W8),
    ("2012 R2", 6, None),
    ("2016", 7, None),
    ("2019", 7, None),
    ("2022", 7, None),
    ("2025", 10, None),
)
#: functional level number -> the Windows Server level it names (also what Samba emulates)
FUNCTIONAL_LEVEL_NAMES: dict[int, str] = {
    0: "Windows 2000",
    1: "Windows Server 2003 interim",
    2: "Windows Server 2003",
    3: "Windows Server 2008",
    4: "Windows Server 2008 R2",
    5: "Windows Server 2012",
    6: "Windows Server 2012 R2",
    7: "Windows Server 2016",
    10: "Windows Server 2025",
}

GLOBAL_CATALOG_PORTS = (3268, 3269)


@functools.lru_cache(maxsize=1)
def _ldap3() -> SimpleNamespace:
    """ldap3's protocol layer and pyasn1's BER codec, imported on first use (start-up speed)."""
    from ldap3 import BASE, DEREF_NEVER
    from ldap3.core.exceptions import LDAPInvalidDnError
    from ldap3.core.results import RESULT_CODES
    from ldap3.operation.extended import extended_operation
    from ldap3.operation.search import search_operation
    from ldap3.operation.unbind import unbind_operation
    from ldap3.protocol.rfc4511 import LDAPMessage, MessageID, ProtocolOp
    from ldap3.utils.dn import parse_dn
    from pyasn1.codec.ber import decoder, encoder
    from pyasn1.error import PyAsn1Error

    return SimpleNamespace(
        # what pyasn1 raises on bad BER (PyAsn1Error and its subclasses; ValueError from
        # constraint checks of decoded values; UnicodeError from character-string types)
        DECODE_ERRORS=(PyAsn1Error, ValueError, UnicodeError),
        LDAPInvalidDnError=LDAPInvalidDnError,
        BASE=BASE,
        DEREF_NEVER=DEREF_NEVER,
        RESULT_CODES=RESULT_CODES,
        extended_operation=extended_operation,
        search_operation=search_operation,
        unbind_operation=unbind_operation,
        LDAPMessage=LDAPMessage,
        MessageID=MessageID,
        ProtocolOp=ProtocolOp,
        parse_dn=parse_dn,
        decoder=decoder,
        encoder=encoder,
    )


# ------------------------------------------------------------------------------------- build


def _envelope(message_id: int, op_name: str, op: Any) -> bytes:
    """Wrap a protocolOp in an LDAPMessage and BER-encode it."""
    lib = _ldap3()
    message = lib.LDAPMessage()
    message["messageID"] = lib.MessageID(message_id)
    message["protocolOp"] = lib.ProtocolOp().setComponentByName(op_name, op)
    return bytes(lib.encoder.encode(message))


def build_search_request(
    message_id: int,
    base: str,
    attributes: tuple[str, ...] | list[str],
    *,
    size_limit: int = 0,
    time_limit: int = 10,
) -> bytes:
    """An anonymous base-scope search of ``base`` with filter ``(objectClass=*)``."""
    lib = _ldap3()
    request = lib.search_operation(
        base,
        "(objectClass=*)",
        lib.BASE,
        lib.DEREF_NEVER,
        list(attributes),
        size_limit,
        time_limit,
        False,  # types_only
        True,  # auto_escape
        True,  # auto_encode
    )
    return _envelope(message_id, "searchRequest", request)


@functools.lru_cache(maxsize=16)
def build_root_dse_request(message_id: int = 1) -> bytes:
    """The rootDSE search: base ``""``, scope base, the product-deciding attributes, ``*``, ``+``.

    Cached: a replay drives this dialogue once per LDAP flow, and ldap3/pyasn1 encoding costs
    about 1 ms each time for the same few bytes."""
    return build_search_request(message_id, "", ROOT_DSE_ATTRIBUTES)


def build_starttls_request(message_id: int) -> bytes:
    """The StartTLS extended request (RFC 4511 §4.14.1)."""
    return _envelope(message_id, "extendedReq", _ldap3().extended_operation(STARTTLS_OID))


def build_unbind_request(message_id: int) -> bytes:
    """An UnbindRequest (the polite end of an LDAP session; the server sends no reply)."""
    return _envelope(message_id, "unbindRequest", _ldap3().unbind_operation())


# ------------------------------------------------------------------------------------- frame


@prefix_framer
def frame_ldap_message(buf: bytes) -> int | None:
    """Frame one LDAPMessage by its BER definite length.

    Layout: ``30`` (SEQUENCE), a length (short form ``0x00-0x7f``, or ``0x8N`` followed by N
    length octets, N <= 4), then the messageID INTEGER (``02``). LDAP forbids the indefinite
    length form (``0x80``). Lengths above :data:`MAX_MESSAGE` are refused as not LDAP.
    """
    if not buf:
        return None
    if buf[0] != 0x30:
        raise NotThisProtocol(f"LDAP message must start with a SEQUENCE (0x30), got 0x{buf[0]:02x}")
    if len(buf) < 2:
        return None
    first = buf[1]
    if first < 0x80:
        header, length = 2, first
    else:
        count = first & 0x7F
        if count == 0:
            raise NotThisProtocol("indefinite BER length is not allowed in LDAP")
        if count > 4:
            raise NotThisProtocol(f"BER length of {count} octets")
        if len(buf) < 2 + count:
            return None
        header, length = 2 + count, int.from_bytes(buf[2 : 2 + count], "big")
    if length > MAX_MESSAGE:
        raise NotThisProtocol(f"LDAP message length {length} exceeds {MAX_MESSAGE}")
    if length < 5:  # messageID (3 octets at least) + a protocolOp tag and length
        raise NotThisProtocol(f"LDAP message length {length} is too short")
    if len(buf) > header and buf[header] != 0x02:
        raise NotThisProtocol("LDAP message does not start with an INTEGER messageID")
    total = header + length
    return total if len(buf) >= total else None


@prefix_framer
def frame_ldap_or_rest(buf: bytes) -> int | None:
    """Like :func:`frame_ldap_message`, but hand over the whole buffer when it is not LDAP.

    Used once the service is identified: whatever comes next (garbage, SASL-sealed data in a
    capture) then reaches the dialogue, whose parser refuses it and which keeps its finding,
    instead of the framer's refusal ending the dialogue in the engine.
    """
    try:
        return frame_ldap_message(buf)
    except NotThisProtocol:
        return len(buf) or None


# ------------------------------------------------------------------------------------- parse


@dataclass(frozen=True, slots=True)
class LDAPMessageInfo:
    """One decoded LDAP server message (the fields this probe needs)."""

    message_id: int
    #: the protocolOp name as in RFC 4511 / ldap3: searchResEntry, searchResDone, extendedResp ...
    op: str
    #: searchResEntry: the entry DN
    dn: str | None = None
    #: searchResEntry: attribute type -> raw values, in the order received
    attributes: dict[str, list[bytes]] = field(default_factory=dict)
    #: LDAPResult fields (searchResDone, bindResponse, extendedResp, ...)
    result_code: int | None = None
    result_name: str | None = None
    matched_dn: str | None = None
    diagnostic: str | None = None
    #: extendedResp: responseName OID
    response_name: str | None = None
    #: searchResEntry: values were left out or cut (see _trim_entry)
    trimmed: bool = False

    @property
    def is_notice_of_disconnection(self) -> bool:
        """True for the unsolicited notice a server sends before it closes (message id 0)."""
        return self.op == "extendedResp" and (self.message_id == 0 or self.response_name == NOTICE_OF_DISCONNECTION_OID)


#: the protocolOps that carry an LDAPResult (resultCode, matchedDN, diagnosticMessage)
_RESULT_OPS = frozenset(
    {
        "bindResponse",
        "searchResDone",
        "modifyResponse",
        "addResponse",
        "delResponse",
        "modDNResponse",
        "compareResponse",
        "extendedResp",
    }
)


#: the protocolOps that answer a search
_SEARCH_REPLY_OPS = frozenset({"searchResEntry", "searchResDone", "searchResRef"})


#: a searchResEntry larger than this is trimmed before pyasn1 sees it (see _trim_entry): pyasn1
#: costs about 8 us per element, so an entry of 330,000 tiny values would block the loop 4 s
TRIM_ABOVE = 16 * 1024
#: most values kept per attribute, most values kept in one entry, longest value kept (bytes)
MAX_VALUES_PER_ATTRIBUTE = 128
MAX_ENTRY_VALUES = 2048
MAX_VALUE_BYTES = 2048


def _ber_tlv(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, start of the value, end of the value) of the BER element at ``pos`` (definite lengths
    only, as LDAP requires); NotThisProtocol when it does not fit before ``end``."""
    if pos + 2 > end:
        raise NotThisProtocol("truncated BER element")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first & 0x80:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > end:
            raise NotThisProtocol("bad BER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    else:
        length = first
    if pos + length > end:
        raise NotThisProtocol("BER element longer than its container")
    return tag, pos, pos + length


def _ber_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _ber(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _ber_len(len(value)) + value


def _trim_entry(data: bytes) -> tuple[bytes, bool]:
    """A large searchResEntry rebuilt with at most :data:`MAX_VALUES_PER_ATTRIBUTE` values per
    attribute, :data:`MAX_ENTRY_VALUES` in all, each cut to :data:`MAX_VALUE_BYTES`; returns the
    message and whether anything was left out. Other messages come back unchanged.

    Layout (RFC 4511 §4.5.2): ``30`` LDAPMessage { ``02`` messageID, ``64`` searchResEntry {
    ``04`` objectName, ``30`` attributes { ``30`` PartialAttribute { ``04`` type, ``31`` vals {
    ``04`` value ... } } ... } }, optional controls }. The walk stops at the caps, so its cost is
    bounded whatever the message holds (what is left is never looked at).
    """
    tag, msg_start, msg_end = _ber_tlv(data, 0, len(data))
    if tag != 0x30:
        return data, False
    tag, _s, id_end = _ber_tlv(data, msg_start, msg_end)
    if tag != 0x02:
        return data, False
    tag, op_start, op_end = _ber_tlv(data, id_end, msg_end)
    if tag != 0x64:
        return data, False
    _tag, _s, dn_end = _ber_tlv(data, op_start, op_end)
    tag, attrs_start, attrs_end = _ber_tlv(data, dn_end, op_end)
    if tag != 0x30:
        return data, False
    attrs: list[bytes] = []
    kept = 0
    cut = False
    pos = attrs_start
    while pos < attrs_end and not cut:
        _tag, a_start, a_end = _ber_tlv(data, pos, attrs_end)
        pos = a_end
        _tag, _s, type_end = _ber_tlv(data, a_start, a_end)
        _tag, v_start, v_end = _ber_tlv(data, type_end, a_end)
        values: list[bytes] = []
        vpos = v_start
        while vpos < v_end:
            if len(values) >= MAX_VALUES_PER_ATTRIBUTE or kept >= MAX_ENTRY_VALUES:
                cut = True
                break
            vtag, s, e = _ber_tlv(data, vpos, v_end)
            cut = cut or e - s > MAX_VALUE_BYTES
            values.append(_ber(vtag, data[s : min(e, s + MAX_VALUE_BYTES)]))
            kept += 1
            vpos = e
        attrs.append(_ber(0x30, data[a_start:type_end] + _ber(0x31, b"".join(values))))
        cut = cut or (kept >= MAX_ENTRY_VALUES and pos < attrs_end)
    op = _ber(0x64, data[op_start:dn_end] + _ber(0x30, b"".join(attrs)))
    return _ber(0x30, data[msg_start:id_end] + op), cut


def parse_ldap_message(data: bytes) -> LDAPMessageInfo:
    """Decode one framed LDAPMessage with ldap3's RFC 4511 types.

    Raises :class:`NotThisProtocol` for anything that is not a well-formed LDAP message (the
    pyasn1 decoder's errors are turned into it: hostile bytes never escape as other exceptions).
    """
    lib = _ldap3()
    trimmed = False
    if len(data) > TRIM_ABOVE:
        data, trimmed = _trim_entry(data)
    try:
        message, _rest = lib.decoder.decode(data, asn1Spec=lib.LDAPMessage())
        message_id = int(message["messageID"])
        op_name = message["protocolOp"].getName()
        component = message["protocolOp"].getComponent()
        if op_name == "searchResEntry":
            attributes: dict[str, list[bytes]] = {}
            for attribute in component["attributes"]:
                name = decode_text(bytes(attribute["type"]))
                attributes.setdefault(name, []).extend(bytes(v) for v in attribute["vals"])
            return LDAPMessageInfo(
                message_id=message_id, op=op_name, dn=decode_text(bytes(component["object"])),
                attributes=attributes, trimmed=trimmed,
            )
        if op_name in _RESULT_OPS:
            code = int(component["resultCode"])
            response_name = None
            if op_name == "extendedResp" and component["responseName"].hasValue():
                response_name = decode_text(bytes(component["responseName"]))
            return LDAPMessageInfo(
                message_id=message_id,
                op=op_name,
                result_code=code,
                result_name=lib.RESULT_CODES.get(code, f"code {code}"),
                matched_dn=decode_text(bytes(component["matchedDN"])),
                diagnostic=decode_text(bytes(component["diagnosticMessage"])),
                response_name=response_name,
            )
        return LDAPMessageInfo(message_id=message_id, op=op_name)
    except lib.DECODE_ERRORS as exc:  # pyasn1's own errors; anything else is a probe bug
        raise NotThisProtocol(f"not a valid LDAP message: {type(exc).__name__}: {exc}"[:300]) from exc


@dataclass(frozen=True, slots=True)
class RootDSE:
    """The root DSE entry, attribute names matched case-insensitively."""

    #: lower-cased attribute name -> decoded values
    values: dict[str, list[str]]
    #: attribute names as the server spelled them
    names: dict[str, str]

    def all(self, name: str) -> list[str]:
        """Every value of ``name`` (empty when absent)."""
        return self.values.get(name.lower(), [])

    def first(self, name: str) -> str | None:
        """The first value of ``name``, or None."""
        values = self.all(name)
        return values[0] if values else None

    def integer(self, name: str) -> int | None:
        """The first value of ``name`` as an integer, or None when absent or not a number."""
        value = self.first(name)
        if value is None or not re.fullmatch(r"-?\d{1,9}", value.strip()):
            return None
        return int(value)

    def flag(self, name: str) -> bool | None:
        """An LDAP Boolean attribute (``TRUE``/``FALSE``), or None."""
        value = self.first(name)
        return None if value is None else value.strip().upper() == "TRUE"

    def as_dict(self) -> dict[str, list[str]]:
        """The attributes with the server's spelling of their names (for details/JSON)."""
        return {self.names[key]: list(vals) for key, vals in self.values.items()}


def parse_root_dse(entry: LDAPMessageInfo) -> RootDSE:
    """Turn the rootDSE searchResEntry into a :class:`RootDSE` (values decoded as text)."""
    if entry.op != "searchResEntry":
        raise NotThisProtocol(f"expected a searchResEntry, got {entry.op}")
    values: dict[str, list[str]] = {}
    names: dict[str, str] = {}
    for name, raw in entry.attributes.items():
        key = name.lower()
        names.setdefault(key, name)
        values.setdefault(key, []).extend(decode_text(v) for v in raw)
    return RootDSE(values=values, names=names)


def _dn_parts(dn: str | None) -> list[tuple[str, str, str]] | None:
    """ldap3's (attribute, value, separator) triples of ``dn``; None when empty or not a DN."""
    if not dn:
        return None
    lib = _ldap3()
    try:
        return list(lib.parse_dn(dn))
    except lib.LDAPInvalidDnError:
        return None


def dn_to_dns_name(dn: str | None) -> str | None:
    """``DC=lab,DC=example,DC=test`` -> ``lab.example.test`` (None when the DN has no DC parts)."""
    parts = _dn_parts(dn)
    if parts is None:
        return None
    labels = [value for attr, value, _sep in parts if attr.strip().lower() == "dc"]
    return ".".join(labels).lower() if labels else None


def site_from_server_name(dn: str | None) -> str | None:
    """The AD site from ``serverName`` (``CN=DC1,CN=Servers,CN=<site>,CN=Sites,...``)."""
    parts = _dn_parts(dn)
    if parts is None:
        return None
    rdns = [(attr.strip().lower(), value.strip()) for attr, value, _sep in parts]
    for i in range(1, len(rdns)):
        if rdns[i][0] == "cn" and rdns[i][1].lower() == "sites":
            return rdns[i - 1][1] or None
    return None


_VERSION = re.compile(r"(\d+(?:\.\d+)+)")


def parse_monitor_version(monitored_info: str) -> tuple[str, str] | None:
    """``OpenLDAP: slapd 2.5.13+dfsg-5 (Feb  8 2023 01:56:12)`` -> (``2.5.13``, ``2.5.13+dfsg-5``)."""
    match = re.search(r"slapd\s+(\d+(?:\.\d+)+)(\S*)", monitored_info)
    if not match:
        return None
    return match.group(1), match.group(1) + match.group(2)


def windows_generation(dc_level: int | None, capabilities: list[str]) -> str | None:
    """The Windows Server release(s) an AD DC can be, from its functional level and capabilities.

    ``domainControllerFunctionality`` names the DC's own OS level (7 covers 2016, 2019 and 2022);
    the capability OIDs give a lower bound (the newest one present) and an upper bound (the next
    one absent). Returns e.g. ``"Windows Server 2016-2022"``, ``"Windows Server 2003-2003 R2"``,
    ``"Windows Server 2012 or later"`` or None when nothing is known.
    """
    caps = set(capabilities)
    is_ad = bool(caps & {CAP_AD, CAP_ADAM})
    if dc_level is None and not is_ad:
        return None
    names = [r[0] for r in _WINDOWS_RELEASES]
    by_level = [r for r in _WINDOWS_RELEASES if dc_level is None or r[1] == dc_level]
    # capability bounds: the release introducing the newest OID present is the earliest possible;
    # the release introducing an OID that is absent is too new
    low, high = 0, len(names) - 1
    for index, (_name, _level, oid) in enumerate(_WINDOWS_RELEASES):
        if oid is None:
            continue
        if oid in caps:
            low = max(low, index)
        elif is_ad:
            high = min(high, index - 1)
    bounded = [r for r in by_level if low <= names.index(r[0]) <= high]
    # the functional level is the stronger fact: when the OIDs contradict it, trust the level
    candidates = bounded or (by_level if dc_level is not None else [])
    if not candidates:
        return None
    unbounded = dc_level is None and high == len(names) - 1
    first, last = candidates[0][0], candidates[-1][0]
    if unbounded:
        return f"Windows Server {first} or later"
    return f"Windows Server {first}" if first == last else f"Windows Server {first}-{last}"


