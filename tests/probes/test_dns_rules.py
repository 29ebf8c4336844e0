"""The dns probe's naming rules: every product claim names its rule, each rule has a real example,
and the strings operators put in place of a version name nothing.

Examples and where they were seen:

* lab: the lab's own servers answering ``version.bind`` (Debian 12 packages: BIND 9.18.49, dnsmasq
  2.90, Unbound 1.17.1, PowerDNS Authoritative 4.7.3, Knot DNS 3.2.6), read live when this file
  was written; NSD 4.6.1 run by hand (see tests/probes/test_dns.py);
* DiG banners in public bug reports: ``dig`` prints the version string of the BIND build it comes
  from, the very string that build's ``named`` answers (PowerDNS/pdns#1229: 9.8.4-rpz2+rl005.12-P1
  and 9.9.3-rpz2+rl.156.01-P2; TechnitiumSoftware/DnsServer#821: 9.18.19-1~deb12u1-Debian);
* vendor documentation: BIND's ARM (options ``version``), PowerDNS (``version-string``), CoreDNS's
  chaos plugin (``CoreDNS-<version>``), NSD's nsd.conf(5); PowerDNS/pdns#234 quotes PowerDNS 2.9.22;
* issue 13 of this project quotes Windows DNS with EnableVersionQuery: ``Microsoft DNS 6.1.7601
  (1DB15CD4)``.
"""

from __future__ import annotations

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset
import pytest

from probes.dns import (
    VERSION_RULES,
    DNSProbe,
    _server_windows,
    build_query,
    identify,
    match_version_string,
    parse_dns_reply,
    tcp_wrap,
)
from scanner import servicedb
from scanner.api import Transport
from scanner.testing import run_scripted
from tests.probes.test_dns import (
    BIND_UDP,
    DNSMASQ_UDP,
    KNOT_HIDDEN,
    NSD_HIDDEN,
    PDNS_HIDDEN,
    SAMBA_UDP,
    UNBOUND_HIDDEN,
)


def _version_reply(text: str, qname: str = "version.bind") -> bytes:
    """A ``<qname> CH TXT`` answer carrying ``text`` as one character-string (bytes kept as-is)."""
    query = dns.message.make_query(qname, "TXT", "CH", id=0x0BAD)
    resp = dns.message.make_response(query)
    resp.flags |= dns.flags.AA
    rdata = dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.CH, dns.rdatatype.TXT, [text.encode("latin-1")])
    rrset = dns.rrset.RRset(dns.name.from_text(qname), dns.rdataclass.CH, dns.rdatatype.TXT)
    rrset.add(rdata)
    resp.answer.append(rrset)
    return resp.to_wire()


