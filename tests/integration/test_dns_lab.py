"""The dns probe against the lab's real DNS servers, through the engine (``scan_sync``).

* 127.0.0.1:53 Samba 4.17 AD DC internal DNS (no forwarder), udp and tcp;
* 127.0.0.2:53 BIND 9.18 (authoritative only, no recursion);
* 127.0.0.3:53 dnsmasq (tests/lab/extra.d/dns3.sh: local-only, no upstream);
* a closed UDP port, and small fake servers (threads on 127.0.0.1, ephemeral ports) for spoofed
  and malformed replies, which no real server sends on purpose.
"""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint

import dns.message
import dns.rcode
import dns.rrset
import pytest

from scanner.engine import scan_sync
from scanner.registry import Registry, load_registry
from scanner.results import ScanResult

pytestmark = pytest.mark.lab

GROUP = "portproof.probes"
IP3 = "127.0.0.3"


@pytest.fixture(scope="module")
def registry() -> Registry:
    """The dns probe (and ldap, whose AD domain the dns probe uses), loaded like entry points."""
    return load_registry(
        eps=[
            EntryPoint("dns", "probes.dns:DNSProbe", GROUP),
            EntryPoint("ldap", "probes.ldap:LDAPProbe", GROUP),
        ],
        strict=True,
    )


def _by(results: list[ScanResult], port: int, transport: str) -> ScanResult:
    return next(r for r in results if r.port == port and r.transport == transport)


def _tool_version(cmd: list[str], pattern: str) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
    m = re.search(pattern, out)
    assert m, f"{cmd} printed {out!r}"
    return m[1]


def test_samba_dns_with_ad_domain_and_dc(lab: object, registry: Registry) -> None:
    # per_host=1: LDAP on 389 finishes before DNS starts, so its AD domain reaches the dns probe
    results = scan_sync(["127.0.0.1"], "389,T:53,U:53", registry=registry, per_host=1)
    for transport in ("udp", "tcp"):
        r = _by(results, 53, transport)
        assert r.state == "open" and r.service == "dns" and r.verdict == "confirmed", r
        assert r.product == "Samba internal DNS"
        assert r.details["ad_domain"] == "lab.example.test"
        assert r.details["domain_controllers"] == ["dc1.lab.example.test"]
        assert r.details["srv"]["_ldap._tcp.dc._msdcs.lab.example.test"][0]["port"] == 389
        assert r.details["recursion_available"] is False
        assert r.confidence == 8


def test_samba_dns_alone_by_behaviour(lab: object, registry: Registry) -> None:
    results = scan_sync(["127.0.0.1"], "U:53", registry=registry)
    r = _by(results, 53, "udp")
    assert r.product == "Samba internal DNS" and r.confidence == 7
    assert r.details["root"] == {"SOA": "FORMERR", "NS": "FORMERR"}
    assert r.details["chaos"]["version.bind"]["rcode"] == "NXDOMAIN"


def test_bind_with_version(lab: object, registry: Registry) -> None:
    version = _tool_version(["named", "-v"], r"BIND (\S+)")
    results = scan_sync(["127.0.0.2"], "T:53,U:53", registry=registry)
    for transport in ("udp", "tcp"):
        r = _by(results, 53, transport)
        assert r.service == "dns" and r.verdict == "confirmed", r
        assert (r.product, r.version) == ("ISC BIND", version)
        assert r.details["server_name"] == "ns1.lab.example.test"
        assert r.details["zones"] == ["lab.example.test"]
        assert r.details["recursion_available"] is False
        assert "ad_domain" not in r.details


def test_third_server_dnsmasq_by_name(lab: object, registry: Registry) -> None:
    with socket.create_connection((IP3, 53), timeout=2):
        pass  # fails clearly when tests/lab/extra.d/dns3.sh did not start dnsmasq
    version = _tool_version(["dnsmasq", "--version"], r"Dnsmasq version (\S+)")
    results = scan_sync([IP3], "T:53,U:53", registry=registry)
    for transport in ("udp", "tcp"):
        r = _by(results, 53, transport)
        assert r.service == "dns" and r.verdict == "confirmed", r
        assert (r.product, r.version) == ("dnsmasq", version)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kernel_sends_port_unreachable(port: int) -> bool:
    """Control: does a plain connected UDP socket get ECONNREFUSED from ``port`` within 1 s?"""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        s.connect(("127.0.0.1", port))
        s.send(b"\0" * 12)
        try:
            s.recv(512)
        except ConnectionRefusedError:
            return True
        except TimeoutError:
            return False
    return False


