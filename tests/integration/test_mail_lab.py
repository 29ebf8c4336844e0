"""The mail and news probes against the real lab servers (Postfix, Dovecot, INN) on loopback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from scanner.engine import scan_sync
from scanner.results import ScanResult
from tests.conftest import Lab

MAIL_PORTS = "25,465,110,995,143,993,119,563,522,691"


@pytest.fixture(scope="module")
def mail_results(lab: Lab) -> dict[int, ScanResult]:
    results = scan_sync([lab.ip1], MAIL_PORTS)
    return {r.port: r for r in results}


@pytest.mark.parametrize(
    ("port", "service", "product", "version", "tls_mode"),
    [
        (25, "smtp", "Postfix", None, "starttls"),
        (465, "smtp", "Postfix", None, "implicit"),
        (110, "pop3", "Dovecot", None, "starttls"),
        (995, "pop3", "Dovecot", None, "implicit"),
        (143, "imap", "Dovecot", None, "starttls"),
        (993, "imap", "Dovecot", None, "implicit"),
        (119, "nntp", "InterNetNews (INN)", "2.7.1", "starttls"),
        (563, "nntp", "InterNetNews (INN)", "2.7.1", "implicit"),
    ],
)
def test_mail_ports_confirmed(
    mail_results: dict[int, ScanResult], port: int, service: str, product: str, version: str | None, tls_mode: str
) -> None:
    r = mail_results[port]
    assert (r.state, r.service, r.product, r.version) == ("open", service, product, version)
    assert r.verdict == "confirmed", r.reason
    assert r.tls is not None and r.tls.mode == tls_mode
    assert r.tls.version and r.tls.version.startswith("TLSv1.")
    cert = r.tls.certificate
    assert cert is not None and "mail.lab.example.test" in cert.subject and cert.self_signed
    assert "DNS:mail.lab.example.test" in cert.sans
    assert r.evidence and r.confidence >= 8


def test_postfix_details(mail_results: dict[int, ScanResult]) -> None:
    r = mail_results[25]
    assert r.details["banner_host"] == "mail.lab.example.test"
    assert "STARTTLS" in r.details["extensions"] and "STARTTLS" not in r.details["extensions_tls"]
    assert r.extrainfo == "Debian/GNU"


def test_dovecot_capabilities_change_inside_tls(mail_results: dict[int, ScanResult]) -> None:
    r = mail_results[143]
    assert "STARTTLS" in r.details["capabilities"]
    assert r.details["id"]["name"] == "Dovecot"


def test_unserved_exchange_ports_closed(mail_results: dict[int, ScanResult]) -> None:
    for port in (522, 691):
        r = mail_results[port]
        assert (r.state, r.verdict) == ("closed", "closed")
        assert r.attempts[0].status == "connection-refused"


def test_smtp_on_the_wrong_port_is_still_smtp(lab: Lab) -> None:
    """Postfix answers on 25; scanned as if it were POP3's port, it is reported as SMTP (unexpected)."""
    from scanner.profile import PortEntry, Profile

    profile = Profile("odd", "", (PortEntry(25, "tcp", "pop3", False, "pop3", "pop3 expected here"),))
    (r,) = scan_sync([lab.ip1], "25", profile=profile)
    assert (r.service, r.product, r.verdict) == ("smtp", "Postfix", "unexpected")


def test_cli_jsonl_one_record_per_profile_port(lab: Lab) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "scanner.cli", lab.ip1, "-o", "jsonl", "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    from scanner.profile import load_profile

    expected = {(e.port, e.transport) for e in load_profile().entries}
    assert {(r["port"], r["transport"]) for r in records} == expected
    assert len(records) == len(expected)
    by_port = {(r["port"], r["transport"]): r for r in records}
    for port in (25, 465, 110, 995, 143, 993, 119, 563):
        assert by_port[(port, "tcp")]["verdict"] == "confirmed"
    for field in ("target", "address", "port", "transport", "state", "service", "tls", "product", "version",
                  "expected", "verdict", "confidence", "evidence", "details", "attempts"):
        assert field in records[0]


def test_cli_table_and_xml(lab: Lab, tmp_path: object) -> None:
    import xml.etree.ElementTree as ET
    from pathlib import Path

    xml_path = Path(str(tmp_path)) / "scan.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "scanner.cli", lab.ip1, "-p", "25,993,522", "-oX", str(xml_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Postfix" in proc.stdout and "confirmed" in proc.stdout and "closed" in proc.stdout
    root = ET.parse(xml_path).getroot()
    ports = {p.get("portid"): p for p in root.iter("port")}
    svc = ports["993"].find("service")
    assert svc is not None and svc.get("name") == "imap" and svc.get("tunnel") == "ssl"
    assert svc.get("product") == "Dovecot" and svc.get("method") == "probed"
    state = ports["522"].find("state")
    assert state is not None and state.get("state") == "closed"
