"""DNS product identification: version-string rules, hidden-version behaviour and the AD facts replies
name (pure functions). Part of the :mod:`probes.dns` package."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from probes.dns.wire import (
    CHAOS_NAMES,
    RR,
    DNSReply,
)
from scanner.api import (
    Finding,
)
from scanner.ntlm import windows_name

__all__ = [
    "VERSION_RULES",
    "VersionRule",
    "identify",
    "match_version_string",
]


# --------------------------------------------------------------------------------- identify

@dataclass(frozen=True, slots=True)
class VersionRule:
    """One rule naming the product behind a CHAOS ``version.bind`` / ``version.server`` string.

    ``pattern`` must match the whole (stripped) string, so a product is never read from a word in
    the middle of an operator's message; its ``version`` group (when present) is the version, which
    ``refine`` may rewrite (BIND: the upstream release with ISC's patch level, without the distro's
    package revision). ``source`` says where the string's form is documented or was seen; the tests
    in ``tests/probes/test_dns_rules.py`` hold a real example for each rule.
    """

    id: str
    pattern: re.Pattern[str]
    product: str
    source: str
    confidence: int = 10
    refine: Callable[[re.Match[str]], str | None] | None = None


def _bind_version(m: re.Match[str]) -> str | None:
    """BIND's release from its version string: ``9.11.4-P2-RedHat-9.11.4-26.P2.el7`` -> ``9.11.4-P2``,
    ``9.18.49-1~deb12u3-Debian`` -> ``9.18.49``, ``9.8.4-rpz2+rl005.12-P1`` -> ``9.8.4-P1``,
    ``8.2.2-P5`` -> ``8.2.2-P5``, ``8.3.4-REL`` -> ``8.3.4``.

    ISC names releases x.y.z[a1|b1|rc1][-P<n>|-S<n>] (and 9.6/9.7 ``-ESV[-R<n>]``); what follows is the
    packager's (Debian/Ubuntu/Red Hat revision, the rpz/rl patch set), kept in ``version_string``.
    """
    version = m["version"]
    patch = re.match(r"(?:-rpz[\w.+]*)?-([PS]\d{1,3})(?=$|[-+\s.])", m["rest"] or "")
    return f"{version}-{patch[1]}" if patch else version


_BIND_SUFFIX = r"(?P<rest>(?:[-+~ ].{0,200})?)"
#: BIND 8 and 4.9 strings always carry a release suffix: -REL, -P<n> (patch) or -T<n> (test)
_BIND_OLD_SUFFIX = r"(?P<rest>-(?:REL|P\d{1,2}|T\d{1,2}[A-Z]?)\b.{0,200})"
#: the rules for CHAOS version strings, most specific first; strings no rule knows ("none",
#: "unknown", "[secured]", "Go away", a bare "1.0") give no product and stay in ``version_string``
VERSION_RULES: tuple[VersionRule, ...] = (
    # BIND answers version.bind with its version unless `version` is set (BIND 9 ARM, options
    # statement "version": "The default is the real version number of this server"); packagers
    # append their revision: Debian "9.18.49-1~deb12u3-Debian" (our lab), Red Hat
    # "9.11.4-P2-RedHat-9.11.4-26.P2.el7", Ubuntu "9.16.1-Ubuntu"
    VersionRule(
        "version-bind-bind9",
        re.compile(r"(?:ISC )?(?:BIND )?(?P<version>9\.\d{1,2}(?:\.\d{1,3}(?:(?:a|b|rc)\d{1,2})?(?:-ESV(?:-R\d{1,2})?)?"
                   r"|-ESV(?:-R\d{1,2})?))" + _BIND_SUFFIX, re.S),
        "ISC BIND",
        "BIND 9 ARM (options: version); lab BIND 9.18 on Debian 12",
        refine=_bind_version,
    ),
    # BIND 8 and 4.9 release names carry -REL (release) or -P<n> (patch): "8.2.2-P5", "8.4.7-REL"
    VersionRule(
        "version-bind-bind8",
        re.compile(r"(?:BIND )?(?P<version>8\.\d{1,2}\.\d{1,2})" + _BIND_OLD_SUFFIX, re.S),
        "ISC BIND",
        "ISC release names (BIND 8.2.2-P5, 8.4.7-REL)",
        refine=_bind_version,
    ),
    VersionRule(
        "version-bind-bind4",
        re.compile(r"(?:BIND )?(?P<version>4\.9\.\d{1,2})" + _BIND_OLD_SUFFIX, re.S),
        "ISC BIND",
        "ISC release names (BIND 4.9.11-REL)",
        refine=_bind_version,
    ),
    # Windows DNS answers only with EnableVersionQuery set: "Microsoft DNS 6.1.7601 (1DB15CD4)"
    VersionRule(
        "version-bind-microsoft-dns",
        re.compile(r"Microsoft DNS (?P<version>\d{1,2}\.\d{1,2}(?:\.\d{1,5})?)(?: \([0-9A-Fa-f]{1,8}\))?\s*"),
        "Microsoft DNS",
        "Windows DNS Server with EnableVersionQuery (string quoted in issue 13)",
    ),
    # dnsmasq's version.bind (its CHAOS "bind" names: version/hostname/cachesize...): "dnsmasq-2.90"
    VersionRule("version-bind-dnsmasq", re.compile(r"dnsmasq-(?P<version>\d{1,2}\.\d{1,3}[\w.\-]{0,32})"), "dnsmasq",
                "lab dnsmasq 2.90 (Debian 12)"),
    VersionRule("version-bind-unbound", re.compile(r"unbound (?P<version>\d{1,2}\.\d{1,3}\.\d{1,3}[\w.\-]{0,32})",
                                                   re.I), "Unbound", "lab Unbound 1.17 (Debian 12)"),
    VersionRule(
        "version-bind-powerdns-authoritative",
        re.compile(r"PowerDNS Authoritative Server (?P<version>\d[\w.\-]{0,32})(?: .{0,200})?", re.S),
        "PowerDNS Authoritative Server",
        "lab pdns-server 4.7 (Debian 12), default version-string=full",
    ),
    VersionRule(
        "version-bind-powerdns-recursor",
        re.compile(r"PowerDNS Recursor (?P<version>\d[\w.\-]{0,32})(?: .{0,200})?", re.S),
        "PowerDNS Recursor",
        "PowerDNS Recursor version-string default 'PowerDNS Recursor <version> (built ...)'",
    ),
    # version-string=powerdns: "Served by PowerDNS - https://www.powerdns.com/"; PowerDNS 2.x answered
    # "Served by POWERDNS 2.9.22 $Id: packethandler.cc ..." (PowerDNS/pdns issue 234)
    VersionRule(
        "version-bind-powerdns-served-by",
        re.compile(r"Served by PowerDNS(?: (?P<version>\d[\w.\-]{0,32}))?(?:\W.{0,300})?", re.I | re.S),
        "PowerDNS",
        "PowerDNS docs (version-string=powerdns); PowerDNS/pdns issue 234",
    ),
    VersionRule("version-bind-knot-dns", re.compile(r"Knot DNS (?P<version>\d[\w.\-]{0,32})"), "Knot DNS",
                "lab knot 3.2 (Debian 12)"),
    # NSD's default version string is its PACKAGE_STRING, "NSD 4.6.1" (nsd.conf(5): version)
    VersionRule("version-bind-nsd", re.compile(r"NSD (?P<version>\d[\w.\-]{0,32})"), "NSD",
                "NSD 4.6.1 run by hand for tests/probes/test_dns.py; nsd.conf(5) version"),
    # CoreDNS's chaos plugin: "VERSION ... Defaults to CoreDNS-<version>" (coredns.io/plugins/chaos)
    VersionRule("version-bind-coredns", re.compile(r"CoreDNS-(?P<version>\d[\w.\-]{0,32})"), "CoreDNS",
                "coredns.io/plugins/chaos"),
    # gdnsd 3 answers its name and major version: "gdnsd/3" (gdnsd 3.8.1 run on loopback)
    VersionRule("version-bind-gdnsd", re.compile(r"gdnsd/(?P<version>\d{1,2}(?:\.\d{1,3}){0,2})"), "gdnsd",
                "lab: gdnsd 3.8.1 (Debian 12 package) answers gdnsd/3"),
    # a PowerDNS Recursor built from a git snapshot names no release: "PowerDNS Recursor git-20140402-1151-
    # cc08b5a (jenkins@... built ...)"; the snapshot stays in version_string, no version is claimed
    VersionRule(
        "version-bind-powerdns-recursor-snapshot",
        re.compile(r"PowerDNS Recursor git-\d{8}[\w.\-]{0,48}(?: .{0,200})?", re.S),
        "PowerDNS Recursor",
        "public-dns.info resolver list, May 2014 (repo:longbai/dns-check nameservers.json, ordns.he.net)",
    ),
    # an operator's "BIND-9" (or "BIND 9"): the product and its major release only
    VersionRule("version-bind-bind-major", re.compile(r"(?:ISC )?BIND[- ](?P<version>[489])"), "ISC BIND",
                "public-dns.info resolver list, May 2014 (repo:longbai/dns-check nameservers.json, ns.cstnet.cn)"),
)


@functools.lru_cache(maxsize=512)
def match_version_string(text: str) -> tuple[VersionRule, str | None] | None:
    """The rule that names the product of a CHAOS version string, and the version it reads, or None.

    Cached (pure; rules are frozen): every server of a kind sends the same string."""
    text = text.strip()
    if len(text) > 512:
        return None
    for rule in VERSION_RULES:
        m = rule.pattern.fullmatch(text)
        if m:
            version = rule.refine(m) if rule.refine else m.groupdict().get("version")
            return rule, version
    return None


def _server_windows(version: str) -> str | None:
    """The Windows Server release of a Microsoft DNS version ``6.1.7601``: the DNS Server role exists
    only on server editions, so the client name :func:`scanner.ntlm.windows_name` pairs with it is
    dropped."""
    parts = version.split(".")
    if len(parts) != 3:
        return None
    name = windows_name(int(parts[0]), int(parts[1]), int(parts[2]))
    if not name:
        return None
    server = [n for n in name.split(" / ") if n.startswith("Windows Server") or n == "Windows 2000"]
    return server[0] if server else None


def _txt_value(rr: RR) -> str:
    """The text of a TXT record (its strings joined, quotes and escapes removed)."""
    text = rr.text
    if "\\" not in text and text.startswith('"') and text.count('"') == 2 and text.endswith('"') and len(text) > 1:
        return text[1:-1]  # one plain string (the common case at scale): what the regexes give
    parts = re.findall(r'"((?:[^"\\]|\\.)*)"', text)
    if not parts:
        return text
    raw = "".join(parts)
    return re.sub(r"\\(\d{3}|.)", lambda m: chr(int(m[1])) if m[1].isdigit() else m[1], raw)


def _printable(data: bytes) -> str:
    """NSID bytes as text when printable ASCII, else as hex."""
    if data and all(32 <= b < 127 for b in data):
        return data.decode("ascii")
    return data.hex()


def _upstream_version(version: str) -> str | None:
    """The upstream x.y.z part of a distro version string (``9.18.49-1~deb12u3-Debian``)."""
    m = re.match(r"(\d+(?:\.\d+)+)", version)
    return m[1] if m else None


def _by_question(replies: Sequence[DNSReply]) -> dict[tuple[str, str, str], DNSReply]:
    """Replies keyed by their question (the first reply per question wins)."""
    out: dict[tuple[str, str, str], DNSReply] = {}
    for r in replies:
        if r.question is not None and r.question not in out:
            out[r.question] = r
    return out


def _srv_targets(reply: DNSReply | None) -> list[dict[str, Any]]:
    """SRV answers of a reply as dicts (priority, weight, port, target)."""
    out: list[dict[str, Any]] = []
    if reply is None:
        return out
    for rr in reply.answer:
        if rr.rdtype != "SRV":
            continue
        parts = rr.text.split()
        if len(parts) == 4 and all(p.isdigit() for p in parts[:3]):
            out.append(
                {
                    "priority": int(parts[0]),
                    "weight": int(parts[1]),
                    "port": int(parts[2]),
                    "target": parts[3].rstrip(".").lower(),
                }
            )
    return out


#: SOA rdata of Unbound's built-in local zones (RFC 6303 reverse zones such as 127.in-addr.arpa
#: and 10.in-addr.arpa, RFC 6761 names such as invalid. and test.), seen live from Unbound 1.17:
#: ``localhost. nobody.invalid. 1 3600 1200 604800 10800``
_UNBOUND_BUILTIN_SOA = re.compile(r"^localhost\. nobody\.invalid\. ", re.I)
#: EDNS extended error codes (RFC 8914) the hidden-version rules look at
EDE_PROHIBITED = 18
EDE_NOT_AUTHORITATIVE = 20


def _hidden_version_product(
    byq: dict[tuple[str, str, str], DNSReply], replies: Sequence[DNSReply]
) -> tuple[str, int, list[str], str] | None:
    """Product, confidence, tells and rule id for servers whose version string is hidden, or None.

    Each rule is what that server did in the lab with its version hidden (Unbound 1.17
    ``hide-version``, PowerDNS Authoritative 4.7 ``version-string=anonymous``, Knot DNS 3.2
    ``version: ""``, NSD 4.6 ``hide-version``); confidences stay below a self-naming string's.
    """
    chaos = [r for n in CHAOS_NAMES if (r := byq.get((n + ".", "TXT", "CH"))) is not None]
    vb = byq.get(("version.bind.", "TXT", "CH"))
    # PowerDNS Authoritative: version.bind SERVFAIL, authoritative; other CHAOS names answered
    # (id.server) or REFUSED, all with AA
    others = [r for r in chaos if r is not vb]
    if (
        vb is not None
        and vb.rcode == "SERVFAIL"
        and vb.aa
        and others
        and all(r.aa and r.rcode in ("REFUSED", "NOERROR") for r in others)
    ):
        return (
            "PowerDNS Authoritative Server",
            6,
            ["version.bind CH TXT: SERVFAIL with AA, other CHAOS names REFUSED/answered with AA (PowerDNS)"],
            "behaviour-powerdns-version-servfail-aa",
        )
    # Unbound: its built-in local zones' SOA, in an authoritative reply
    builtin = next(
        (
            rr
            for r in replies
            if r.aa
            for rr in (*r.answer, *r.authority)
            if rr.rdtype == "SOA" and _UNBOUND_BUILTIN_SOA.match(rr.text)
        ),
        None,
    )
    if builtin is not None:
        tells = [f"built-in local zone SOA: {builtin.name} {builtin.text} (Unbound)"]
        if chaos and all(r.rcode == "REFUSED" and "RA" in r.flags for r in chaos):
            tells.append("CHAOS names REFUSED with RA set (Unbound hide-version/hide-identity)")
        return "Unbound", 5 + (len(tells) > 1), tells, "behaviour-unbound-builtin-zone-soa"
    # Knot DNS / NSD: REFUSED + EDE 20 for names outside their zones; refused CHAOS names carry
    # EDE 18 from NSD and no EDE from Knot
    not_auth = [
        r
        for r in replies
        if r.question is not None and r.question[2] == "IN" and r.rcode == "REFUSED" and EDE_NOT_AUTHORITATIVE in r.ede
    ]
    refused_chaos = [r for r in chaos if r.rcode == "REFUSED" and r.edns]
    if not_auth and refused_chaos and len(refused_chaos) == len(chaos):
        tell = "REFUSED with EDE 20 (Not Authoritative) outside its zones"
        if all(EDE_PROHIBITED in r.ede for r in refused_chaos):
            tells = [tell, "CHAOS names REFUSED with EDE 18 (Prohibited) (NSD hide-version)"]
            return "NSD", 5, tells, "behaviour-nsd-ede"
        if not any(r.ede for r in refused_chaos):
            tells = [tell, "CHAOS names REFUSED without EDE (Knot DNS, version hidden)"]
            return "Knot DNS", 5, tells, "behaviour-knot-ede"
    return None


#: NSID values (RFC 5001) whose documented form names the operator's service
_NSID_RULES: list[tuple[str, re.Pattern[str], str]] = [
    ("nsid-google-public-dns", re.compile(r"gpdns-[a-z]{3}"), "Google Public DNS"),
]


def identify(replies: Sequence[DNSReply], *, queries_had_edns: bool | None = True) -> Finding:
    """Decide the product from the replies a server gave (each carries its own question).

    Pure: used by the live dialogue and usable by a pcap replay. ``queries_had_edns`` says
    whether every query carried an OPT record (None when unknown, as in a capture), which makes
    "no OPT in the answer" meaningful.
    """
    f = Finding(service="dns", confidence=8)
    byq = _by_question(replies)
    details: dict[str, Any] = {}

    # --- CHAOS TXT names
    chaos: dict[str, Any] = {}
    strings: dict[str, str] = {}
    bind_chaos_ns = False
    chaos_answer_classes: set[str] = set()
    for cname in CHAOS_NAMES:
        r = byq.get((cname + ".", "TXT", "CH"))
        if r is None:
            continue
        txts = [_txt_value(rr) for rr in r.answer if rr.rdtype == "TXT"]
        chaos_answer_classes.update(rr.rdclass for rr in r.answer)
        entry: dict[str, Any] = {"rcode": r.rcode, "flags": list(r.flags), "opt": r.edns}
        if txts:
            entry["txt"] = txts
            strings[cname] = txts[0]
        chaos[cname] = entry
        if any(rr.rdtype == "NS" and rr.rdclass == "CH" for rr in r.authority):
            bind_chaos_ns = True
    if chaos:
        details["chaos"] = chaos
    if chaos_answer_classes:
        details["chaos_answer_classes"] = sorted(chaos_answer_classes)

    nsid = next((r.nsid for r in replies if r.nsid), None)
    if nsid:
        details["nsid"] = _printable(nsid)
        f.add("EDNS NSID", details["nsid"])
    details["recursion_available"] = any("RA" in r.flags for r in replies)
    details["edns"] = any(r.edns for r in replies)
    ede = sorted({c for r in replies for c in r.ede})
    if ede:
        details["ede"] = ede

    root: dict[str, str] = {}
    for rdtype in ("SOA", "NS"):
        r = byq.get((".", rdtype, "IN"))
        if r is not None:
            root[rdtype] = r.rcode
    if root:
        details["root"] = root

    # --- zones: owners of SOA records in authoritative replies
    zones: list[str] = []
    builtin_zones: list[str] = []  # Unbound's RFC 6303 / RFC 6761 local zones: not the operator's
    for r in replies:
        if not r.aa:
            continue
        for rr in (*r.answer, *r.authority):
            if rr.rdtype == "SOA" and rr.rdclass == "IN":
                z = rr.name.rstrip(".") or "."
                into = builtin_zones if _UNBOUND_BUILTIN_SOA.match(rr.text) else zones
                if z not in into:
                    into.append(z)
    if zones:
        details["zones"] = zones
    if builtin_zones:
        details["builtin_local_zones"] = builtin_zones

    # --- AD: _ldap._tcp.dc._msdcs.<domain> SRV names the DCs
    ad_domain: str | None = None
    dcs: list[str] = []
    srv: dict[str, list[dict[str, Any]]] = {}
    for (qname, qtype, _qclass), r in byq.items():
        if qtype != "SRV" or r.rcode != "NOERROR":
            continue
        targets = _srv_targets(r)
        if not targets:
            continue
        srv[qname.rstrip(".")] = targets
        if qname.startswith("_ldap._tcp.dc._msdcs."):
            ad_domain = qname[len("_ldap._tcp.dc._msdcs.") :].rstrip(".")
            for t in targets:
                if t["target"] not in dcs:
                    dcs.append(t["target"])
    if srv:
        details["srv"] = srv
    if ad_domain:
        details["ad_domain"] = ad_domain
        details["domain_controllers"] = dcs
        f.add("SRV _ldap._tcp.dc._msdcs", f"{ad_domain}: {', '.join(dcs)}")
        f.host_facts["ad_domain"] = ad_domain
        f.host_facts["domain_controllers"] = dcs
    if zones:
        f.host_facts["dns_zones"] = [z for z in zones if not z.endswith(".arpa")]

    # --- product from version strings
    for cname in ("version.bind", "version.server"):
        text = strings.get(cname)
        if not text:
            continue
        named = match_version_string(text)
        if named is None:
            continue
        rule, version = named
        f.product, f.version, f.rule = rule.product, version, f"portproof:dns/{rule.id}"
        # a bare BIND version names no product itself: BIND's documented default ties it, a notch lower
        f.confidence = 9 if re.fullmatch(r"\d+\.\d+\.\d+", text.strip()) else rule.confidence
        f.add(f"{cname} CH TXT", text)
        up = _upstream_version(version) if version else None
        if up and up != version:
            details["upstream_version"] = up
        if rule.product == "Microsoft DNS" and version:
            windows = _server_windows(version)
            if windows:
                details["windows"] = windows
            build = re.search(r"\(([0-9A-Fa-f]{1,8})\)", text)
            if build:
                details["build"] = build[1]
                # the hex word: its high 16 bits repeat the build (0x1DB1 = 7601), so the low 16 bits
                # read as the file revision: "6.1.7601 (1DB15CD4)" is dns.exe 6.1.7601.23764
                word = int(build[1], 16)
                parts = version.split(".")
                if len(parts) == 3 and word >> 16 == int(parts[2]):
                    details["file_version"] = f"{version}.{word & 0xFFFF}"
        break
    for cname in ("version.bind", "version.server"):
        if strings.get(cname):
            # the whole string, always: the product version above keeps only the release
            details["version_string"] = strings[cname]
            if not any(e.source == f"{cname} CH TXT" for e in f.evidence):
                f.add(f"{cname} CH TXT", strings[cname])
            break

    # --- product from an operator's NSID convention (Google Public DNS answers "gpdns-<IATA code>")
    if not f.product and details.get("nsid"):
        for rule_id, pattern, product in _NSID_RULES:
            if pattern.fullmatch(details["nsid"]):
                f.product, f.confidence, f.rule = product, 9, f"portproof:dns/{rule_id}"
                details["product_from"] = "EDNS NSID naming convention"
                break

    # --- product from behaviour
    if not f.product:
        vb = chaos.get("version.bind")
        samba_tells: list[str] = []
        if vb and vb["rcode"] == "NXDOMAIN" and "AA" not in vb["flags"]:
            samba_tells.append("version.bind CH TXT: NXDOMAIN, not authoritative")
        if root.get("SOA") == "FORMERR" and root.get("NS") == "FORMERR":
            samba_tells.append("root SOA and NS: FORMERR")
        answered = [r for r in replies if r.rcode != "FORMERR"]
        if queries_had_edns and answered and not any(r.edns for r in answered):
            samba_tells.append("EDNS queries answered without an OPT record")
        if len(samba_tells) >= 2:
            f.product, f.rule = "Samba internal DNS", "portproof:dns/behaviour-samba-internal-dns"
            f.confidence = 8 if (len(samba_tells) == 3 and ad_domain) else 7
            for tell in samba_tells:
                f.add("behaviour", tell)
        elif bind_chaos_ns:
            f.product, f.confidence, f.rule = "ISC BIND", 7, "portproof:dns/behaviour-bind-chaos-ns-authority"
            f.add("behaviour", "CHAOS answers carry a CH NS authority record (BIND)")
        elif hidden := _hidden_version_product(byq, replies):
            f.product, f.confidence, tells, rule_id = hidden
            f.rule = f"portproof:dns/{rule_id}"
            for tell in tells:
                f.add("behaviour", tell)
        elif ad_domain and not strings:
            # No lab server: Windows DNS hides its version unless EnableVersionQuery is set, and
            # it is the usual DNS of an AD domain. Kept low: an inference, not a self-naming.
            f.product, f.confidence = "Microsoft DNS", 4
            f.rule = "portproof:dns/behaviour-ad-srv-without-chaos"
            details["product_inferred_from"] = "AD SRV records, no CHAOS strings, no Samba tells"
            f.add("behaviour", "AD SRV records without version strings or Samba's behaviour")

    # --- identity strings
    for cname in ("hostname.bind", "id.server"):
        if strings.get(cname):
            details.setdefault("server_name", strings[cname])
            if len(f.evidence) < 8:
                f.add(f"{cname} CH TXT", strings[cname])
    extra = []
    if details.get("windows"):
        extra.append(details["windows"])
    if ad_domain:
        extra.append(f"AD domain {ad_domain}")
    if details.get("server_name"):
        extra.append(f"name {details['server_name']}")
    if extra:
        f.extrainfo = "; ".join(extra)
    if not f.evidence and replies:
        r0 = replies[0]
        q = " ".join(r0.question) if r0.question else "(no question)"
        f.add("reply", f"{q}: {r0.rcode} {' '.join(r0.flags)}")
    f.details = details
    return f