# string, product, version, rule id, where it was seen
POSITIVES: list[tuple[str, str, str | None, str, str]] = [
    ("9.18.49-1~deb12u3-Debian", "ISC BIND", "9.18.49", "version-bind-bind9", "lab BIND (Debian 12)"),
    ("9.18.19-1~deb12u1-Debian", "ISC BIND", "9.18.19", "version-bind-bind9", "TechnitiumSoftware/DnsServer#821"),
    ("9.8.4-rpz2+rl005.12-P1", "ISC BIND", "9.8.4-P1", "version-bind-bind9", "PowerDNS/pdns#1229"),
    ("9.9.3-rpz2+rl.156.01-P2", "ISC BIND", "9.9.3-P2", "version-bind-bind9", "PowerDNS/pdns#1229"),
    ("9.11.4-P2-RedHat-9.11.4-26.P2.el7", "ISC BIND", "9.11.4-P2", "version-bind-bind9",
     "RHEL 7 bind 9.11.4-26.P2.el7 (Red Hat builds <version>-RedHat-<rpm version-release>)"),
    ("9.16.1-Ubuntu", "ISC BIND", "9.16.1", "version-bind-bind9", "Ubuntu 20.04 bind9 9.16.1"),
    ("8.2.2-P5", "ISC BIND", "8.2.2-P5", "version-bind-bind8", "ISC release BIND 8.2.2-P5 (1999)"),
    ("8.4.7-REL", "ISC BIND", "8.4.7", "version-bind-bind8", "ISC release BIND 8.4.7 (last BIND 8)"),
    ("4.9.11-REL", "ISC BIND", "4.9.11", "version-bind-bind4", "ISC release BIND 4.9.11 (last BIND 4)"),
    ("Microsoft DNS 6.1.7601 (1DB15CD4)", "Microsoft DNS", "6.1.7601", "version-bind-microsoft-dns", "issue 13"),
    ("dnsmasq-2.90", "dnsmasq", "2.90", "version-bind-dnsmasq", "lab dnsmasq (Debian 12)"),
    ("unbound 1.17.1", "Unbound", "1.17.1", "version-bind-unbound", "lab Unbound (Debian 12)"),
    ("PowerDNS Authoritative Server 4.7.3", "PowerDNS Authoritative Server", "4.7.3",
     "version-bind-powerdns-authoritative", "lab pdns-server (Debian 12)"),
    ("PowerDNS Recursor 4.8.2", "PowerDNS Recursor", "4.8.2", "version-bind-powerdns-recursor",
     "PowerDNS Recursor docs, version-string default"),
    ("Served by PowerDNS - https://www.powerdns.com/", "PowerDNS", None, "version-bind-powerdns-served-by",
     "PowerDNS docs, version-string=powerdns"),
    ("Served by POWERDNS 2.9.22\n$Id: packethandler.cc 1321 2008-12-06 19:44:36Z ahu $", "PowerDNS", "2.9.22",
     "version-bind-powerdns-served-by", "PowerDNS/pdns#234"),
    ("Knot DNS 3.2.6", "Knot DNS", "3.2.6", "version-bind-knot-dns", "lab knot (Debian 12)"),
    ("NSD 4.6.1", "NSD", "4.6.1", "version-bind-nsd", "NSD 4.6.1 run by hand; nsd.conf(5)"),
    ("CoreDNS-1.10.1", "CoreDNS", "1.10.1", "version-bind-coredns", "coredns.io/plugins/chaos default form"),
    ("gdnsd/3", "gdnsd", "3", "version-bind-gdnsd", "lab:gdnsd 3.8.1-1"),
    ("PowerDNS Recursor git-20140402-1151-cc08b5a (jenkins@autotest.powerdns.com built 20140402220844 "
     "root@autotest.powerdns.com)", "PowerDNS Recursor", None, "version-bind-powerdns-recursor-snapshot",
     "repo:longbai/dns-check:nameservers.json@fa748bf644025fc16c9d472fbbc1f5063525dcaf"),
    ("BIND-9", "ISC BIND", "9", "version-bind-bind-major",
     "repo:longbai/dns-check:nameservers.json@fa748bf644025fc16c9d472fbbc1f5063525dcaf"),
]

# what operators put in place of the version (and text that merely mentions a product): no product
NEGATIVES = [
    "none",
    "unknown",
    "[secured]",
    "Go away",
    "not available",
    "hidden",
    "secret",
    "none of your business",
    "1.0",
    "8.4.7",  # BIND 8 always says -REL/-P<n>: a bare number is no BIND 8 string
    "9.11",
    "9.9.9.9",
    "BIND",
    "Microsoft DNS",
    "dnsmasq",
    # PowerDNS/pdns#1229: an operator's message mentioning no product of ours
    "OpenNIC Tier2 DNS powered by hallowe.lt ~nw1de.fwd.hallowe.lt (ns1.nw.de.dns.opennic.glue)",
    "This server runs BIND 9.18",  # a product named in the middle of a sentence: not a self-naming
    "BIND-10",  # not a BIND major release
    "gdnsd",  # the name alone, without the version form
    "PowerDNS Recursor git",
]


@pytest.mark.parametrize(("text", "product", "version", "rule_id", "source"), POSITIVES)
def test_version_string_rules(text: str, product: str, version: str | None, rule_id: str, source: str) -> None:
    named = match_version_string(text)
    assert named is not None, source
    assert (named[0].product, named[1], named[0].id) == (product, version, rule_id)
    f = identify([parse_dns_reply(_version_reply(text))])
    assert (f.product, f.version, f.rule) == (product, version, f"portproof:dns/{rule_id}")
    assert f.details["version_string"] == text  # the whole string is kept beside the release
    assert any(e.source == "version.bind CH TXT" and e.value == text for e in f.evidence)


def test_every_version_rule_has_a_positive_example() -> None:
    covered = {row[3] for row in POSITIVES}
    assert covered == {rule.id for rule in VERSION_RULES}
    assert len({rule.id for rule in VERSION_RULES}) == len(VERSION_RULES)


