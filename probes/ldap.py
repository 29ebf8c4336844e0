"""LDAP probe: anonymous rootDSE search on 389/379/390/3268 and, inside implicit TLS, 636/3269.

Default ports: 389, 379 (Exchange SRS), 390, 3268 (AD global catalog); 636 and 3269 over LDAPS
(the engine starts TLS before the dialogue).

What it sends (all anonymous, no bind; message ids 1, 2, 3, ... so requests replay byte for byte):

1. a base-scope search of the root DSE (``""``, filter ``(objectClass=*)``) asking for the
   attributes that decide the product (:data:`ROOT_DSE_ATTRIBUTES`, plus ``*`` and ``+``);
2. for OpenLDAP only, when the rootDSE names a ``monitorContext``: a base search of that entry for
   ``monitoredInfo`` (the only place slapd states its version, readable when the ACL allows);
3. a base search of the default naming context (``objectClass`` only, size limit 1) to learn
   whether an anonymous client can read below the rootDSE;
4. when the rootDSE advertises the StartTLS extended operation (1.3.6.1.4.1.1466.20037) and the
   connection is not TLS yet: the StartTLS extended request, and the TLS handshake if accepted;
5. an unbind.

What it collects: the product (Microsoft AD DS, AD LDS/ADAM, Samba AD DC, OpenLDAP, 389 / Red Hat
Directory Server, or a generic LDAP server), its version where the server states it, the Windows
Server generation implied by the functional level and capability OIDs (a range when ambiguous),
the directory role (domain controller, global catalog), the AD domain, forest, DNS host name and
site, naming contexts, SASL mechanisms, StartTLS, and what an anonymous client may read. A server
that refuses the search with an LDAP error (bind required, unwilling to perform) or a notice of
disconnection is still confirmed as LDAP, with the error as evidence.

Messages are encoded and decoded with ldap3's protocol layer (``ldap3.protocol.rfc4511`` types and
its pyasn1 BER codec; no ldap3 Connection: the engine does the I/O). Framing by BER length is
done here (:func:`frame_ldap_message`) because ldap3 only frames inside its own socket strategy.
ldap3 and pyasn1 are imported lazily so that loading the probe registry stays fast.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Generator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, ClassVar

from scanner.api import (
    Dialogue,
    Finding,
    NotThisProtocol,
    Probe,
    ProbeContext,
    Recv,
    RecvClosed,
    RecvTimeout,
    Send,
    StartTLS,
    Step,
    TLSFailed,
    prefix_framer,
)
from scanner.textproto import decode_text

__all__ = [
    "LDAPMessageInfo",
    "LDAPProbe",
    "MAX_MESSAGE",
    "ROOT_DSE_ATTRIBUTES",
    "RootDSE",
    "STARTTLS_OID",
    "build_root_dse_request",
    "build_search_request",
    "build_starttls_request",
    "build_unbind_request",
    "classify_root_dse",
    "dn_to_dns_name",
    "frame_ldap_message",
    "frame_ldap_or_rest",
    "parse_ldap_message",
    "parse_monitor_version",
    "parse_root_dse",
    "refusal_finding",
    "replayed_messages_finding",
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


def build_root_dse_request(message_id: int = 1) -> bytes:
    """The rootDSE search: base ``""``, scope base, the product-deciding attributes, ``*``, ``+``."""
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


def _text(value: Any) -> str:
    return decode_text(bytes(value))


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
                name = _text(attribute["type"])
                attributes.setdefault(name, []).extend(bytes(v) for v in attribute["vals"])
            return LDAPMessageInfo(
                message_id=message_id, op=op_name, dn=_text(component["object"]), attributes=attributes,
                trimmed=trimmed,
            )
        if op_name in _RESULT_OPS:
            code = int(component["resultCode"])
            response_name = None
            if op_name == "extendedResp" and component["responseName"].hasValue():
                response_name = _text(component["responseName"])
            return LDAPMessageInfo(
                message_id=message_id,
                op=op_name,
                result_code=code,
                result_name=lib.RESULT_CODES.get(code, f"code {code}"),
                matched_dn=_text(component["matchedDN"]),
                diagnostic=_text(component["diagnosticMessage"]),
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


def dn_to_dns_name(dn: str | None) -> str | None:
    """``DC=lab,DC=example,DC=test`` -> ``lab.example.test`` (None when the DN has no DC parts)."""
    if not dn:
        return None
    lib = _ldap3()
    try:
        parts = lib.parse_dn(dn)
    except lib.LDAPInvalidDnError:
        return None
    labels = [value for attr, value, _sep in parts if attr.strip().lower() == "dc"]
    return ".".join(labels).lower() if labels else None


def site_from_server_name(dn: str | None) -> str | None:
    """The AD site from ``serverName`` (``CN=DC1,CN=Servers,CN=<site>,CN=Sites,...``)."""
    if not dn:
        return None
    lib = _ldap3()
    try:
        parts = lib.parse_dn(dn)
    except lib.LDAPInvalidDnError:
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


# ------------------------------------------------------------------------------------- classify


def _caps_evidence(caps: list[str], wanted: str) -> str:
    return f"{wanted} ({CAPABILITY_NAMES.get(wanted, '?')})"


def classify_root_dse(root: RootDSE, port: int = 389) -> Finding:
    """Name the product behind a rootDSE and collect the directory facts (pure function)."""
    caps = root.all("supportedCapabilities")
    vendor = root.first("vendorName")
    vendor_version = root.first("vendorVersion")
    object_classes = [v.lower() for v in root.all("objectClass") + root.all("structuralObjectClass")]
    finding = Finding(service="ldap", confidence=8)
    details = finding.details
    product: str | None = None
    version: str | None = None
    is_ad_like = CAP_AD in caps
    if vendor and vendor.lower().startswith("samba"):
        product = "Samba AD DC" if is_ad_like else "Samba"
        finding.add("rootDSE vendorName", vendor)
        if is_ad_like:
            finding.add("rootDSE supportedCapabilities", _caps_evidence(caps, CAP_AD))
        if vendor_version:
            finding.add("rootDSE vendorVersion", vendor_version)
            match = _VERSION.search(vendor_version)
            version = match.group(1) if match else None
        finding.confidence = 10
    elif "openldaprootdse" in object_classes:
        product = "OpenLDAP"
        finding.add("rootDSE structuralObjectClass", "OpenLDAProotDSE")
        finding.confidence = 10
    elif (vendor and re.match(r"(389 Project|Red Hat|Fedora Project|Netscape)", vendor, re.I)) or (
        vendor_version and re.match(r"(389|Red Hat|Fedora|Netscape)-Directory/", vendor_version, re.I)
    ):
        text = vendor_version or ""
        if text.lower().startswith("red hat") or (vendor or "").lower().startswith("red hat"):
            product = "Red Hat Directory Server"
        else:
            product = "389 Directory Server"
        if vendor:
            finding.add("rootDSE vendorName", vendor)
        if vendor_version:
            finding.add("rootDSE vendorVersion", vendor_version)
            match = re.search(r"Directory/(\d+(?:\.\d+)+)", vendor_version)
            version = match.group(1) if match else None
        finding.confidence = 10
    elif CAP_ADAM in caps:
        product = "Microsoft AD LDS"
        finding.add("rootDSE supportedCapabilities", _caps_evidence(caps, CAP_ADAM))
        finding.confidence = 9
    elif is_ad_like:
        product = "Microsoft Active Directory"
        finding.add("rootDSE supportedCapabilities", _caps_evidence(caps, CAP_AD))
        finding.add("rootDSE vendorName", "(absent: Windows does not publish one)")
        finding.confidence = 9
    elif vendor:
        product = vendor[:100]
        finding.add("rootDSE vendorName", vendor)
        if vendor_version:
            finding.add("rootDSE vendorVersion", vendor_version)
            match = _VERSION.search(vendor_version)
            version = match.group(1) if match else None
        finding.confidence = 9
    finding.product = product
    finding.version = version
    if vendor:
        details["vendor_name"] = vendor
    if vendor_version:
        details["vendor_version"] = vendor_version

    # --- directory facts
    default_nc = root.first("defaultNamingContext")
    service_name = root.first("ldapServiceName")
    domain = dn_to_dns_name(default_nc)
    if domain is None and service_name and ":" in service_name:
        domain = service_name.split(":", 1)[0].lower() or None
    forest = dn_to_dns_name(root.first("rootDomainNamingContext"))
    host = root.first("dnsHostName")
    site = site_from_server_name(root.first("serverName"))
    if domain:
        details["domain"] = domain
        finding.add("rootDSE defaultNamingContext", default_nc or service_name or "")
    if forest:
        details["forest"] = forest
    if host:
        details["dns_host_name"] = host
        finding.add("rootDSE dnsHostName", host)
    if site:
        details["site"] = site
    for key, attr in (
        ("server_name", "serverName"),
        ("ds_service_name", "dsServiceName"),
        ("ldap_service_name", "ldapServiceName"),
        ("default_naming_context", "defaultNamingContext"),
        ("current_time", "currentTime"),
        ("subschema_subentry", "subschemaSubentry"),
    ):
        if root.first(attr):
            details[key] = root.first(attr)
    if root.all("namingContexts"):
        details["naming_contexts"] = root.all("namingContexts")
    if root.all("supportedSASLMechanisms"):
        details["sasl_mechanisms"] = root.all("supportedSASLMechanisms")
    if root.all("supportedLDAPVersion"):
        details["ldap_versions"] = root.all("supportedLDAPVersion")
    if caps:
        details["capabilities"] = caps
    extensions = root.all("supportedExtension")
    details["starttls_advertised"] = STARTTLS_OID in extensions if extensions else None

    roles: list[str] = []
    if is_ad_like:
        roles.append("domain-controller")
        if CAP_PARTIAL_SECRETS in caps:
            roles.append("read-only-domain-controller")
    gc_ready = root.flag("isGlobalCatalogReady")
    if gc_ready or port in GLOBAL_CATALOG_PORTS:
        roles.append("global-catalog")
    if gc_ready is not None:
        finding.add("rootDSE isGlobalCatalogReady", root.first("isGlobalCatalogReady") or "")
    if roles:
        details["roles"] = roles
    details["port_role"] = "global-catalog" if port in GLOBAL_CATALOG_PORTS else "directory"

    levels = {
        "domain": root.integer("domainFunctionality"),
        "forest": root.integer("forestFunctionality"),
        "domain_controller": root.integer("domainControllerFunctionality"),
    }
    if any(v is not None for v in levels.values()):
        details["functional_levels"] = {k: v for k, v in levels.items() if v is not None}
        dc_level = levels["domain_controller"]
        if dc_level is not None and dc_level in FUNCTIONAL_LEVEL_NAMES:
            details["functional_level_name"] = FUNCTIONAL_LEVEL_NAMES[dc_level]
    extra: list[str] = []  # nmap-style extrainfo
    if product in ("Microsoft Active Directory", "Microsoft AD LDS"):
        generation = windows_generation(levels["domain_controller"], caps)
        if generation:
            details["windows_generation"] = generation
            extra.append(generation)
    if domain:
        finding.host_facts["ad_domain" if is_ad_like else "ldap_domain"] = domain
        if forest and is_ad_like:
            finding.host_facts["ad_forest"] = forest
    if host:
        finding.host_facts["dns_host_name"] = host
    if domain:
        extra.append(f"domain {domain}")
    if host:
        extra.append(f"host {host}")
    if port in GLOBAL_CATALOG_PORTS:
        extra.append("global catalog")
    finding.extrainfo = ", ".join(extra) or None
    return finding


def refusal_finding(reply: LDAPMessageInfo) -> Finding:
    """A server that answers the rootDSE search with an LDAP error is still LDAP: say so."""
    finding = Finding(service="ldap", confidence=8)
    text = f"{reply.op} resultCode {reply.result_code} {reply.result_name}"
    if reply.diagnostic:
        text += f": {reply.diagnostic}"
    if reply.response_name:
        text += f" ({reply.response_name})"
    finding.add(f"{reply.op} to rootDSE search", text)
    finding.details["refused"] = {
        "op": reply.op,
        "result_code": reply.result_code,
        "result_name": reply.result_name,
        "diagnostic": reply.diagnostic,
    }
    finding.details["anonymous_access"] = "none"
    # Windows' LDAP server formats its diagnostics as "<hex>: LdapErr: DSID-<hex>, comment: ..."
    if reply.diagnostic and re.search(r"\bLdapErr: DSID-[0-9A-F]+", reply.diagnostic):
        finding.product = "Microsoft Active Directory"
        finding.confidence = 7
        finding.add("diagnosticMessage format", "LdapErr: DSID- (Windows LDAP server)")
    return finding


def replayed_messages_finding(messages: list[LDAPMessageInfo]) -> Finding:
    """LDAP confirmed from a captured server stream that holds no rootDSE (binds, searches...).

    Diagnostics name the product when they carry a server's own wording: Windows' ``LdapErr:
    DSID-`` and slapd's ``slapAuthzDN`` (an OpenLDAP-only SASL property).
    """
    if not messages:
        raise NotThisProtocol("no LDAP message in the stream")
    finding = Finding(service="ldap", confidence=7)
    for message in messages[:3]:
        text = message.op
        if message.result_code is not None:
            text += f" resultCode {message.result_code} {message.result_name}"
        if message.diagnostic:
            text += f": {message.diagnostic}"
        finding.add(f"message id {message.message_id}", text)
    finding.details["ops_seen"] = sorted({m.op for m in messages})
    diagnostics = [m.diagnostic for m in messages if m.diagnostic]
    if any(re.search(r"\bLdapErr: DSID-[0-9A-F]+", d) for d in diagnostics):
        finding.product = "Microsoft Active Directory"
        finding.add("diagnosticMessage format", "LdapErr: DSID- (Windows LDAP server)")
    elif any("slapAuthzDN" in d for d in diagnostics):
        finding.product = "OpenLDAP"
        finding.add("diagnosticMessage", "slapAuthzDN (an OpenLDAP slapd SASL property)")
    return finding


# ------------------------------------------------------------------------------------- CLDAP

#: DS_FLAG bits of a netlogon response (MS-ADTS 6.3.1.2)
NETLOGON_FLAGS = {
    0x1: "PDC", 0x4: "GC", 0x8: "LDAP", 0x10: "DS", 0x20: "KDC", 0x40: "TIMESERV", 0x80: "CLOSEST",
    0x100: "WRITABLE", 0x200: "GOOD_TIMESERV", 0x400: "NDNC", 0x800: "SELECT_SECRET_DOMAIN_6",
    0x1000: "FULL_SECRET_DOMAIN_6", 0x2000: "WS", 0x4000: "DS_8", 0x8000: "DS_9", 0x10000: "DS_10",
    0x20000000: "DNS_CONTROLLER", 0x40000000: "DNS_DOMAIN", 0x80000000: "DNS_FOREST",
}
#: the names of a NETLOGON_SAM_LOGON_RESPONSE_EX, in wire order (MS-ADTS 6.3.1.9)
_NETLOGON_EX_NAMES = (
    "dns_forest", "dns_domain", "dns_host", "netbios_domain", "netbios_computer", "user", "dc_site", "client_site",
)
#: times the CLDAP request is sent when no datagram answers
CLDAP_TRIES = 2
#: most LDAP messages read from one CLDAP datagram
MAX_DATAGRAM_MESSAGES = 64


def split_datagram(datagram: bytes) -> list[LDAPMessageInfo]:
    """Every LDAPMessage of a CLDAP datagram (a search answer is its entries and its done, together)."""
    out: list[LDAPMessageInfo] = []
    pos = 0
    while pos < len(datagram) and len(out) < MAX_DATAGRAM_MESSAGES:
        n = frame_ldap_message(datagram[pos:])
        if n is None:
            raise NotThisProtocol("CLDAP datagram ends inside an LDAP message")
        out.append(parse_ldap_message(datagram[pos : pos + n]))
        pos += n
    return out


def parse_netlogon_response(blob: bytes) -> dict[str, Any]:
    """Decode a NETLOGON_SAM_LOGON_RESPONSE_EX (opcode 23), the answer to an AD "LDAP ping".

    Layout: opcode (u16 LE), Sbz (u16), Flags (u32 LE), DomainGuid (16 bytes), then eight
    RFC 1035 names compressed with pointers relative to the start of the blob (decoded with
    dnspython's ``dns.name.from_wire``). Older opcodes are reported by number only.
    """
    import dns.exception
    import dns.name

    if len(blob) < 24:
        raise NotThisProtocol("netlogon response too short")
    opcode = int.from_bytes(blob[:2], "little")
    out: dict[str, Any] = {"opcode": opcode}
    if opcode != 23:
        return out
    flags = int.from_bytes(blob[4:8], "little")
    out["flags"] = f"{flags:#010x}"
    out["flag_names"] = [name for bit, name in NETLOGON_FLAGS.items() if flags & bit]
    guid = blob[8:24]
    out["domain_guid"] = "{:08x}-{:04x}-{:04x}-{}-{}".format(
        int.from_bytes(guid[:4], "little"), int.from_bytes(guid[4:6], "little"),
        int.from_bytes(guid[6:8], "little"), guid[8:10].hex(), guid[10:].hex(),
    )
    pos = 24
    for field_name in _NETLOGON_EX_NAMES:
        try:
            name, used = dns.name.from_wire(blob, pos)
        except (dns.exception.DNSException, ValueError, IndexError) as exc:
            raise NotThisProtocol(f"netlogon response: bad {field_name} name ({exc})") from None
        pos += used
        text = name.to_text(omit_final_dot=True)
        if text and text != "@":
            out[field_name] = text
    return out


def cldap_finding(messages: list[LDAPMessageInfo], port: int) -> Finding:
    """LDAP confirmed from a CLDAP answer: a rootDSE (classified as over TCP) or a netlogon ping.

    A netlogon answer names the AD domain, forest and DC, but not whether Windows or Samba sent
    it (no version string): the product stays unnamed.
    """
    entry = next((m for m in messages if m.op == "searchResEntry"), None)
    done = next((m for m in messages if m.op == "searchResDone"), None)
    if entry is None:
        if done is None:
            raise NotThisProtocol("no search answer in the CLDAP datagram")
        if done.result_code == 0:
            finding = Finding(service="ldap", confidence=7)
            finding.add("CLDAP searchResDone", "success, no entry returned")
            return finding
        return refusal_finding(done)
    netlogon = next((v for k, v in entry.attributes.items() if k.lower() == "netlogon"), None)
    if netlogon:
        facts = parse_netlogon_response(netlogon[0])
        finding = Finding(service="ldap", confidence=8)
        finding.details["cldap_netlogon"] = facts
        finding.add("CLDAP netlogon", " ".join(f"{k}={v}" for k, v in facts.items() if k != "flag_names")[:500])
        domain = facts.get("dns_domain")
        if domain:
            finding.host_facts["ad_domain"] = domain
            host = facts.get("dns_host") or facts.get("netbios_computer")
            finding.extrainfo = f"AD domain {domain}" + (f", DC {host}" if host else "")
        return finding
    root = parse_root_dse(entry)
    finding = classify_root_dse(root, port)
    finding.details["root_dse"] = root.as_dict()
    if entry.trimmed:
        finding.details["root_dse_trimmed"] = True
    finding.details["cldap"] = True
    return finding


# ------------------------------------------------------------------------------------- probe


class LDAPProbe(Probe):
    """LDAP rootDSE probe (see the module docstring for what it sends and collects)."""

    name: ClassVar[str] = "ldap"
    services: ClassVar[tuple[str, ...]] = ("ldap",)
    transports = ("tcp", "udp")
    ports: ClassVar[tuple[int, ...]] = (389, 379, 390, 3268, 636, 3269)
    tls_ports: ClassVar[tuple[int, ...]] = (636, 3269)
    server_first: ClassVar[bool] = False
    rarity: ClassVar[int] = 2
    summary: ClassVar[str] = (
        "LDAP rootDSE: AD DS / AD LDS / Samba AD / OpenLDAP / 389-DS, domain, DC and global-catalog role"
    )

    def _search(self, message_id: int, entries: list[LDAPMessageInfo]) -> Generator[Step, Any, LDAPMessageInfo | None]:
        """Read the replies to request ``message_id``, appending entries to ``entries``.

        Returns the final message: searchResDone, a notice of disconnection or any other reply to
        the request (None after :data:`MAX_SEARCH_MESSAGES` messages without one). Entries are
        appended as they arrive so that they survive a timeout thrown in mid-search.
        """
        for _ in range(MAX_SEARCH_MESSAGES):
            data = yield Recv(frame_ldap_or_rest, max_size=MAX_RECV)
            reply = parse_ldap_message(data)
            if reply.is_notice_of_disconnection:
                return reply
            if reply.message_id != message_id:
                continue  # not ours (no other request is outstanding): skip, bounded by the loop
            if reply.op == "searchResEntry":
                entries.append(reply)
            elif reply.op == "searchResRef":
                continue
            else:
                return reply
        return None

    def _cldap(self, ctx: ProbeContext) -> Dialogue:
        """CLDAP (UDP): the rootDSE search in one datagram, its answer in one datagram.

        Sent at most :data:`CLDAP_TRIES` times when unanswered. In a replay the answer may be
        another client's (an AD "LDAP ping" for the netlogon attribute): any message id is taken.
        """
        answer: bytes | None = None
        for attempt in range(CLDAP_TRIES):
            yield Send(build_root_dse_request(1))
            try:
                answer = yield Recv(frame_ldap_message, max_size=MAX_RECV)
            except RecvTimeout:
                if attempt + 1 == CLDAP_TRIES:
                    raise
                continue
            break
        assert answer is not None
        messages = split_datagram(answer)
        if not ctx.replay and any(m.message_id != 1 for m in messages):
            raise NotThisProtocol("CLDAP answer with another message id")
        return cldap_finding(messages, ctx.port)

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        """rootDSE search, OpenLDAP monitor, anonymous-read check, StartTLS, unbind (CLDAP on UDP)."""
        if ctx.transport == "udp":
            return (yield from self._cldap(ctx))
        message_id = 1
        yield Send(build_root_dse_request(message_id))
        # In a pcap replay the server's replies answer another client's requests: their message
        # ids are not ours and the stream goes on with whatever that client asked (binds, SASL-
        # wrapped traffic). The first reply tells: our id and the rootDSE (our own scan, recorded
        # with --record: the follow-ups are in the capture too), or anything else (a foreign client).
        replay = False
        entries: list[LDAPMessageInfo] = []
        others: list[LDAPMessageInfo] = []
        done: LDAPMessageInfo | None = None
        for _ in range(MAX_SEARCH_MESSAGES):
            # once something was identified, a non-LDAP tail must not undo it (see frame_ldap_or_rest)
            framer = frame_ldap_or_rest if entries or others else frame_ldap_message
            try:
                data = yield Recv(framer, max_size=MAX_RECV)
                reply = parse_ldap_message(data)
            except (RecvTimeout, RecvClosed, NotThisProtocol):
                if entries or (replay and others):
                    break  # keep what was read (a reply cut short after the entry, SASL-sealed data)
                raise
            if not entries and not others and not reply.is_notice_of_disconnection:
                # a first reply with another id, or one that is no answer to a search at all
                # (bindResponse, extendedResp), answers someone else's request
                if reply.message_id != message_id or reply.op not in _SEARCH_REPLY_OPS:
                    replay = True
                elif ctx.replay and reply.op == "searchResEntry" and reply.dn != "":
                    replay = True  # another client's search with our message id
            if reply.is_notice_of_disconnection:
                done = reply
                break
            if replay:
                if reply.op == "searchResEntry" and reply.dn == "":
                    entries.append(reply)
                    break
                others.append(reply)
            elif reply.message_id != message_id or reply.op == "searchResRef":
                continue  # not ours / a referral: skip (bounded by the loop)
            elif reply.op == "searchResEntry":
                entries.append(reply)
            else:
                done = reply
                break
        if replay and not entries:
            return replayed_messages_finding(others)
        if not entries:
            if done is None:
                raise NotThisProtocol("no reply to the rootDSE search")
            if done.result_code == 0:
                # success with no entry: an LDAP server that hides its rootDSE
                finding = Finding(service="ldap", confidence=8)
                finding.add("searchResDone to rootDSE search", "success, no entry returned")
                finding.details["anonymous_access"] = "none"
                return finding
            return refusal_finding(done)

        root = parse_root_dse(entries[0])
        finding = ctx.found(classify_root_dse(root, ctx.port))
        finding.details["root_dse"] = root.as_dict()
        if entries[0].trimmed:
            finding.details["root_dse_trimmed"] = True
        if done is not None and done.op == "searchResDone":
            finding.add("searchResDone", f"resultCode {done.result_code} {done.result_name}")
        if ctx.implicit_tls:
            finding.details["transport_security"] = "ldaps"
        if replay:
            return finding  # the capture holds no answers to our follow-up requests
        anonymous: dict[str, Any] = {"root_dse": True}
        finding.details["anonymous_access"] = "rootdse-only"
        finding.details["anonymous"] = anonymous

        # --- OpenLDAP states its version only in cn=Monitor
        monitor = root.first("monitorContext")
        if finding.product == "OpenLDAP" and monitor:
            message_id += 1
            yield Send(build_search_request(message_id, monitor, ("monitoredInfo", "+"), size_limit=1))
            mon_entries: list[LDAPMessageInfo] = []
            try:
                mon_done = yield from self._search(message_id, mon_entries)
            except (RecvTimeout, RecvClosed, NotThisProtocol):
                return finding  # an optional step: keep the identification
            anonymous["monitor"] = bool(mon_entries)
            for entry in mon_entries[:1]:
                info = [decode_text(v) for v in entry.attributes.get("monitoredInfo", [])]
                if info:
                    finding.add("cn=Monitor monitoredInfo", info[0])
                    finding.details["monitored_info"] = info[0]
                    parsed = parse_monitor_version(info[0])
                    if parsed:
                        finding.version, finding.details["build"] = parsed
            if mon_done is not None and mon_done.is_notice_of_disconnection:
                return finding

        # --- can an anonymous client read below the rootDSE?
        naming_context = root.first("defaultNamingContext") or root.first("namingContexts")
        if naming_context:
            message_id += 1
            yield Send(build_search_request(message_id, naming_context, ("objectClass",), size_limit=1))
            nc_entries: list[LDAPMessageInfo] = []
            try:
                nc_done = yield from self._search(message_id, nc_entries)
            except (RecvTimeout, RecvClosed, NotThisProtocol):
                return finding  # an optional step: keep the identification
            anonymous["naming_context"] = naming_context
            anonymous["naming_context_readable"] = bool(nc_entries)
            if nc_entries:
                finding.details["anonymous_access"] = "directory"
                finding.add("anonymous read", f"base entry {naming_context} returned")
            elif nc_done is not None:
                anonymous["naming_context_error"] = (
                    f"{nc_done.result_code} {nc_done.result_name}: {nc_done.diagnostic or ''}".strip()
                )
                finding.add(f"anonymous read of {naming_context}", anonymous["naming_context_error"])
            if nc_done is not None and nc_done.is_notice_of_disconnection:
                return finding

        # --- StartTLS, when advertised on a plain connection
        if finding.details.get("starttls_advertised") and ctx.tls is None:
            message_id += 1
            yield Send(build_starttls_request(message_id))
            try:
                tls_reply = yield from self._search(message_id, [])
            except (RecvTimeout, RecvClosed, NotThisProtocol):
                finding.details["starttls"] = "no-reply"
                return finding
            if tls_reply is None or tls_reply.op != "extendedResp" or tls_reply.is_notice_of_disconnection:
                finding.details["starttls"] = "no-reply"
                return finding
            if tls_reply.result_code != 0:
                finding.details["starttls"] = f"refused: {tls_reply.result_code} {tls_reply.result_name}"
                return finding
            try:
                facts = yield StartTLS(server_name=ctx.hostname)
            except TLSFailed as exc:
                finding.details["starttls"] = f"handshake failed: {exc}"[:200]
                return finding
            finding.details["starttls"] = "ok"
            finding.details["starttls_tls"] = {"version": facts.version, "cipher": facts.cipher}

        # --- NTLM facts: a SASL bind carrying an NTLMSSP NEGOTIATE returns the server's CHALLENGE
        # (NetBIOS/DNS names, OS version); no credentials are sent and the bind is left unfinished
        mechs = [str(m).upper() for m in finding.details.get("sasl_mechanisms") or []]
        mech = "NTLM" if "NTLM" in mechs else ("GSS-SPNEGO" if "GSS-SPNEGO" in mechs else None)
        if mech is not None:
            from scanner.ntlm import NTLMError, build_ldap_sasl_bind, parse_ldap_bind_response

            message_id += 1
            yield Send(build_ldap_sasl_bind(message_id, mech))
            try:
                bind_reply = yield Recv(frame_ldap_message)
                bound = parse_ldap_bind_response(bind_reply)
            except (RecvTimeout, RecvClosed, NotThisProtocol, NTLMError) as exc:
                finding.details["ntlm_error"] = str(exc)[:200]
                return finding
            if bound.challenge is not None:
                finding.details["ntlm"] = bound.challenge.as_dict()
                finding.add(f"SASL {mech} challenge", bound.challenge.summary())
            else:
                finding.details["ntlm_error"] = bound.challenge_error or f"bind result {bound.result_code}"

        message_id += 1
        yield Send(build_unbind_request(message_id))
        return finding
