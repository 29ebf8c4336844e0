"""The http probe and scanner.ntlm against the real lab servers.

* nginx (Debian package) on 127.0.0.1:80 and :443 (lab certificate), through the engine;
* Apache httpd (Debian package, tests/lab/extra.d/apache.sh) on 127.0.0.5:80 and :443;
* Samba 4 AD DC on 127.0.0.1:389: an LDAP SASL bind (GSS-SPNEGO and NTLM) carrying our NTLMSSP
  NEGOTIATE returns a real CHALLENGE, read with scanner.ntlm over a plain blocking socket.

Expected product versions come from dpkg (the installed package), not from constants.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import time
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from scanner.ntlm import build_ldap_sasl_bind, frame_ldap_message, parse_ldap_bind_response
from scanner.registry import GROUP, Registry, load_registry
from scanner.results import ScanResult

APACHE_IP = "127.0.0.5"
#: the lab state directory (same default as tests/conftest.py)
LAB_STATE = Path(os.environ.get("LAB_STATE", "/tmp/portproof-lab"))


def _registry() -> Registry:
    reg = load_registry(eps=[EntryPoint(name="http", value="probes.http:HTTPProbe", group=GROUP)])
    assert not reg.errors, reg.errors
    return reg


def _scan(address: str, ports: str) -> dict[int, ScanResult]:
    from scanner.engine import scan_sync

    return {r.port: r for r in scan_sync([address], ports=ports, registry=_registry())}


def _upstream_version(package: str) -> str:
    """The upstream version of an installed Debian package: 1.22.1-9+deb12u11 -> 1.22.1."""
    out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    return out.split(":")[-1].split("-")[0]


@pytest.fixture(scope="module")
def nginx(lab: object) -> dict[int, ScanResult]:
    return _scan("127.0.0.1", "80,443")


@pytest.mark.lab
def test_nginx_80_named_with_version(nginx: dict[int, ScanResult]) -> None:
    r = nginx[80]
    assert r.state == "open" and r.service == "http" and r.verdict == "confirmed"
    assert r.product == "nginx" and r.version == _upstream_version("nginx")
    assert r.tls is None
    assert {"source": "Server", "value": f"nginx/{r.version}"} in [
        {"source": e.source, "value": e.value} for e in r.evidence
    ]


@pytest.mark.lab
def test_nginx_443_with_certificate(nginx: dict[int, ScanResult]) -> None:
    r = nginx[443]
    assert r.service == "http" and r.verdict == "confirmed"
    assert r.product == "nginx" and r.version == _upstream_version("nginx")
    assert r.tls is not None and r.tls.mode == "implicit" and r.tls.certificate is not None
    cert = r.tls.certificate
    assert "CN=mail.lab.example.test" in cert.subject and cert.self_signed
    assert "DNS:mail.lab.example.test" in cert.sans
    # the certificate the engine reports is the lab's own file
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    lab_cert = x509.load_pem_x509_certificate((LAB_STATE / "run" / "tls" / "lab.crt").read_bytes())
    assert cert.sha256 == lab_cert.fingerprint(hashes.SHA256()).hex()


@pytest.mark.lab
@pytest.mark.parametrize("port", [80, 443])
def test_nginx_owa_probed_and_absent(nginx: dict[int, ScanResult], port: int) -> None:
    details = nginx[port].details
    owa = details["owa"]
    assert owa["present"] is False and "/owa/" in owa["probed"]
    # the lab's nginx answers /owa/ with a 302 to /owa/auth/logon.aspx, which serves its plain page
    first = details["requests"]["/owa/"]
    assert first["status"] == 302 and first["location"].endswith("/owa/auth/logon.aspx")
    assert "location_off_target" not in first
    logon = details["requests"]["/owa/auth/logon.aspx"]
    assert logon["status"] == 200 and logon.get("title") == "lab" and "exchange" not in logon
    assert details["title"] == "lab" and "ntlm" not in details


def _apache_running() -> bool:
    pid_file = LAB_STATE / "run" / "pids" / "apache.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    return Path(f"/proc/{pid}").exists()


@pytest.fixture(scope="module")
def apache(lab: object) -> dict[int, ScanResult]:
    if not _apache_running():
        pytest.fail("Apache (tests/lab/extra.d/apache.sh) is not running: see the lab logs")
    return _scan(APACHE_IP, "80,443")


@pytest.mark.lab
@pytest.mark.parametrize("port", [80, 443])
def test_apache_named_with_version(apache: dict[int, ScanResult], port: int) -> None:
    r = apache[port]
    assert r.service == "http" and r.verdict == "confirmed"
    assert r.product == "Apache httpd" and r.version == _upstream_version("apache2")
    assert r.extrainfo is not None and "(Debian)" in r.extrainfo
    assert r.details["title"] == "lab apache"
    if port == 443:
        assert r.tls is not None and r.tls.certificate is not None
        assert "CN=mail.lab.example.test" in r.tls.certificate.subject
    else:
        assert r.tls is None


@pytest.mark.lab
def test_apache_redirect_off_target_not_followed_and_basic_auth(apache: dict[int, ScanResult]) -> None:
    requests = apache[80].details["requests"]
    owa = requests["/owa/"]
    assert owa["status"] == 302 and owa["location"] == "https://owa.elsewhere.example.test/owa/"
    assert owa["location_off_target"] is True
    assert requests["/ews/exchange.asmx"]["status"] == 401
    assert requests["/ews/exchange.asmx"]["auth"] == ["Basic"]
    assert requests["/rpc/"]["status"] == 404
    assert apache[80].details["owa"]["present"] is False


def _ldap_ntlm_bind(mechanism: str) -> bytes:
    """One SASL bind with our NEGOTIATE to Samba on 127.0.0.1:389; returns the framed response."""
    with socket.create_connection(("127.0.0.1", 389), timeout=5) as sock:
        sock.sendall(build_ldap_sasl_bind(1, mechanism))
        buf = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(buf) < 65536:
            n = frame_ldap_message(buf)
            if n is not None and len(buf) >= n:
                return buf[:n]
            chunk = sock.recv(4096)
            if not chunk:
                break
            buf += chunk
    raise AssertionError(f"no complete LDAP response ({len(buf)} bytes)")


@pytest.mark.lab
@pytest.mark.parametrize("mechanism", ["GSS-SPNEGO", "NTLM"])
def test_samba_ldap_ntlm_challenge(lab: object, mechanism: str) -> None:
    before = dt.datetime.now(dt.UTC)
    result = parse_ldap_bind_response(_ldap_ntlm_bind(mechanism))
    assert result.message_id == 1
    assert result.result_code == 14, result.diagnostic_message  # saslBindInProgress
    ch = result.challenge
    assert ch is not None, result.challenge_error
    assert ch.netbios_domain == "LAB" and ch.target_name == "LAB"
    assert ch.netbios_computer == "DC1"
    assert ch.dns_computer is not None and ch.dns_computer.lower() == "dc1.lab.example.test"
    assert ch.dns_domain is not None and ch.dns_domain.lower() == "lab.example.test"
    # Samba's fixed VERSION field, and its real clock
    assert ch.os_version == (6, 1, 0) and ch.looks_like_samba and ch.windows_version is None
    assert ch.timestamp is not None
    assert abs((ch.timestamp - before).total_seconds()) < 300
    facts = ch.as_dict()
    assert facts["netbios_computer"] == "DC1" and facts["looks_like_samba"] is True
