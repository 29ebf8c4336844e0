"""Replay of the public reference captures (tests/data/pcaps-public) through the real probes.

Each row is an endpoint of MANIFEST.tsv with the protocol and product the manifest names; the
replay must find exactly that. The captures ship with the tests: a missing one is a failure, and
so is a probe that does not import.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from scanner.api import Probe
from scanner.replay import replay_paths
from scanner.results import ScanResult

CORPUS = Path(__file__).resolve().parents[1] / "data" / "pcaps-public"  # shipped with the tests (MANIFEST.tsv)


def _probes() -> list[Probe]:
    """The built-in probes the corpus needs; one that fails to import fails the tests (no skip)."""
    out: list[Probe] = []
    for mod, cls in [
        ("smtp", "SMTPProbe"),
        ("imap", "IMAPProbe"),
        ("pop3", "POP3Probe"),
        ("nntp", "NNTPProbe"),
        ("http", "HTTPProbe"),
        ("ldap", "LDAPProbe"),
        ("dns", "DNSProbe"),
        ("msrpc", "MSRPCProbe"),
        ("tsap", "TSAPProbe"),
    ]:
        out.append(getattr(importlib.import_module(f"probes.{mod}"), cls)())
    return out


# file, server address, port, transport, service, product (None: the bytes name none)
CASES = [
    ("smtp-exchange-cern-multiaddr.pcap", "188.184.36.24", 25, "tcp", "smtp", "Microsoft Exchange Server"),
    ("smtp-exim-4.94.2-loopback-prdr.pcap", "127.0.0.1", 25, "tcp", "smtp", "Exim"),
    ("smtp-exim-4.94.115-bdat-chunking.pcap", "217.146.107.83", 25, "tcp", "smtp", "Exim"),
    ("smtp-exim-4.93-on-465-plaintext-vs-tls-client.pcapng", "21.65.95.132", 465, "tcp", "smtp", "Exim"),
    ("smtp-sendmail-8.8.7-darpa1999.pcap", "172.16.114.207", 25, "tcp", "smtp", "Sendmail"),
    ("smtp-emailrelay-2.1a.pcap", "172.16.92.2", 25, "tcp", "smtp", "E-MailRelay"),
    ("smtp-google-gsmtp-starttls.pcap", "74.125.142.26", 25, "tcp", "smtp", "Google gsmtp"),
    # the greeting's second line says "AOL and its affiliated companies" (the manifest: AOL MTA)
    ("smtp-aol-587-submission.pcap", "64.12.168.40", 587, "tcp", "smtp", "AOL Mail"),
    ("pop3-cmailserver-5.2.pcap", "10.0.1.120", 110, "tcp", "pop3", "CMailServer"),
    ("pop3-lavabit-lavad-4.3.0-stls.pcap", "72.249.41.52", 110, "tcp", "pop3", "lavad"),
    ("imap-exchange-5.5.2650.23.pcap", "131.151.37.122", 143, "tcp", "imap", "Microsoft Exchange Server"),
    ("imap-unidentified-server-version-4.9.04.012.pcap", "10.40.3.2", 143, "tcp", "imap", None),
    ("imaps-993-ntop-letsencrypt.pcapng", "167.99.215.164", 993, "tcp", "imap", None),
    ("nntp-leafnode-1.11.7rc1.pcap", "192.168.190.5", 119, "tcp", "nntp", "Leafnode"),
    ("http-apache-2.4.3-fedora-vlan0.pcap", "192.150.187.43", 80, "tcp", "http", "Apache httpd"),
    ("http-apache-2.4.3-fedora-nosyn.pcap", "192.150.187.43", 80, "tcp", "http", "Apache httpd"),
    ("https-tls13-cloudflare-ipv6.pcap", "2400:cb00:2048:1::6813:c266", 443, "tcp", "http", None),
    # foreign clients (ctx.replay): their commands are not ours, the greeting still decides
    ("smtp-multi-sendmail-communigate-yahoo-postfix465.pcap", "219.94.162.217", 25, "tcp", "smtp", "Sendmail"),
    ("smtp-multi-sendmail-communigate-yahoo-postfix465.pcap", "104.131.33.237", 465, "tcp", "smtp", "Postfix"),
    ("pop3-1and1-mailcom-mieueus-large.pcap", "74.208.5.11", 110, "tcp", "pop3", "1&1 / United Internet mail platform"),
    # other clients' DCE/RPC conversations, midstream; the NTLMSSP CHALLENGE's build names Windows
    ("msrpc-epm-win2016-map-svcctl-midstream.pcap", "172.16.66.36", 135, "tcp", "msrpc", None),
    ("msrpc-epm-win2016-map-svcctl-midstream.pcap", "172.16.66.36", 49683, "tcp", "msrpc", "Microsoft Windows"),
    ("msrpc-135-dcom-isystemactivator-kerberos.pcapng", "10.10.10.100", 135, "tcp", "msrpc", None),
    ("multi-win10-epm-psexec-msdns-kerberos.pcap", "172.18.39.6", 135, "tcp", "msrpc", None),
    ("multi-win10-epm-psexec-msdns-kerberos.pcap", "172.18.39.6", 49726, "tcp", "msrpc", None),
    # CLDAP netlogon ping (AD "LDAP ping"): domain and DC named, the product is not
    ("cldap-samba4-ad-dc-netlogon.pcap", "192.168.122.3", 389, "udp", "ldap", None),
    ("dns-google-nsid-gpdns-ipv6-ipv4.pcapng", "8.8.4.4", 53, "udp", "dns", "Google Public DNS"),
    ("dns-google-public-dns-vlan11.pcap", "8.8.8.8", 53, "udp", "dns", None),  # no NSID: nothing names it
    # another client's S7 conversation, midstream from the COTP CR: S7comm, but no SZL that names a module
    ("s7comm-siemens-s7-classic-szl.pcap", "192.168.1.40", 102, "tcp", "tsap", None),
]


@pytest.fixture(scope="module")
def probes() -> list[Probe]:
    if not (CORPUS / "MANIFEST.tsv").is_file():
        pytest.fail(f"public corpus {CORPUS} is missing (the test data ships with the tests)")
    return _probes()


@pytest.mark.parametrize(("name", "addr", "port", "transport", "service", "product"), CASES)
def test_corpus_endpoint(
    probes: list[Probe], name: str, addr: str, port: int, transport: str, service: str, product: str | None
) -> None:
    assert any(service in p.services for p in probes), f"no probe for {service}"
    report = replay_paths([str(CORPUS / name)], probes)
    assert report.errors == []
    found: dict[tuple[str, int, str], ScanResult] = {(r.address, r.port, r.transport): r for r in report.results}
    res = found[(addr, port, transport)]
    assert res.verdict == "identified" and res.service == service
    assert res.product == product
    assert res.source is not None and res.source.file.endswith(name) and res.source.packets > 0


def test_tls13_and_tls12_facts(probes: list[Probe]) -> None:
    report = replay_paths([str(CORPUS / "https-tls13-cloudflare-ipv6.pcap")], probes)
    (res,) = report.results
    assert res.tls is not None and res.tls.version is not None and res.tls.version.startswith("TLSv1.3")
    assert res.tls.certificate is None and "encrypted" in (res.reason or "")
    report = replay_paths([str(CORPUS / "imaps-993-ntop-letsencrypt.pcapng")], probes)
    certs = {r.address: r.tls.certificate for r in report.results if r.tls is not None}
    assert certs["167.99.215.164"] is not None and certs["167.99.215.164"].subject == "CN=mail.ntop.org"


def test_starttls_capture_reports_both_sides(probes: list[Probe]) -> None:
    report = replay_paths([str(CORPUS / "imap-1and1-gmx-starttls.pcap")], probes)
    (res,) = report.results
    assert res.service == "imap" and res.tls is not None and res.tls.mode == "starttls"
    assert res.tls.certificate is not None and "imap.gmx.net" in res.tls.certificate.subject


def test_whole_corpus_reads_and_counts(probes: list[Probe]) -> None:
    report = replay_paths([str(CORPUS)], probes)
    assert report.files >= 40
    assert [e.record for e in report.errors] == [19]  # only the deliberately damaged file
    assert report.unknown["ethertype 0x0806"] > 0  # ARP is counted, not fatal
    assert report.decoded > 0.9 * report.packets


def test_foreign_conversation_details(probes: list[Probe]) -> None:
    """What the replay learns from other clients' conversations, beyond the service."""
    found = {(r.address, r.port): r for r in replay_paths([str(CORPUS / "msrpc-epm-win2016-map-svcctl-midstream.pcap")],
                                                         probes).results}
    epm = found[("172.16.66.36", 135)]
    # the ept_map answer (NDR64) maps svcctl to the very port the second connection used
    assert [(e["name"], e["endpoint"]) for e in epm.details["endpoints"]] == [("svcctl", "49683")]
    svc = found[("172.16.66.36", 49683)]
    assert svc.version == "10.0.14393" and svc.details["ntlm"]["netbios_computer"] == "01566S-WIN16-IR"
    (cldap,) = replay_paths([str(CORPUS / "cldap-samba4-ad-dc-netlogon.pcap")], probes).results
    nl = cldap.details["cldap_netlogon"]
    assert nl["dns_domain"] == "s4.howto.abartlet.net" and nl["netbios_computer"] == "OBED"
    assert "TIMESERV" not in nl["flag_names"] and {"PDC", "GC", "KDC"} <= set(nl["flag_names"])
    (s7,) = replay_paths([str(CORPUS / "s7comm-siemens-s7-classic-szl.pcap")], probes).results
    assert s7.details["upper_layer"] == "s7comm" and s7.details["s7_setup"]["pdu_size"] == 240
    assert "module" not in s7.details  # 0x0132/0x0013/0x0131 answers are never read as 0x0011/0x001C


def test_ftp_greeting_is_not_kept_as_smtp(probes: list[Probe]) -> None:
    # "220 ... FTP server ready": SMTP's match() accepts a 220 line, but a replay keeps the greeting
    # against later replies only when it names SMTP itself
    report = replay_paths([str(CORPUS / "multi-apache-2.2.17-ubuntu-ftp-ssh-dns.pcap")], probes)
    ftp = next(r for r in report.results if r.port == 21)
    # none of our probes claims it; the service database names FTP (a softmatch: no product)
    assert ftp.service == "ftp" and ftp.probe == "servicedb" and ftp.confidence <= 3, ftp
    assert (ftp.rule or "").startswith("nmap-service-probes:")