def test_closed_udp_port_is_closed_fast(lab: object, registry: Registry) -> None:
    port = _free_udp_port()  # bound then released: nothing listens there now
    t0 = time.monotonic()
    results = scan_sync(["127.0.0.1"], f"U:{port}", registry=registry, read_timeout=3.0)
    elapsed = time.monotonic() - t0
    r = _by(results, port, "udp")
    if r.state != "closed" and not _kernel_sends_port_unreachable(port):
        # the kernel's global ICMP rate limit (icmp_msgs_per_sec) is shared by every process:
        # another UDP sweep on this machine can exhaust it; then no scanner can see "closed"
        pytest.skip("the kernel sent no ICMP port-unreachable to a plain socket either")
    assert r.state == "closed" and r.verdict == "closed", r
    assert elapsed < 1.0


# ------------------------------------------------------------------- hostile fake servers


def _udp_server(answer: Callable[[bytes], list[bytes]]) -> Iterator[int]:
    """A UDP server thread on 127.0.0.1 that sends ``answer(query)`` datagrams per query."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        deadline = time.monotonic() + 60  # bounded even if the test hangs
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                data, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            for out in answer(data)[:8]:
                sock.sendto(out, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(sock.getsockname()[1])
    finally:
        stop.set()
        thread.join(2)
        sock.close()


def _honest(query: bytes) -> bytes:
    q = dns.message.from_wire(query)
    resp = dns.message.make_response(q)
    question = q.question[0]
    if question.name.to_text() == "version.bind.":
        resp.answer.append(dns.rrset.from_text(question.name, 0, "CH", "TXT", '"fake-dns 1.0"'))
    else:
        resp.set_rcode(dns.rcode.REFUSED)
    return resp.to_wire()


def _spoof(query: bytes) -> list[bytes]:
    """First a reply with the wrong id claiming BIND, then the real (honest) reply."""
    q = dns.message.from_wire(query)
    forged = dns.message.make_response(q)
    forged.id = (q.id + 1) & 0xFFFF
    forged.answer.append(dns.rrset.from_text("version.bind.", 0, "CH", "TXT", '"9.99.0-spoofed"'))
    return [forged.to_wire(), _honest(query)]


@pytest.fixture
def spoofing_server() -> Iterator[int]:
    yield from _udp_server(_spoof)


@pytest.fixture
def wrong_id_server() -> Iterator[int]:
    def answer(query: bytes) -> list[bytes]:
        bad = _honest(query)
        return [bytes([bad[0] ^ 0xFF]) + bad[1:]]

    yield from _udp_server(answer)


@pytest.fixture
def looping_server() -> Iterator[int]:
    def answer(query: bytes) -> list[bytes]:
        # right id, QR set, one question whose name points at itself: a compression loop
        return [query[:2] + b"\x81\x80\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x06\x00\x01"]

    yield from _udp_server(answer)


def test_spoofed_replies_are_ignored(lab: object, registry: Registry, spoofing_server: int) -> None:
    results = scan_sync(["127.0.0.1"], f"U:{spoofing_server}", registry=registry, probes=("dns",))
    r = _by(results, spoofing_server, "udp")
    assert r.service == "dns" and r.product is None, r
    assert r.details["version_string"] == "fake-dns 1.0"
    assert "9.99" not in str(r.details.get("chaos")) and r.version is None
    assert any("ignored reply id" in x for x in r.details["rejected"])


@pytest.mark.parametrize("server", ["wrong_id_server", "looping_server"])
def test_only_bad_replies_are_not_dns(
    lab: object, registry: Registry, server: str, request: pytest.FixtureRequest
) -> None:
    port = request.getfixturevalue(server)
    t0 = time.monotonic()
    # (read_timeout: the engine waits that long for each datagram; the probe sends twice)
    results = scan_sync(["127.0.0.1"], f"U:{port}", registry=registry, probes=("dns",), read_timeout=1.0)
    r = _by(results, port, "udp")
    assert r.service is None and r.verdict != "confirmed", r
    assert [a.status for a in r.attempts] == ["no-match"]
    assert r.state == "open"  # something answered, just not DNS that we can trust
    assert time.monotonic() - t0 < 5
