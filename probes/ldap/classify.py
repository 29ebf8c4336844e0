"""LDAP classification: the product, version, Windows generation and directory role a rootDSE, a
refusal or a CLDAP netlogon answer names (pure functions). Part of the :mod:`probes.ldap` package."""

from __future__ import annotations

import re
from typing import Any

from probes.ldap.wire import (
    _VERSION,
    CAP_AD,
    CAP_ADAM,
    CAP_PARTIAL_SECRETS,
    CAPABILITY_NAMES,
    FUNCTIONAL_LEVEL_NAMES,
    GLOBAL_CATALOG_PORTS,
    STARTTLS_OID,
    LDAPMessageInfo,
    RootDSE,
    dn_to_dns_name,
    frame_ldap_message,
    parse_ldap_message,
    parse_root_dse,
    site_from_server_name,
    windows_generation,
)
from scanner.api import (
    Finding,
    NotThisProtocol,
)

__all__ = [
    "classify_root_dse",
    "refusal_finding",
    "replayed_messages_finding",
]


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