@pytest.mark.parametrize("text", NEGATIVES)
def test_non_answers_name_no_product(text: str) -> None:
    assert match_version_string(text) is None
    f = identify([parse_dns_reply(_version_reply(text))])
    assert f.product is None and f.version is None and f.rule is None
    assert f.details["version_string"] == text


def test_version_server_is_read_when_version_bind_is_silent() -> None:
    f = identify([parse_dns_reply(_version_reply("unbound 1.17.1", "version.server"))])
    assert (f.product, f.rule) == ("Unbound", "portproof:dns/version-bind-unbound")
    assert f.details["version_string"] == "unbound 1.17.1"


def test_bare_bind_version_is_a_notch_below_a_self_naming() -> None:
    bare = identify([parse_dns_reply(_version_reply("9.7.3"))])
    named = identify([parse_dns_reply(_version_reply("9.16.1-Ubuntu"))])
    assert (bare.product, bare.version, bare.confidence) == ("ISC BIND", "9.7.3", 9)
    assert named.confidence == 10


def test_microsoft_dns_windows_release_and_file_version() -> None:
    f = identify([parse_dns_reply(_version_reply("Microsoft DNS 6.1.7601 (1DB15CD4)"))])
    assert (f.product, f.version) == ("Microsoft DNS", "6.1.7601")
    # the DNS Server role runs on server editions only: the client name of build 7601 is dropped
    assert f.details["windows"] == "Windows Server 2008 R2 SP1"
    assert f.extrainfo == "Windows Server 2008 R2 SP1"
    # 0x1DB1 = 7601 repeats the build; 0x5CD4 = 23764 is the file revision
    assert f.details["build"] == "1DB15CD4" and f.details["file_version"] == "6.1.7601.23764"



@pytest.mark.parametrize(
    ("version", "windows"),
    [("5.0.2195", "Windows 2000"), ("5.2.3790", "Windows Server 2003"), ("6.3.9600", "Windows Server 2012 R2"),
     ("10.0.17763", "Windows Server 2019"), ("10.0.20348", "Windows Server 2022"), ("10.0.99999", None), ("6.1", None)],
)
def test_microsoft_dns_build_to_windows_server(version: str, windows: str | None) -> None:
    # the table is scanner.ntlm's (one Windows build table for the project)
    assert _server_windows(version) == windows


@pytest.mark.parametrize(
    ("table", "product", "rule_id"),
    [
        ("BIND_UDP", "ISC BIND", "version-bind-bind9"),
        ("DNSMASQ_UDP", "dnsmasq", "version-bind-dnsmasq"),
        ("SAMBA_UDP", "Samba internal DNS", "behaviour-samba-internal-dns"),
        ("UNBOUND_HIDDEN", "Unbound", "behaviour-unbound-builtin-zone-soa"),
        ("PDNS_HIDDEN", "PowerDNS Authoritative Server", "behaviour-powerdns-version-servfail-aa"),
        ("KNOT_HIDDEN", "Knot DNS", "behaviour-knot-ede"),
        ("NSD_HIDDEN", "NSD", "behaviour-nsd-ede"),
    ],
)
def test_lab_replies_claims_name_their_rule(table: str, product: str, rule_id: str) -> None:
    """Replies recorded from real servers (tests/probes/test_dns.py): each claim cites its rule."""
    tables: dict[str, list[bytes]] = {
        "BIND_UDP": BIND_UDP, "DNSMASQ_UDP": DNSMASQ_UDP, "SAMBA_UDP": SAMBA_UDP, "UNBOUND_HIDDEN": UNBOUND_HIDDEN,
        "PDNS_HIDDEN": PDNS_HIDDEN, "KNOT_HIDDEN": KNOT_HIDDEN, "NSD_HIDDEN": NSD_HIDDEN,
    }
    f = identify([parse_dns_reply(m) for m in tables[table]])
    assert (f.product, f.rule) == (product, f"portproof:dns/{rule_id}")


def test_bind_hidden_version_names_the_behaviour_rule() -> None:
    vb = next(m for m in BIND_UDP if parse_dns_reply(m).question == ("version.bind.", "TXT", "CH"))
    msg = dns.message.from_wire(vb)
    msg.answer = [dns.rrset.from_text("version.bind.", 0, "CH", "TXT", '"none"')]
    f = identify([parse_dns_reply(msg.to_wire())])
    assert (f.product, f.version, f.rule) == ("ISC BIND", None, "portproof:dns/behaviour-bind-chaos-ns-authority")
    assert f.details["version_string"] == "none"


