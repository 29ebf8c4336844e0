"""The dns probe against the lab's real DNS servers, through the engine (``scan_sync``).

* 127.0.0.1:53 Samba 4.17 AD DC internal DNS (no forwarder), udp and tcp;
* 127.0.0.2:53 BIND 9.18 (authoritative only, no recursion);
* 127.0.0.3:53 dnsmasq (tests/lab/extra.d/dns3.sh: local-only, no upstream);
* 127.0.0.6:53 Unbound, 127.0.0.7:53 PowerDNS Authoritative (bind backend), 127.0.0.8:53 Knot DNS
  (tests/lab/extra.d/unbound.sh, pdns.sh, knot.sh: authoritative/local-only, no recursion);
* the same three binaries with their version hidden, started here on a free port of their address
  (private configs in a temporary directory, stopped by PID at the end of the module);
* a closed UDP port, and small fake servers (threads on 127.0.0.1, ephemeral ports) for spoofed
  and malformed replies, which no real server sends on purpose.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import BinaryIO

import dns.flags
import dns.message
import dns.query
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
        assert (r.product, r.version) == ("ISC BIND", version.split("-")[0])
        assert r.details["version_string"] == version
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


# ------------------------------------------------------------ Unbound, PowerDNS, Knot (extra.d)

#: address, product, command printing the installed version, its pattern, zone, server name
EXTRA_SERVERS = [
    ("127.0.0.6", "Unbound", ["unbound", "-V"], r"Version (\S+)", "unbound.example.test", "ns6.unbound.example.test"),
    (
        "127.0.0.7",
        "PowerDNS Authoritative Server",
        ["pdns_server", "--version"],
        r"PowerDNS Authoritative Server (\S+)",
        "pdns.example.test",
        "ns7.pdns.example.test",
    ),
    ("127.0.0.8", "Knot DNS", ["knotd", "-V"], r"version (\S+)", "knot.example.test", "ns8.knot.example.test"),
]


def _tool_output_version(cmd: list[str], pattern: str) -> str:
    """Like _tool_version, but reads stdout and stderr (pdns_server --version logs to stderr)."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    m = re.search(pattern, proc.stdout + proc.stderr)
    assert m, f"{cmd} printed {proc.stdout!r} {proc.stderr!r}"
    return m[1]


@pytest.mark.parametrize("ip, product, cmd, pattern, zone, server_name", EXTRA_SERVERS)
def test_extra_servers_by_version_string(
    lab: object, registry: Registry, ip: str, product: str, cmd: list[str], pattern: str, zone: str, server_name: str
) -> None:
    with socket.create_connection((ip, 53), timeout=2):
        pass  # fails clearly when the extra.d script did not start the server
    version = _tool_output_version(cmd, pattern)
    results = scan_sync([ip], "T:53,U:53", registry=registry)
    for transport in ("udp", "tcp"):
        r = _by(results, 53, transport)
        assert r.state == "open" and r.service == "dns" and r.verdict == "confirmed", r
        assert (r.product, r.version, r.confidence) == (product, version, 10)
        assert r.details["server_name"] == server_name  # id.server (and hostname.bind / NSID)
        assert r.details["zones"] == [zone]  # found through the server name, answered with AA
        assert "ad_domain" not in r.details


@pytest.mark.parametrize("ip", [s[0] for s in EXTRA_SERVERS])
def test_extra_servers_never_recurse(lab: object, ip: str) -> None:
    # RD set, a name outside every local zone: each answers REFUSED at once (no upstream wait)
    q = dns.message.make_query("www.example.com.", "A")
    assert q.flags & dns.flags.RD
    t0 = time.monotonic()
    for resp in (dns.query.udp(q, ip, timeout=2), dns.query.tcp(q, ip, timeout=2)):
        assert resp.rcode() == dns.rcode.REFUSED and not resp.answer
    assert time.monotonic() - t0 < 2


def _free_port(ip: str) -> int:
    """A port free for both UDP and TCP on ``ip`` (bound, then released)."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((ip, 0))
            port = int(u.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind((ip, port))
                except OSError:
                    continue
        return port
    raise RuntimeError(f"no free port on {ip}")


def _hidden_configs(d: Path, port: int) -> dict[str, tuple[str, int, list[str]]]:
    """Configs of the three servers with version (and identity) hidden: name -> (ip, port, argv)."""
    (d / "knot" / "db").mkdir(parents=True)
    (d / "pdns").mkdir()
    (d / "unbound").mkdir()
    (d / "unbound" / "unbound.conf").write_text(
        f"""server:
    interface: 127.0.0.6
    port: {port}
    do-ip6: no
    so-reuseport: no
    num-threads: 1
    username: ""
    chroot: ""
    directory: "{d}/unbound"
    use-syslog: no
    logfile: ""
    access-control: 0.0.0.0/0 refuse
    access-control: 127.0.0.0/8 allow
    module-config: "iterator"
    do-not-query-localhost: yes
    do-not-query-address: 0.0.0.0/0
    do-not-query-address: ::/0
    outgoing-interface: 127.0.0.6
    hide-version: yes
    hide-identity: yes
    local-zone: "." refuse
    # no built-in 127.in-addr.arpa: the PTR of the target gets REFUSED, so the probe must ask
    # its special-use name (invalid.) to see a built-in zone
    local-zone: "127.in-addr.arpa." nodefault
    local-zone: "hidden.example.test." static
    local-data: "hidden.example.test. 60 IN SOA ns.hidden.example.test. h.hidden.example.test. 1 60 60 60 60"