def test_no_claim_without_a_rule() -> None:
    """Whatever the replies, a product never comes without a rule (and a rule never without one)."""
    tables = [BIND_UDP, DNSMASQ_UDP, SAMBA_UDP, UNBOUND_HIDDEN, PDNS_HIDDEN, KNOT_HIDDEN, NSD_HIDDEN]
    texts = [row[0] for row in POSITIVES] + NEGATIVES
    findings = [identify([parse_dns_reply(m) for m in t]) for t in tables]
    findings += [identify([parse_dns_reply(_version_reply(t))]) for t in texts]
    for f in findings:
        assert (f.product is None) == (f.rule is None), f
        assert f.version is None or f.product is not None


# --------------------------------------------------------------------------- tags for the database


def _drive(transport: Transport, answer: dict[str, str]) -> tuple[list[str], dict[str, bytes]]:
    """Run the live dialogue against a dnspython responder (``run_scripted``: the one dialogue
    runner); returns the questions asked and the replies kept for the service database."""
    questions: list[str] = []

    def respond(sent: bytes) -> bytes:
        query = dns.message.from_wire(sent if transport == "udp" else sent[2:])
        question = query.question[0].name.to_text()
        questions.append(question)
        resp = dns.message.make_response(query)
        text = answer.get(question)
        if text is not None:
            resp.answer.append(dns.rrset.from_text(question, 0, "CH", "TXT", f'"{text}"'))
        else:
            resp.set_rcode(dns.rcode.REFUSED)
        return resp.to_wire() if transport == "udp" else tcp_wrap(resp.to_wire())

    run = run_scripted(DNSProbe(), respond, port=53, transport=transport, address="192.0.2.53", seed=1)
    assert run.ctx is not None
    return questions, dict(run.ctx.responses)


@pytest.mark.parametrize(("transport", "tag"), [("udp", "DNSVersionBindReq"), ("tcp", "DNSVersionBindReqTCP")])
def test_version_bind_reply_is_kept_under_nmaps_probe_name(transport: Transport, tag: str) -> None:
    questions, responses = _drive(transport, {"version.bind.": "9.18.49-1~deb12u3-Debian"})
    assert "version.bind." in questions
    assert list(responses) == [tag]  # no other reply is kept
    wire = responses[tag] if transport == "udp" else responses[tag][2:]
    msg = dns.message.from_wire(wire)
    assert msg.edns < 0  # the OPT record is dropped: the database's lines expect nmap's EDNS-less reply
    assert msg.answer[0][0].strings == (b"9.18.49-1~deb12u3-Debian",)


@pytest.mark.parametrize(("transport", "tag"), [("udp", "DNSVersionBindReq"), ("tcp", "DNSVersionBindReqTCP")])
def test_the_database_matches_the_kept_reply(transport: Transport, tag: str) -> None:
    """The installed database (Debian's nmap-common, required) names BIND from the reply we keep,
    over UDP and (through the TCP probe's fallback) over TCP."""
    db = servicedb.default_db()
    assert db is not None, servicedb.last_error()
    _questions, responses = _drive(transport, {"version.bind.": "9.18.49-1~deb12u3-Debian"})
    m = db.match(tag, responses[tag])
    assert m is not None and m.product == "ISC BIND" and (m.version or "").startswith("9.18.49"), m


def test_version_bind_query_against_nmaps_probe() -> None:
    """Same question as nmap's DNSVersionBindReq; our header differs (RD clear, one OPT record)."""
    db = servicedb.default_db()
    assert db is not None, servicedb.last_error()
    udp, tcp_probe = db.probe("UDP:DNSVersionBindReq"), db.probe("TCP:DNSVersionBindReqTCP")
    assert udp is not None and tcp_probe is not None
    theirs, tcp = bytes(udp.payload), bytes(tcp_probe.payload)
    ours = build_query("version.bind", "TXT", "CH", qid=int.from_bytes(theirs[:2], "big"))
    assert ours[12 : len(theirs)] == theirs[12:]  # the question section, byte for byte
    assert theirs[2:4] == b"\x01\x00" and ours[2:4] == b"\x00\x00"  # nmap sets RD, we never ask to recurse
    assert theirs[10:12] == b"\x00\x00" and ours[10:12] == b"\x00\x01"  # our EDNS0 OPT (payload 1232)
    assert tcp[2:] == theirs and tcp[:2] == len(theirs).to_bytes(2, "big")