remote-control:
    control-enable: no
"""
    )
    zone = "$ORIGIN hidden.example.test.\n$TTL 60\n@ IN SOA ns h 1 60 60 60 60\n@ IN NS ns\nns IN A 127.0.0.1\n"
    (d / "pdns" / "hidden.example.test.zone").write_text(zone)
    (d / "knot" / "hidden.example.test.zone").write_text(zone)
    (d / "pdns" / "named.conf").write_text(
        f'zone "hidden.example.test" {{ type master; file "{d}/pdns/hidden.example.test.zone"; }};\n'
    )
    (d / "pdns" / "pdns.conf").write_text(
        f"""launch=bind
bind-config={d}/pdns/named.conf
local-address=127.0.0.7
local-port={port}
query-local-address=127.0.0.7
socket-dir={d}/pdns
daemon=no
guardian=no
disable-syslog=yes
security-poll-suffix=
primary=no
secondary=no
disable-axfr=yes
webserver=no
api=no
version-string=anonymous
server-id=disabled
distributor-threads=1
receiver-threads=1
"""
    )
    (d / "knot" / "knot.conf").write_text(
        f"""server:
    listen: 127.0.0.8@{port}
    rundir: "{d}/knot"
    version: ""
    identity: ""
    nsid: ""
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
log:
  - target: stderr
    any: warning
database:
    storage: "{d}/knot/db"
template:
  - id: default
    storage: "{d}/knot"
    file: "%s.zone"
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: hidden.example.test
"""
    )
    return {
        "Unbound": ("127.0.0.6", port, ["unbound", "-d", "-p", "-c", f"{d}/unbound/unbound.conf"]),
        "PowerDNS Authoritative Server": ("127.0.0.7", port, ["pdns_server", f"--config-dir={d}/pdns"]),
        "Knot DNS": ("127.0.0.8", port, ["knotd", "-c", f"{d}/knot/knot.conf"]),
    }


@pytest.fixture(scope="module")
def hidden_servers(lab: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[str, int]]]:
    """Unbound, PowerDNS and Knot with hidden versions on a free port of 127.0.0.6/7/8."""
    d = tmp_path_factory.mktemp("dns-hidden")
    port = max(_free_port(ip) for ip in ("127.0.0.6", "127.0.0.7", "127.0.0.8"))
    configs = _hidden_configs(d, port)
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[BinaryIO] = []
    try:
        for name, (_ip, _port, argv) in configs.items():
            log = (d / f"{name.split()[0].lower()}.log").open("wb")
            logs.append(log)
            procs.append(
                subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
            )
        for name, (ip, p, _argv) in configs.items():
            deadline = time.monotonic() + 15
            while True:
                try:
                    socket.create_connection((ip, p), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        pytest.fail(f"{name} did not listen on {ip}:{p}: see {d}")
                    time.sleep(0.1)
        yield {name: (ip, p) for name, (ip, p, _argv) in configs.items()}
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)  # its own session: PGID == PID
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        for log in logs:
            log.close()


@pytest.mark.parametrize("product, confidence", [("Unbound", 6), ("PowerDNS Authoritative Server", 6), ("Knot DNS", 5)])
def test_hidden_versions_by_behaviour(
    registry: Registry, hidden_servers: dict[str, tuple[str, int]], product: str, confidence: int
) -> None:
    ip, port = hidden_servers[product]
    results = scan_sync([ip], f"T:{port},U:{port}", registry=registry, probes=("dns",))
    for transport in ("udp", "tcp"):
        r = _by(results, port, transport)
        assert r.state == "open" and r.service == "dns", r
        assert (r.product, r.version, r.confidence) == (product, None, confidence)
        assert "version_string" not in r.details and "server_name" not in r.details
        assert all(e.source == "behaviour" for e in r.evidence)
        if product == "Unbound":
            # the PTR was refused, so the built-in zone came from the special-use query
            assert r.details["builtin_local_zones"] == ["invalid"]


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
